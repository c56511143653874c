"""The components model: executors are sets of components, and shared components are common mode.

Each component has an exploit probability and is exploited independently; an executor is
compromised when any of its components is. The system is defeated when at least k executors are.
Components held by the same set of executors merge into one; components private to one executor
merge into that executor's own probability. What remains to enumerate is the shared groups: exact
when there are few (2^groups cases), Monte Carlo with a confidence interval otherwise.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from endosec.core.model import Profile
from endosec.quantify.errors import ParameterError, check_k, check_probability
from endosec.quantify.stats import wilson_ci

__all__ = ["ComponentSystem", "ComponentsResult", "Contribution", "analyse"]

Method = Literal["exact", "monte-carlo"]
BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Contribution:
    """How much of the risk one shared component carries.

    ``contribution`` is P(defeat) minus P(defeat) were the component flawless: the risk removed
    by replacing it. ``share`` is that as a fraction of P(defeat).
    """

    component: str
    executors: tuple[str, ...]
    p: float
    p_defeat_if_exploited: float
    p_defeat_without: float
    contribution: float
    share: float

    def as_dict(self) -> dict[str, object]:
        return {
            "component": self.component, "executors": list(self.executors), "p": self.p,
            "p_defeat_if_exploited": self.p_defeat_if_exploited,
            "p_defeat_without": self.p_defeat_without,
            "contribution": self.contribution, "share": self.share,
        }


@dataclass(frozen=True, slots=True)
class ComponentsResult:
    executors: tuple[str, ...]
    k: int
    p_defeat: float
    method: Method
    ci: tuple[float, float] | None
    trials: int | None
    contributions: tuple[Contribution, ...]

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "n": len(self.executors), "k": self.k, "executors": list(self.executors),
            "p_defeat": self.p_defeat, "method": self.method,
        }
        if self.ci is not None:
            out["ci"] = list(self.ci)
            out["trials"] = self.trials
        out["contributions"] = [c.as_dict() for c in self.contributions]
        return out


@dataclass(slots=True)
class ComponentSystem:
    """Executors, their components and each component's exploit probability."""

    profiles: Sequence[Profile]
    probabilities: Mapping[str, float] = field(default_factory=dict)
    default_p: float = 0.01
    components: tuple[str, ...] = field(init=False)
    p: FloatArray = field(init=False)
    incidence: BoolArray = field(init=False)  # components x executors

    def __post_init__(self) -> None:
        if not self.profiles:
            raise ParameterError("executors: at least one executor is needed")
        names = [pr.name for pr in self.profiles]
        if len(set(names)) != len(names):
            raise ParameterError("executors: names must be unique")
        check_probability("default p", self.default_p)
        for name, value in self.probabilities.items():
            check_probability(f"p of component {name}", value)
        self.components = tuple(sorted(set().union(*(pr.components for pr in self.profiles))))
        self.p = np.array([self.probabilities.get(c, self.default_p) for c in self.components])
        self.incidence = np.array(
            [[c in pr.components for pr in self.profiles] for c in self.components], dtype=bool
        ).reshape(len(self.components), len(self.profiles))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(pr.name for pr in self.profiles)

    def shared(self) -> list[int]:
        """Indices of components held by two or more executors."""
        return [i for i in range(len(self.components)) if self.incidence[i].sum() >= 2]

    def _groups(self, p: FloatArray) -> tuple[FloatArray, FloatArray, BoolArray]:
        """Merge components by holder set: (private q per executor, group p, group incidence)."""
        n = len(self.profiles)
        private_clean = np.ones(n)
        merged: dict[bytes, tuple[float, BoolArray]] = {}
        for i, holders in enumerate(self.incidence):
            if p[i] == 0.0 or not holders.any():
                continue
            if holders.sum() == 1:
                private_clean[holders] *= 1.0 - p[i]
                continue
            key = holders.tobytes()
            clean = merged[key][0] if key in merged else 1.0
            merged[key] = (clean * (1.0 - p[i]), holders)
        group_p = np.array([1.0 - clean for clean, _ in merged.values()])
        group_inc = np.array([h for _, h in merged.values()], dtype=bool).reshape(len(merged), n)
        return 1.0 - private_clean, group_p, group_inc

    def exact(self, k: int, p: FloatArray | None = None, limit: int = 16) -> float:
        """P(at least k compromised), enumerating the shared groups (at most ``limit`` of them)."""
        q, group_p, group_inc = self._groups(self.p if p is None else p)
        s = len(group_p)
        if s > limit:
            raise ParameterError(f"{s} shared component groups exceed the exact limit {limit}")
        cases = np.arange(1 << s)[:, None]
        bits = ((cases >> np.arange(s)) & 1).astype(bool)
        weight = np.prod(np.where(bits, group_p, 1.0 - group_p), axis=1)
        hit = (bits.astype(np.int64) @ group_inc.astype(np.int64)) > 0
        prob = np.where(hit, 1.0, q)  # per case, per executor
        n = len(self.profiles)
        dist = np.zeros((1 << s, n + 1))
        dist[:, 0] = 1.0
        for e in range(n):  # Poisson-binomial by dynamic programming, all cases at once
            pe = prob[:, e : e + 1]
            dist[:, 1:] = dist[:, 1:] * (1.0 - pe) + dist[:, :-1] * pe
            dist[:, :1] *= 1.0 - pe
        return float(min(1.0, np.sum(weight * dist[:, k:].sum(axis=1))))

    def group_count(self) -> int:
        return len(self._groups(self.p)[1])

    def sample(self, trials: int, rng: np.random.Generator) -> BoolArray:
        """Which components are exploited, one row per trial."""
        return rng.random((trials, len(self.components))) < self.p

    def defeated(self, exploited: BoolArray, k: int) -> BoolArray:
        hit = (exploited.astype(np.float32) @ self.incidence.astype(np.float32)) > 0.5
        return np.asarray(hit.sum(axis=1) >= k)


