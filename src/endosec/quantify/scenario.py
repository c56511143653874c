"""What a simulation runs: the deployment, the attacker, the defence, and what it reports."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from endosec.core.model import Profile
from endosec.core.rotation_policy import Decider
from endosec.quantify.errors import ParameterError, check_k, check_rate
from endosec.quantify.stats import mean_ci, wilson_ci

__all__ = [
    "ATTACKERS",
    "Attacker",
    "Progress",
    "Scenario",
    "SimulationResult",
    "summarise",
    "synthetic_profiles",
]

Attacker = Literal["parallel", "sequential", "shared-component", "recon"]
ATTACKERS: tuple[Attacker, ...] = ("parallel", "sequential", "shared-component", "recon")
Progress = Callable[[int], None]
"""Called with the number of trials that just finished."""


def synthetic_profiles(count: int, shared: int) -> tuple[Profile, ...]:
    """``count`` executors with one private component each; the first ``shared`` also hold one
    common component (think: the same operating system)."""
    if not 0 <= shared <= count:
        raise ParameterError(f"shared must be between 0 and {count}, got {shared}")
    return tuple(
        Profile(f"e{i}", frozenset({f"own:e{i}"} | ({"common"} if i < shared else set())))
        for i in range(count)
    )


@dataclass(frozen=True, slots=True)
class Scenario:
    """An attacker against n active executors, of which k compromised ones defeat the vote.

    Defence: ``mu`` is the rate at which an out-of-band detector flags each compromised active
    executor, which is then cleansed; ``dissent`` is the rate at which each compromised active
    executor gives itself away by a dissenting output, which the controller punishes after
    ``quarantine_after`` dissents within ``dissent_window``; ``rotate`` rotates one active
    executor out (and cleanses it) every ``rotate`` time units; with ``rotate_min`` the
    rotation is threat-aware (faithful engine): dissent raises the threat level of
    `endosec.core.threat` (``threat_half_life``, ``threat_scale``) and the mean wait falls
    towards ``rotate_min`` as in a gateway. The ``recon`` attacker compromises (at rate
    ``lam``) only voters that have been on duty ``recon`` seconds without a rotation: it needs
    that long to study one before its exploit works; ``rotation`` is a learned policy deciding
    when and whom to rotate within the same budget. ``profiles`` is the pool (the
    faithful engine lets the scheduler pick n of them; the vectorised engine needs exactly n and
    keeps them); without profiles the pool is n+1 executors with nothing in common.
    """

    n: int
    lam: float
    k: int | None = None
    mu: float = 0.0
    rotate: float | None = None
    attacker: Attacker = "parallel"
    profiles: tuple[Profile, ...] = ()
    policy: str = "random"
    dissent: float = 0.0
    quarantine_after: int = 1
    dissent_window: float = 60.0
    rotate_min: float | None = None  # threat-aware: the mean under full threat (faithful only)
    threat_half_life: float = 120.0
    threat_scale: float = 10.0
    recon: float = 0.0  # the recon attacker: seconds on duty before an exploit works on one
    isolate_at: float | None = 0.5  # suspicion isolating a component (faithful; None: never)
    rotation: Decider | None = None  # a learned rotation policy (faithful only)

    def __post_init__(self) -> None:
        object.__setattr__(self, "k", check_k(self.n, self.k))
        check_rate("lam", self.lam, positive=True)
        check_rate("mu", self.mu)
        check_rate("dissent", self.dissent)
        check_rate("dissent_window", self.dissent_window, positive=True)
        if self.quarantine_after < 1:
            raise ParameterError(f"quarantine_after must be at least 1, got "
                                 f"{self.quarantine_after}")
        if self.rotate is not None:
            check_rate("rotate", self.rotate, positive=True)
        if self.rotate_min is not None:
            check_rate("rotate_min", self.rotate_min, positive=True)
            if self.rotate is None or self.rotate_min > self.rotate:
                raise ParameterError("rotate_min needs rotate, and cannot exceed it")
        check_rate("threat_half_life", self.threat_half_life, positive=True)
        check_rate("recon", self.recon)
        if self.attacker == "recon" and self.recon <= 0:
            raise ParameterError("the recon attacker needs recon > 0 (seconds on duty before "
                                 "an exploit works)")
        if self.rotation is not None and self.rotate is None:
            raise ParameterError("a rotation policy needs rotate (its budget: one rotation "
                                 "per rotate, on average)")
        check_rate("threat_scale", self.threat_scale, positive=True)
        if self.attacker not in ATTACKERS:
            raise ParameterError(f"attacker must be one of {', '.join(ATTACKERS)}")
        if self.profiles and len(self.profiles) < self.n:
            raise ParameterError(f"the pool has {len(self.profiles)} executors, fewer than n")
        if self.attacker == "shared-component":
            if not self.profiles:
                raise ParameterError("the shared-component attacker needs executor profiles")
            for p in self.profiles:
                if not p.components:
                    raise ParameterError(f"executor {p.name} has no components to attack")

    def pool(self) -> tuple[Profile, ...]:
        """The executors the scheduler may choose from."""
        return self.profiles or synthetic_profiles(self.n + 1, 0)

    @property
    def quorum(self) -> int:
        """k, resolved (never None after construction)."""
        assert self.k is not None
        return self.k


@dataclass(frozen=True, slots=True)
class SimulationResult:
    engine: str
    scenario: Scenario
    trials: int
    seed: int | None
    mttsf: float
    ci: tuple[float, float]
    t: float | None
    p_defeat_by_t: float | None
    p_defeat_by_t_ci: tuple[float, float] | None
    times: npt.NDArray[np.float64]
    rotations_per_hour: float | None = None  # (the faithful engine counts them)

    @property
    def stderr(self) -> float:
        return float(self.times.std(ddof=1) / math.sqrt(self.trials)) if self.trials > 1 else 0.0

    def as_dict(self) -> dict[str, object]:
        sc = self.scenario
        out: dict[str, object] = {
            "engine": self.engine, "attacker": sc.attacker, "policy": sc.policy,
            "n": sc.n, "k": sc.k, "lam": sc.lam, "mu": sc.mu, "rotate": sc.rotate,
            "dissent": sc.dissent, "quarantine_after": sc.quarantine_after,
            **({"rotate_min": sc.rotate_min, "threat_half_life": sc.threat_half_life,
                "threat_scale": sc.threat_scale} if sc.rotate_min is not None else {}),
            "trials": self.trials, "seed": self.seed,
            "mttsf": self.mttsf, "ci": list(self.ci),
        }
        if sc.attacker == "recon":
            out["recon"] = sc.recon
        if sc.rotation is not None:
            out["rotation_policy"] = "learned"
        if self.rotations_per_hour is not None:
            out["rotations_per_hour"] = round(self.rotations_per_hour, 3)
        if self.t is not None:
            out["t"] = self.t
            out["p_defeat_by_t"] = self.p_defeat_by_t
            out["p_defeat_by_t_ci"] = list(self.p_defeat_by_t_ci or ())
        return out


def summarise(engine: str, scenario: Scenario, times: Sequence[float] | npt.NDArray[np.float64],
              seed: int | None, t: float | None, *,
              rotations_per_hour: float | None = None) -> SimulationResult:
    """Turn the absorption times of every trial into estimates with 95% intervals."""
    arr = np.asarray(times, dtype=np.float64)
    trials = int(arr.size)
    mean = float(arr.mean())
    std = float(arr.std(ddof=1)) if trials > 1 else math.inf
    p_t = ci_t = None
    if t is not None:
        hits = int((arr <= t).sum())
        p_t, ci_t = hits / trials, wilson_ci(hits, trials)
    return SimulationResult(engine, scenario, trials, seed, mean, mean_ci(mean, std, trials),
                            t, p_t, ci_t, arr, rotations_per_hour)
