"""Incremental penetration: an attacker compromises executors one at a time while rotation runs.

Each episode starts clean. The attacker plants a dormant implant (a silent foothold: nothing an
arbiter can see) in a randomly chosen clean voter at exponentially distributed intervals (rate
``lam``, one at a time: the quantifier's "sequential" attacker); rotation retires and cleanses
voters, which wipes their footholds. An episode is lost when a majority of the voters hold a
foothold at the same moment, and ends at ``horizon`` seconds otherwise. The share of lost
episodes is set beside the quantifier's prediction for the same n, k, lam, rotation period and
horizon: the Markov chain and the faithful simulation over the real controller and scheduler.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Any

from endosec.core.model import Profile
from endosec.quantify.faithful import simulate_faithful
from endosec.quantify.markov import effective_mu, p_defeat_by
from endosec.quantify.scenario import Scenario
from endosec.quantify.stats import wilson_ci
from endosec.redteam.cases import Case
from endosec.redteam.deploy import implant_path
from endosec.redteam.drill import Drill

__all__ = ["IncrementalParams", "IncrementalResult", "run_incremental"]

_DORMANT = Case("foothold", "incremental", {"kind": "dormant"}, "a silent foothold")


@dataclass(frozen=True, slots=True)
class IncrementalParams:
    n: int
    k: int
    lam: float
    rotate_every: float
    horizon: float
    episodes: int
    policy: str


@dataclass(slots=True)
class IncrementalResult:
    params: IncrementalParams
    lost: int
    times: list[float]
    footholds: int
    markov: float
    faithful: float
    faithful_ci: tuple[float, float]

    def as_dict(self) -> dict[str, Any]:
        p = self.params
        low, high = wilson_ci(self.lost, p.episodes)
        return {
            "n": p.n, "k": p.k, "lam": p.lam, "rotate_every": p.rotate_every,
            "horizon": p.horizon, "episodes": p.episodes, "policy": p.policy,
            "majority_compromised": self.lost,
            "observed": self.lost / p.episodes if p.episodes else 0.0,
            "observed_ci": [low, high], "times_to_majority": [round(t, 2) for t in self.times],
            "footholds_planted": self.footholds,
            "predicted_markov": self.markov, "predicted_faithful": self.faithful,
            "predicted_faithful_ci": list(self.faithful_ci),
        }


def predict(params: IncrementalParams, profiles: list[Profile], seed: int
            ) -> tuple[float, float, tuple[float, float]]:
    """P(majority compromised by the horizon): Markov chain, then faithful simulation."""
    mu = effective_mu(0.0, params.rotate_every, params.n)
    chain = p_defeat_by(params.n, params.k, params.lam, mu, params.horizon, sequential=True)
    scenario = Scenario(n=params.n, lam=params.lam, k=params.k, rotate=params.rotate_every,
                        attacker="sequential", profiles=tuple(profiles), policy=params.policy)
    sim = simulate_faithful(scenario, trials=2000, seed=seed, t=params.horizon)
    return chain, sim.p_defeat_by_t or 0.0, sim.p_defeat_by_t_ci or (0.0, 1.0)


async def _episode(drill: Drill, params: IncrementalParams, names: list[str],
                   rng: random.Random) -> tuple[float | None, int]:
    """One episode; returns the time to a compromised majority (None: held) and footholds."""
    dep = drill.gw.dep
    start = time.monotonic()
    next_attack = start + rng.expovariate(params.lam)
    footholds = 0
    while (now := time.monotonic()) - start < params.horizon:
        drill.check_alive()
        status = await drill.gw.status()
        states = {e["name"]: e["state"] for e in status["executors"]}
        voters = [v for v in status["active"] if states.get(v) == "active"]
        bad = [v for v in voters if implant_path(dep, v).exists()]
        if len(bad) >= params.k:
            return now - start, footholds
        if now >= next_attack:
            clean = [v for v in voters if v not in bad]
            if clean:
                try:
                    drill.plant(_DORMANT, rng.choice(clean))
                    footholds += 1
                except OSError:
                    pass  # the scratch directory was being wiped: the attempt failed
            next_attack += rng.expovariate(params.lam)
        await asyncio.sleep(0.03)
    drill.clear(names)
    return None, footholds


async def run_incremental(drill: Drill, params: IncrementalParams, profiles: list[Profile],
                          *, seed: int) -> IncrementalResult:
    """Play the episodes against the running (rotating) gateway and predict the same."""
    rng = random.Random(seed)
    names = [e["name"] for e in (await drill.gw.status())["executors"]]
    lost, times, footholds = 0, [], 0
    for _ in range(params.episodes):
        drill.clear(names)
        await drill.settle_active()
        took, planted = await _episode(drill, params, names, rng)
        drill.clear(names)
        footholds += planted
        if took is not None:
            lost += 1
            times.append(took)
    chain, sim, ci = await asyncio.to_thread(predict, params, profiles, seed)
    return IncrementalResult(params, lost, times, footholds, chain, sim, ci)
