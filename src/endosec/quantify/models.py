"""Static voting models: how likely k of n executors are compromised at the same time.

Three views of the dependence between executors (formulas in docs/quantify.md):
independent (binomial), common-cause beta-factor, and intra-class correlation (beta-binomial).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from endosec.quantify.errors import ParameterError, check_k, check_probability

__all__ = [
    "VoteResult",
    "binomial_tail",
    "p_defeat_beta_factor",
    "p_defeat_correlated",
    "p_defeat_independent",
    "vote",
]

VoteModel = Literal["independent", "beta-factor", "correlated"]


def binomial_tail(n: int, k: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    return math.fsum(math.comb(n, j) * p**j * (1.0 - p) ** (n - j) for j in range(k, n + 1))


def p_defeat_independent(n: int, k: int, p: float) -> float:
    """Executors fail independently, each with probability ``p``."""
    return binomial_tail(n, k, p)


def p_defeat_beta_factor(n: int, k: int, p: float, beta: float) -> float:
    """A fraction ``beta`` of each executor's risk is one flaw common to all of them."""
    common = beta * p
    return common + (1.0 - common) * binomial_tail(n, k, (1.0 - beta) * p)


def _log_rising(a: float, step: float, count: int) -> float | None:
    """log of prod_{i<count} (a + i*step), or None when the product is zero."""
    total = 0.0
    for i in range(count):
        term = a + i * step
        if term <= 0.0:
            return None
        total += math.log(term)
    return total


def p_defeat_correlated(n: int, k: int, p: float, rho: float) -> float:
    """Beta-binomial with mean ``p`` and intra-class correlation ``rho``.

    Uses the rising-product form of the beta-binomial pmf, which stays finite at the edges
    (rho = 0 is the binomial, p in {0, 1} is degenerate); rho = 1 means all or nothing.
    """
    if rho >= 1.0:
        return p
    a, b, scale = p * (1.0 - rho), (1.0 - p) * (1.0 - rho), 1.0 - rho
    log_den = _log_rising(scale, rho, n)
    assert log_den is not None  # scale > 0 when rho < 1
    terms = []
    for j in range(k, n + 1):
        up, down = _log_rising(a, rho, j), _log_rising(b, rho, n - j)
        if up is not None and down is not None:
            terms.append(math.exp(math.log(math.comb(n, j)) + up + down - log_den))
    return min(1.0, math.fsum(terms))


@dataclass(frozen=True, slots=True)
class VoteResult:
    """One answer of the static voting model, ready for JSON."""

    model: VoteModel
    n: int
    k: int
    p: float
    beta: float | None
    rho: float | None
    p_defeat: float

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"model": self.model, "n": self.n, "k": self.k, "p": self.p}
        if self.beta is not None:
            out["beta"] = self.beta
        if self.rho is not None:
            out["rho"] = self.rho
        out["p_defeat"] = self.p_defeat
        return out


def vote(n: int, p: float, *, k: int | None = None, beta: float | None = None,
         rho: float | None = None) -> VoteResult:
    """Validate the parameters and pick the model: beta-factor, correlated or independent."""
    k = check_k(n, k)
    check_probability("p", p)
    if beta is not None and rho is not None:
        raise ParameterError("give at most one of beta and rho")
    if beta is not None:
        check_probability("beta", beta)
        return VoteResult("beta-factor", n, k, p, beta, None, p_defeat_beta_factor(n, k, p, beta))
    if rho is not None:
        check_probability("rho", rho)
        return VoteResult("correlated", n, k, p, None, rho, p_defeat_correlated(n, k, p, rho))
    return VoteResult("independent", n, k, p, None, None, p_defeat_independent(n, k, p))
