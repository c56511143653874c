"""Incremental penetration: an attacker compromises executors one at a time while rotation runs.

Each episode starts clean. The attacker plants a dormant implant (a silent foothold: nothing an
arbiter can see) in a randomly chosen clean voter at exponentially distributed intervals (rate
``lam``, one at a time: the quantifier's "sequential" attacker); rotation retires and cleanses
voters, which wipes their footholds. An episode is lost when a majority of the voters hold a
foothold at the same moment, and ends at ``horizon`` seconds otherwise. The share of lost
episodes is set beside the quantifier's prediction for the same n, k, lam, rotation period and
horizon: the Markov chain and the faithful simulation over the real controller and scheduler.

With ``dissent``, footholds are noisy: at that rate (while any voter holds one) the attacker
sends a request that every foothold answers with a wrong status, so each dissents, as the
simulator's compromised voters do at ``dissent`` each. Dissent raises the threat level and
threat-aware rotation (``rotate_min``) speeds up; ``quarantine_after`` is set out of reach so
that rotation alone removes footholds, in the gateway and in the simulation alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from dataclasses import dataclass
from typing import Any

from endosec.core.model import Profile
from endosec.quantify.faithful import simulate_faithful
from endosec.quantify.markov import effective_mu, p_defeat_by
from endosec.quantify.scenario import Scenario
from endosec.quantify.stats import wilson_ci
from endosec.redteam.cases import TRIGGER, Case
from endosec.redteam.client import Client, ClientError
from endosec.redteam.deploy import implant_path
from endosec.redteam.drill import Drill

__all__ = ["IncrementalParams", "IncrementalResult", "run_incremental"]

_DORMANT = Case("foothold", "incremental", {"kind": "dormant"}, "a silent foothold")
_NOISY = Case("noisy-foothold", "incremental",
              {"kind": "alter-status", "status": 418, "trigger": TRIGGER},
              "a foothold that answers a triggering request wrongly", probe="any", trigger=True)


@dataclass(frozen=True, slots=True)
class IncrementalParams:
    n: int
    k: int
    lam: float
    rotate_every: float
    horizon: float
    episodes: int
    policy: str
    dissent: float = 0.0  # per second, while a voter holds a foothold (0: dormant footholds)
    rotate_min: float | None = None  # threat-aware rotation's mean under full threat
    threat_half_life: float = 120.0
    threat_scale: float = 10.0
    quarantine_after: int = 1


@dataclass(slots=True)
class IncrementalResult:
    params: IncrementalParams
    lost: int
    times: list[float]
    footholds: int
    markov: float
    faithful: float
    faithful_ci: tuple[float, float]
    rotations: int = 0
    dissents: int = 0
    seconds: float = 0.0  # the episodes' time, each to its end

    def as_dict(self) -> dict[str, Any]:
        p = self.params
        low, high = wilson_ci(self.lost, p.episodes)
        return {
            "n": p.n, "k": p.k, "lam": p.lam, "rotate_every": p.rotate_every,
            "rotate_min": p.rotate_min, "dissent": p.dissent,
            "threat_half_life": p.threat_half_life, "threat_scale": p.threat_scale,
            "horizon": p.horizon, "episodes": p.episodes, "policy": p.policy,
            "majority_compromised": self.lost,
            "observed": self.lost / p.episodes if p.episodes else 0.0,
            "observed_ci": [low, high], "times_to_majority": [round(t, 2) for t in self.times],
            "footholds_planted": self.footholds,
            "predicted_markov": self.markov, "predicted_faithful": self.faithful,
            "predicted_faithful_ci": list(self.faithful_ci),
            "agrees": low <= self.faithful <= high,
            "rotations_per_second": round(self.rotations / self.seconds, 3)
            if self.seconds else 0.0,
            "dissents_sent": self.dissents,
        }


def predict(params: IncrementalParams, profiles: list[Profile], seed: int
            ) -> tuple[float, float, tuple[float, float]]:
    """P(majority compromised by the horizon): Markov chain (at the calm rotation rate), then
    faithful simulation (threat-aware when ``rotate_min`` is set). Components are not isolated
    in either: the lab's gateway keeps suspicion across episodes, a trial starts afresh."""
    p = params
    mu = effective_mu(0.0, p.rotate_every, p.n)
    chain = p_defeat_by(p.n, p.k, p.lam, mu, p.horizon, sequential=True)
    scenario = Scenario(n=p.n, lam=p.lam, k=p.k, rotate=p.rotate_every, attacker="sequential",
                        profiles=tuple(profiles), policy=p.policy, dissent=p.dissent,
                        quarantine_after=p.quarantine_after, rotate_min=p.rotate_min,
                        threat_half_life=p.threat_half_life, threat_scale=p.threat_scale,
                        isolate_at=None)
    sim = simulate_faithful(scenario, trials=2000, seed=seed, t=params.horizon)
    return chain, sim.p_defeat_by_t or 0.0, sim.p_defeat_by_t_ci or (0.0, 1.0)