def _contribution(system: ComponentSystem, c: int, total: float, given: float,
                  without: float) -> Contribution:
    holders = tuple(n for n, h in zip(system.names, system.incidence[c], strict=True) if h)
    gain = total - without
    return Contribution(system.components[c], holders, float(system.p[c]), given, without, gain,
                        gain / total if total > 0 else 0.0)


def _rank(contributions: list[Contribution]) -> tuple[Contribution, ...]:
    return tuple(sorted(contributions, key=lambda c: (-c.contribution, c.component)))


def analyse(system: ComponentSystem, *, k: int | None = None, method: Method | None = None,
            trials: int = 100_000, seed: int | None = None, exact_limit: int = 16,
            chunk: int = 50_000) -> ComponentsResult:
    """P(defeat) and each shared component's contribution, exactly when the enumeration is small."""
    n = len(system.profiles)
    k = check_k(n, k)
    if trials < 1:
        raise ParameterError(f"trials must be at least 1, got {trials}")
    chosen: Method = method or ("exact" if system.group_count() <= exact_limit else "monte-carlo")
    shared = system.shared()
    if chosen == "exact":
        total = system.exact(k, limit=exact_limit)
        contributions = []
        for c in shared:
            p = system.p.copy()
            p[c] = 1.0
            given = system.exact(k, p, exact_limit)
            p[c] = 0.0
            contributions.append(_contribution(system, c, total, given,
                                               system.exact(k, p, exact_limit)))
        return ComponentsResult(system.names, k, total, "exact", None, None, _rank(contributions))
    rng = np.random.default_rng(seed if seed is not None else random.SystemRandom().getrandbits(64))
    wins = 0
    given_wins = np.zeros(len(shared), dtype=np.int64)
    without_wins = np.zeros(len(shared), dtype=np.int64)
    for start in range(0, trials, chunk):
        exploited = system.sample(min(chunk, trials - start), rng)
        wins += int(system.defeated(exploited, k).sum())
        for j, c in enumerate(shared):  # common random numbers: force the column either way
            column = exploited[:, c].copy()
            exploited[:, c] = True
            given_wins[j] += int(system.defeated(exploited, k).sum())
            exploited[:, c] = False
            without_wins[j] += int(system.defeated(exploited, k).sum())
            exploited[:, c] = column
    total = wins / trials
    contributions = [
        _contribution(system, c, total, given_wins[j] / trials, without_wins[j] / trials)
        for j, c in enumerate(shared)
    ]
    return ComponentsResult(system.names, k, total, "monte-carlo", wilson_ci(wins, trials), trials,
                            _rank(contributions))
