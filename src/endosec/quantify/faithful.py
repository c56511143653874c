"""The faithful engine: the attacker plays against the real controller and scheduler objects.

The core is sans-I/O, so the simulation owns the clock and the randomness: it feeds the
`Controller` the events a gateway would (verdicts naming a dissenter, detector reports, ticks,
completed actions) and carries out its actions at once (cleansing and activation take no time).
Whatever policy the scheduler implements, including future learned ones, decides which
executors vote, which ones a rotation retires, and so what the attacker faces.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

from endosec.core.controller import Controller, ControllerPolicy
from endosec.core.controller_events import (
    Action,
    ActionDone,
    Activate,
    AdminRequest,
    Cleanse,
    Deactivate,
    Event,
    RequestWakeup,
    ThreatChanged,
    Tick,
    VerdictReached,
)
from endosec.core.model import Outcome, Profile, Verdict
from endosec.core.scheduler import scheduler_from_config
from endosec.core.threat import THREAT_STEP, Threat, ThreatPolicy
from endosec.core.trust import PointRules, TrustBook
from endosec.quantify.errors import ParameterError, check_rate
from endosec.quantify.scenario import Progress, Scenario, SimulationResult, summarise
from endosec.quantify.stats import wilson_ci

__all__ = ["Horizon", "defeat_by", "simulate_faithful"]


class _Trial:
    """One attack, from a fresh controller until k voters are compromised."""

    def __init__(self, sc: Scenario, pool: tuple[Profile, ...], rng: random.Random) -> None:
        self.sc, self.rng = sc, rng
        self.profiles = {p.name: p for p in pool}
        policy = ControllerPolicy(
            active_size=sc.n, floor=sc.quorum, quarantine_after=sc.quarantine_after,
            dissent_window=sc.dissent_window, rotate_every=sc.rotate, rotate_min=sc.rotate_min,
            rotation=sc.rotation, isolate_at=sc.isolate_at)
        # Threat-aware: the gateway's threat level, fed and read as the gateway does.
        self.threat = Threat(ThreatPolicy(sc.threat_half_life, sc.threat_scale)) \
            if sc.rotate_min is not None else None
        self.threat_sent = 0.0
        try:
            scheduler = scheduler_from_config(sc.policy)
        except ValueError as exc:
            raise ParameterError(str(exc)) from None
        names = [p.name for p in pool]
        # No honest traffic is simulated, only attacks: in a gateway, the agreements on it earn
        # back what a dissent costs long before four dissents could put an executor on
        # probation. Here nothing could earn them back, so dissent costs no points.
        self.controller = Controller(pool, policy, scheduler,
                                     TrustBook(names, rules=PointRules(penalty=0.0)), rng)
        self.compromised: set[str] = set()
        self.rotations = 0
        self.wakeups: list[float] = []
        self.now = 0.0
        self._carry_out(self.controller.start(0.0))

    def _carry_out(self, actions: list[Action]) -> None:
        """Play the runtime: every order succeeds at once; cleansing removes the foothold."""
        queue: deque[Action] = deque(actions)
        while queue:
            action = queue.popleft()
            if isinstance(action, Cleanse):
                self.compromised.discard(action.executor)
            elif isinstance(action, Deactivate):
                self.rotations += 1
            if isinstance(action, Cleanse | Activate):
                queue.extend(self.controller.handle(ActionDone(action, True, self.now)))
            elif isinstance(action, RequestWakeup):
                heapq.heappush(self.wakeups, action.at)

    def _feed(self, event: Event) -> None:
        self._carry_out(self.controller.handle(event))
        if self.threat is not None:
            if isinstance(event, VerdictReached):
                self.threat.signal("dissent", self.now, len(event.verdict.dissented))
            level = min(1.0, self.threat.level(self.now))
            if abs(level - self.threat_sent) >= THREAT_STEP or level < 0.01 < self.threat_sent:
                self.threat_sent = level
                self._carry_out(self.controller.handle(ThreatChanged(level, self.now)))

    def _attack(self, clean: list[str]) -> None:
        if self.sc.attacker == "recon":
            since = self.controller.serving_since
            ready = [v for v in clean if since[v] + self.sc.recon <= self.now]
            self.compromised.add(self.rng.choice(ready))
            return
        if self.sc.attacker != "shared-component":
            self.compromised.add(self.rng.choice(clean))
            return
        held = Counter(c for name in clean for c in self.profiles[name].components)
        best = max(held.values())
        target = self.rng.choice(sorted(c for c, count in held.items() if count == best))
        self.compromised.update(n for n in clean if target in self.profiles[n].components)

    def _dissent(self, name: str, voters: tuple[str, ...]) -> VerdictReached:
        agreed = tuple(v for v in voters if v != name)
        verdict = Verdict(Outcome.ACCEPTED, None, agreed, (name,), (), "simulated dissent")
        return VerdictReached(verdict, self.now)

    def _attack_rate(self, clean: list[str]) -> tuple[float, float]:
        """The attacker's rate now, and when it next changes by itself (the recon attacker:
        when a clean voter has been on duty long enough)."""
        sc = self.sc
        if sc.attacker != "recon":
            return sc.lam * (len(clean) if sc.attacker == "parallel" else 1) \
                if clean else 0.0, math.inf
        since = self.controller.serving_since
        ready = sum(since[v] + sc.recon <= self.now for v in clean)
        later = [since[v] + sc.recon for v in clean if since[v] + sc.recon > self.now]
        return sc.lam * ready, min(later, default=math.inf)

    def run(self, max_events: int, end: float = math.inf) -> float:
        """Play until the vote is lost (the time) or ``end`` (inf: it held)."""
        sc = self.sc
        for _ in range(max_events):
            voters = self.controller.voters
            bad = [v for v in voters if v in self.compromised]
            if len(bad) >= sc.quorum:
                return self.now
            clean = [v for v in voters if v not in self.compromised]
            attack, changes = self._attack_rate(clean)
            detect, dissent = sc.mu * len(bad), sc.dissent * len(bad)
            total = attack + detect + dissent
            step = self.rng.expovariate(total) if total > 0 else float("inf")
            timer = min(self.wakeups[0] if self.wakeups else math.inf, changes)
            if min(timer, self.now + step) >= end:
                self.now = end
                return math.inf
            if timer <= self.now + step:  # a timer first; the other clocks are memoryless
                self.now = timer
                if self.wakeups and self.wakeups[0] == timer:
                    heapq.heappop(self.wakeups)
                    self._feed(Tick(self.now))
                continue
            if step == float("inf"):
                break
            self.now += step
            pick = self.rng.random() * total
            if pick < attack:
                self._attack(clean)
            elif pick < attack + detect:
                self._feed(AdminRequest("cleanse", self.rng.choice(bad), self.now))
            else:
                self._feed(self._dissent(self.rng.choice(bad), voters))
        raise ParameterError(f"a trial did not finish within {max_events} events: the defence "
                             "holds longer than can be simulated (lower mu, raise lam, or "
                             "compare P(defeat by t) with train-scheduler)")


def simulate_faithful(sc: Scenario, *, trials: int = 2_000, seed: int | None = None,
                      t: float | None = None, progress: Progress | None = None,
                      max_events: int = 1_000_000) -> SimulationResult:
    """Monte Carlo on the real controller and scheduler, one trial at a time."""
    if trials < 2:
        raise ParameterError(f"trials must be at least 2, got {trials}")
    pool = sc.pool()
    rng = random.Random(seed)
    times = []
    rotations = 0
    for _ in range(trials):
        trial = _Trial(sc, pool, rng)
        times.append(trial.run(max_events))
        rotations += trial.rotations
        if progress is not None:
            progress(1)
    spent = sum(times)
    return summarise("faithful", sc, times, seed, t,
                     rotations_per_hour=3600 * rotations / spent if spent > 0 else None)


@dataclass(frozen=True, slots=True)
class Horizon:
    """Trials played to the horizon ``t`` (or defeat): how many were lost, and how often the
    controller rotated."""

    lost: int
    trials: int
    rotations_per_hour: float

    @property
    def p_defeat(self) -> float:
        return self.lost / self.trials

    @property
    def ci(self) -> tuple[float, float]:
        return wilson_ci(self.lost, self.trials)


def defeat_by(sc: Scenario, t: float, *, trials: int, seed: int | None,
              on_trial: Callable[[bool], None] | None = None,
              max_events: int = 1_000_000) -> Horizon:
    """Play ``trials`` attacks to the horizon ``t``; ``on_trial(lost)`` after each (the
    learner's reward)."""
    if trials < 1:
        raise ParameterError(f"trials must be at least 1, got {trials}")
    check_rate("t", t, positive=True)
    pool, rng = sc.pool(), random.Random(seed)
    lost = rotations = 0
    elapsed = 0.0
    for _ in range(trials):
        trial = _Trial(sc, pool, rng)
        took = trial.run(max_events, end=t)
        lost += took != math.inf
        elapsed += min(took, t)
        rotations += trial.rotations
        if on_trial is not None:
            on_trial(took != math.inf)
    return Horizon(lost, trials, 3600 * rotations / elapsed if elapsed > 0 else 0.0)