async def _episode(drill: Drill, params: IncrementalParams, names: list[str],
                   rng: random.Random) -> tuple[float | None, int, int]:
    """One episode; returns the time to a compromised majority (None: held), footholds
    planted and dissent-provoking requests sent."""
    dep = drill.gw.dep
    case = _NOISY if params.dissent > 0 else _DORMANT
    start = time.monotonic()
    next_attack = start + rng.expovariate(params.lam)
    next_dissent = start + rng.expovariate(params.dissent) if params.dissent > 0 else math.inf
    footholds = provoked = 0
    client = Client(*drill.gw.serve, timeout=drill.client_timeout, source=drill.source)
    try:
        while (now := time.monotonic()) - start < params.horizon:
            drill.check_alive()
            status = await drill.gw.status()
            states = {e["name"]: e["state"] for e in status["executors"]}
            voters = [v for v in status["active"] if states.get(v) == "active"]
            bad = [v for v in voters if implant_path(dep, v).exists()]
            if len(bad) >= params.k:
                return now - start, footholds, provoked
            if now >= next_attack:
                clean = [v for v in voters if v not in bad]
                if clean:
                    try:
                        drill.plant(case, rng.choice(clean))
                        footholds += 1
                    except OSError:
                        pass  # the scratch directory was being wiped: the attempt failed
                next_attack += rng.expovariate(params.lam)
            if now >= next_dissent:
                if bad:
                    with contextlib.suppress(ClientError):
                        await client.request(drill.attack_probe(case).call)
                    provoked += 1
                next_dissent += rng.expovariate(params.dissent)
            await asyncio.sleep(0.03)
    finally:
        client.close()
    drill.clear(names)
    return None, footholds, provoked


async def run_incremental(drill: Drill, params: IncrementalParams, profiles: list[Profile],
                          *, seed: int) -> IncrementalResult:
    """Play the episodes against the running (rotating) gateway and predict the same."""
    rng = random.Random(seed)
    names = [e["name"] for e in (await drill.gw.status())["executors"]]
    lost, times, footholds, provoked, rotations, seconds = 0, [], 0, 0, 0, 0.0
    for _ in range(params.episodes):
        drill.clear(names)
        await drill.settle_active()
        before = len([e for e in drill.gw.events() if e.get("event") == "rotation"])
        took, planted, sent = await _episode(drill, params, names, rng)
        rotations += len([e for e in drill.gw.events() if e.get("event") == "rotation"]) - before
        drill.clear(names)
        footholds += planted
        provoked += sent
        seconds += params.horizon if took is None else took
        if took is not None:
            lost += 1
            times.append(took)
    chain, sim, ci = await asyncio.to_thread(predict, params, profiles, seed)
    return IncrementalResult(params, lost, times, footholds, chain, sim, ci, rotations, provoked,
                             seconds)
