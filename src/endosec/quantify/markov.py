"""The dynamic model: a birth-death Markov chain on the number of compromised executors.

State i counts compromised active executors. The attacker moves i to i+1 at rate (n-i)λ
(parallel: every clean executor is attacked at once) or λ (sequential: one at a time); detection
and cleansing move i to i-1 at rate iμ; i = k is absorbing (the vote is lost).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.linalg import expm

from endosec.quantify.errors import ParameterError, check_k, check_rate

__all__ = ["MarkovResult", "effective_mu", "markov", "mttsf", "p_defeat_by", "transient_generator"]

FloatArray = npt.NDArray[np.float64]


def effective_mu(mu: float, rotate: float | None, n: int, rotate_count: int = 1) -> float:
    """Cleansing rate per executor when rotation of ``rotate_count`` every ``rotate`` adds to μ.

    Each active executor is rotated out (and cleansed) on average once every n·T/count, which the
    chain approximates as an extra exponential rate count/(n·T).
    """
    if rotate is None:
        return mu
    if rotate <= 0:
        raise ParameterError(f"rotate must be a period > 0, got {rotate}")
    return mu + rotate_count / (n * rotate)


def transient_generator(n: int, k: int, lam: float, mu: float, *,
                        sequential: bool = False) -> FloatArray:
    """The generator restricted to the transient states 0..k-1 (rows sum to minus the exit rate)."""
    q = np.zeros((k, k))
    for i in range(k):
        up = lam if sequential else (n - i) * lam
        down = i * mu
        if i + 1 < k:
            q[i, i + 1] = up
        if i > 0:
            q[i, i - 1] = down
        q[i, i] = -(up + down)
    return q


def mttsf(n: int, k: int, lam: float, mu: float, *, sequential: bool = False) -> float:
    """Mean time from no compromise to system compromise: solve Q_T·m = -1, read m[0]."""
    q = transient_generator(n, k, lam, mu, sequential=sequential)
    return float(np.linalg.solve(q, -np.ones(k))[0])


def p_defeat_by(n: int, k: int, lam: float, mu: float, t: float, *,
                sequential: bool = False) -> float:
    """P(absorbed by time t) = 1 - e0·exp(Q_T t)·1."""
    q = transient_generator(n, k, lam, mu, sequential=sequential)
    survive = float(expm(q * t)[0].sum())
    return min(1.0, max(0.0, 1.0 - survive))


@dataclass(frozen=True, slots=True)
class MarkovResult:
    n: int
    k: int
    lam: float
    mu: float
    sequential: bool
    mttsf: float
    t: float | None
    p_defeat_by_t: float | None

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "n": self.n, "k": self.k, "lam": self.lam, "mu": self.mu,
            "sequential": self.sequential, "mttsf": self.mttsf,
        }
        if self.t is not None:
            out["t"] = self.t
            out["p_defeat_by_t"] = self.p_defeat_by_t
        return out


def markov(n: int, lam: float, mu: float, *, k: int | None = None, t: float | None = None,
           sequential: bool = False, rotate: float | None = None) -> MarkovResult:
    """Validate the parameters and solve the chain; ``mu`` in the result includes rotation."""
    k = check_k(n, k)
    check_rate("lam", lam, positive=True)
    check_rate("mu", mu)
    if t is not None:
        check_rate("t", t)
    mu = effective_mu(mu, rotate, n)
    p_t = None if t is None else p_defeat_by(n, k, lam, mu, t, sequential=sequential)
    return MarkovResult(n, k, lam, mu, sequential, mttsf(n, k, lam, mu, sequential=sequential),
                        t, p_t)
