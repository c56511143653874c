"""The negative-feedback controller: events in, actions out, no I/O.

The gateway feeds it what happened (`VerdictReached`, `ProbationResult`, `HealthReport`, `Tick`,
`ActionDone`, `AdminRequest`) and carries out what it returns (`Quarantine`, `Cleanse`,
`Activate`, `Deactivate`, `Alert`, `RequestWakeup`); both are defined in
`endosec.core.controller_events`. Before each fan-out it reads `voters` (the
ballot) and `shadows` (executors on probation, asked but not counted).

Every event is translated into per-executor `Signal`s, and every state change goes through the
single table `TRANSITIONS` (state x signal -> next state). A pair missing from the table is a
move the controller refuses: for example an operator cannot activate a QUARANTINED or CLEANSING
executor, because ``(QUARANTINED, ACTIVATE)`` is not there. The only way back to SPARE from
QUARANTINED is through CLEANSING, so an executor is never activated uncleansed.

Policies (see `ControllerPolicy`): quarantine after ``quarantine_after`` dissents within
``dissent_window`` seconds, but never below the floor for dissent alone: a dissenter whose
quarantine would leave fewer than ``floor`` voters keeps voting (outvoted) while a spare is
activated in its place, make-before-break, and is quarantined once the spare votes (at once
when the verdict says the dissent is a confirmed attack); cleanse at once, retrying failed
cleanses with exponential backoff, except when the runtime says another attempt would fail the
same way (``ActionDone.retry`` False): then the executor is held quarantined, with an alert,
until an operator cleanses it; optionally hold cleansed executors on probation; keep
``active_size`` executors active or activating, replacing from spares at once; rotate
``rotate_count`` executors at random times, exponentially distributed with mean
``rotate_every`` seconds (memoryless: when the last rotation was says nothing of the next),
make-before-break (the retiree leaves only when its replacement votes, so rotation never lowers
the number of voters); without a spare, a rotation cleanses a voter in place when the others
are at least the floor (a foothold does not outlast its turn on duty either way); while the
host's CPU utilisation is at ``defer_above`` or more, a due rotation waits, at most
``defer_max`` seconds (what dissent forces never waits); isolate the components a dissent
implicates (`endosec.core.suspicion`): at most one executor holding an isolated component votes,
the others rotate out to be cleansed and no spare holding it joins; raise
an `Alert` when spares run out and a critical one when fewer than ``floor`` executors remain
active or activating.

A runtime carries out the orders for one executor in the order given and answers each
`Activate` and `Cleanse` with ``ActionDone(action, ok, now)`` passing back the very action it
received: its ``seq`` tells a current order from a stale one (an activation cut short by a
quarantine, say), and stale completions are ignored.
"""

from __future__ import annotations

import math
import random
from collections import Counter, deque
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType
from typing import Final

from endosec.core.controller_events import (
    Action,
    ActionDone,
    Activate,
    AdminRequest,
    Alert,
    BehaviourObserved,
    Cleanse,
    Deactivate,
    Event,
    HealthReport,
    IdentityReport,
    Isolate,
    LoadChanged,
    MarkComponents,
    ProbationResult,
    Quarantine,
    Reconfigure,
    RequestWakeup,
    ThreatChanged,
    Tick,
    VerdictReached,
    check_time,
)
from endosec.core.model import ExecutorState, Profile
from endosec.core.rotation_policy import BUDGETS, Decider, RotationState
from endosec.core.scheduler import Scheduler
from endosec.core.suspicion import Suspicion, SuspicionPolicy, implicated
from endosec.core.threat import BANDS, CALM, band_of
from endosec.core.trust import Level, TrustBook

__all__ = ["COUNTERS", "RESUMED", "TRANSITIONS", "Controller", "ControllerPolicy", "Signal",
           "state_level"]

ACTIVE, ACTIVATING, SPARE = ExecutorState.ACTIVE, ExecutorState.ACTIVATING, ExecutorState.SPARE
QUARANTINED, CLEANSING = ExecutorState.QUARANTINED, ExecutorState.CLEANSING
PROBATION = ExecutorState.PROBATION


# -- the transition table --------------------------------------------------------------------


class Signal(Enum):
    """What an event means for one executor."""

    FAULT = "fault"  # dissent limit, unhealthy, failed activation or probation, operator
    CLEANSE = "cleanse"  # start restoring the pristine image
    CLEANSED = "cleansed"  # restored; back to the spares
    CLEANSED_ON_PROBATION = "cleansed-on-probation"  # restored; must agree before it may vote
    CLEANSE_FAILED = "cleanse-failed"  # still dirty: hold and retry later
    PROBATION_PASSED = "probation-passed"  # enough consecutive agreements while shadowing
    ACTIVATE = "activate"  # chosen to vote: bring its state up to date
    ACTIVATED = "activated"  # up to date: it votes from now on
    ROTATE_OUT = "rotate-out"  # its replacement votes; it leaves (a rotation, not a fault)


TRANSITIONS: Final[Mapping[tuple[ExecutorState, Signal], ExecutorState]] = MappingProxyType({
    (ACTIVE, Signal.FAULT): QUARANTINED,
    (ACTIVATING, Signal.FAULT): QUARANTINED,
    (SPARE, Signal.FAULT): QUARANTINED,
    (PROBATION, Signal.FAULT): QUARANTINED,
    (QUARANTINED, Signal.CLEANSE): CLEANSING,
    (SPARE, Signal.CLEANSE): CLEANSING,
    (CLEANSING, Signal.CLEANSED): SPARE,
    (CLEANSING, Signal.CLEANSED_ON_PROBATION): PROBATION,
    (CLEANSING, Signal.CLEANSE_FAILED): QUARANTINED,
    (PROBATION, Signal.PROBATION_PASSED): SPARE,
    (SPARE, Signal.ACTIVATE): ACTIVATING,
    (PROBATION, Signal.ACTIVATE): ACTIVATING,  # operator only: it is clean, just unproven
    (ACTIVATING, Signal.ACTIVATED): ACTIVE,
    (ACTIVE, Signal.ROTATE_OUT): SPARE,
})

#: The state a resuming controller gives each state its predecessor left: what was under way
#: (an activation, a cleanse) died with the order's sender, so it starts again from before it.
RESUMED: Final[Mapping[ExecutorState, ExecutorState]] = MappingProxyType({
    ACTIVE: ACTIVE, SPARE: SPARE, PROBATION: PROBATION, QUARANTINED: QUARANTINED,
    ACTIVATING: SPARE, CLEANSING: QUARANTINED})

#: The highest trust level each state allows (`Controller.level`).
_STATE_LEVEL: Final = MappingProxyType({QUARANTINED: Level.L0, CLEANSING: Level.L0,
                                        PROBATION: Level.L1})

def state_level(level: Level, state: ExecutorState) -> Level:
    """A trust level as an executor's state caps it."""
    return min(level, _STATE_LEVEL.get(state, Level.L3))


#: The per-executor counters kept for status pages, in display order.
COUNTERS: Final = ("dissents", "quarantines", "cleanses", "rotations", "activations")


@dataclass(frozen=True, slots=True)
class ControllerPolicy:
    """How the loop reacts. ``floor`` is the fewest voters a quorum-capable set needs."""

    active_size: int = 3
    floor: int = 2
    quarantine_after: int = 1
    dissent_window: float = 60.0
    probation_agreements: int = 0
    rotate_every: float | None = None  # mean seconds between rotations in calm (None: off)
    rotate_min: float | None = None  # the mean under full threat (None: rotate_every / 10)
    grow_under_threat: bool = False  # spares join the active set as the threat rises
    rotate_count: int = 1
    cleanse_on_rotate: bool = True
    failures_are_dissent: bool = True
    cleanse_retry: float = 1.0  # first wait after a failed cleanse; doubles per failure
    cleanse_retry_max: float = 60.0
    defer_above: float | None = 0.85  # CPU utilisation that defers rotations (None: never)
    defer_max: float = 60.0  # the longest a due rotation waits for the load to fall
    isolate_at: float | None = 0.5  # suspicion that isolates a component; a dissent adds 1
    # and it halves every suspicion_half_life (None: only the operator's marks isolate)
    suspicion_half_life: float = 3600.0
    # A learned policy decides when and whom to rotate, within a budget of one rotation per
    # rotate_every (None: exponential waits, the scheduler chooses whom).
    rotation: Decider | None = None

    def __post_init__(self) -> None:
        positive = {"active_size": self.active_size, "floor": self.floor,
                    "quarantine_after": self.quarantine_after, "rotate_count": self.rotate_count}
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value!r}")
        if self.floor > self.active_size:
            raise ValueError(f"floor ({self.floor}) cannot exceed active_size "
                             f"({self.active_size})")
        if self.probation_agreements < 0:
            raise ValueError(f"probation_agreements must be >= 0, got "
                             f"{self.probation_agreements!r}")
        seconds: dict[str, float] = {
            "dissent_window": self.dissent_window, "cleanse_retry": self.cleanse_retry,
            "cleanse_retry_max": self.cleanse_retry_max, "defer_max": self.defer_max,
            "suspicion_half_life": self.suspicion_half_life}
        if self.isolate_at is not None:
            seconds["isolate_at"] = self.isolate_at
        if self.rotation is not None and self.rotate_every is None:
            raise ValueError("a rotation policy needs rotate_every (its budget)")
        if self.defer_above is not None and not 0.0 < self.defer_above <= 1.0:
            raise ValueError(f"defer_above must be in (0, 1], got {self.defer_above!r}")
        if self.rotate_every is not None:
            seconds["rotate_every"] = self.rotate_every
        if self.rotate_min is not None:
            seconds["rotate_min"] = self.rotate_min
            if self.rotate_every is None or self.rotate_min > self.rotate_every:
                raise ValueError("rotate_min needs rotate_every, and cannot exceed it")
        for name, secs in seconds.items():
            if not (math.isfinite(secs) and secs > 0):
                raise ValueError(f"{name} must be a positive number, got {secs!r}")


class Controller:
    """The feedback loop over one pool of executors.

    **Parameters:**

    * **profiles** - the pool, in display order; names must be unique.
    * **policy** - how to react (`ControllerPolicy`).
    * **scheduler** - which spares join and which actives a rotation retires.
    * **trust** - the `TrustBook` this controller feeds (also read by a trust-weighted arbiter).
    * **rng** - the only source of randomness, handed to the scheduler.
    """

    def __init__(self, profiles: Sequence[Profile], policy: ControllerPolicy,
                 scheduler: Scheduler, trust: TrustBook, rng: random.Random) -> None:
        if not profiles:
            raise ValueError("profiles: the pool needs at least one executor")
        self._profiles = {p.name: p for p in profiles}
        if len(self._profiles) != len(profiles):
            raise ValueError("profiles: executor names must be unique")
        for name in self._profiles:
            trust.score(name)  # raises ValueError if the book does not know it
        self.policy = policy
        self._scheduler = scheduler
        self._trust = trust
        self._rng = rng
        self._state = dict.fromkeys(self._profiles, SPARE)
        self._states_view = MappingProxyType(self._state)
        self._voters: tuple[str, ...] = ()
        self._shadows: tuple[str, ...] = ()
        self._dissents: dict[str, deque[float]] = {n: deque() for n in self._profiles}
        self._streak = dict.fromkeys(self._profiles, 0)
        self._counters = {n: dict.fromkeys(COUNTERS, 0) for n in self._profiles}
        self._awaiting: dict[str, int] = {}  # executor -> seq of its outstanding order
        self._seq = 0
        self._failed_cleanses = dict.fromkeys(self._profiles, 0)
        self._retry_at: dict[str, float] = {}
        self._rotating: dict[str, str] = {}  # retiree -> replacement being activated
        self._faulty: dict[str, str] = {}  # dissenter kept voting until replaced -> reason
        self._refreshing: set[str] = set()  # rotated out without a spare, back once cleansed
        self._threat = 0.0  # the level the gateway last reported, in [0, 1]
        self._load = 0.0  # the host's CPU utilisation last reported, in [0, 1]
        self._deferred = False  # a due rotation waits for the load to fall
        self._suspicion = Suspicion(SuspicionPolicy(policy.isolate_at or 0.5,
                                                    policy.suspicion_half_life))
        self._isolated: frozenset[str] = frozenset()
        self._unisolable: set[str] = set()  # isolated components already alerted as stuck
        self._isolation_ends: float | None = None  # the wake-up asked for the first to end
        self._since: dict[str, float] = {}  # voter -> when it was first seen voting
        self._budget = 0.0  # rotations a learned policy has in hand
        self._budget_at: float | None = None
        self._next_rotation: float | None = None
        self._short = False
        self._below_floor = False
        self._started = False

    # -- reading -----------------------------------------------------------------------------

    @property
    def voters(self) -> tuple[str, ...]:
        """The ACTIVE executors, in pool order: the ballot's voters."""
        return self._voters

    @property
    def shadows(self) -> tuple[str, ...]:
        """The PROBATION executors, in pool order: asked, compared, never counted."""
        return self._shadows

    @property
    def held(self) -> tuple[str, ...]:
        """QUARANTINED executors that nothing brings back but an operator's cleanse: held by
        an operator, or failed in a way the runtime said would repeat."""
        return tuple(n for n, s in self._state.items()
                     if s is QUARANTINED and n not in self._retry_at and n not in self._awaiting)

    @property
    def states(self) -> Mapping[str, ExecutorState]:
        """A live read-only view of every executor's state."""
        return self._states_view

    @property
    def isolated(self) -> frozenset[str]:
        """Components at most one voter may hold."""
        return self._isolated

    @property
    def serving_since(self) -> Mapping[str, float]:
        """When each voter began its current turn."""
        return MappingProxyType(self._since)

    def suspicion(self, now: float) -> Mapping[str, float]:
        """Each implicated component's decayed suspicion (`endosec.core.suspicion`)."""
        return self._suspicion.scores(now)

    def state(self, name: str) -> ExecutorState:
        self._known(name)
        return self._state[name]

    def level(self, name: str, now: float) -> Level:
        """``name``'s Proof-of-Trust level (`endosec.core.trust`), where its state caps it:
        quarantined or cleansing is L0, on probation at most L1."""
        self._known(name)
        return state_level(self._trust.level(name, now), self._state[name])

    def counters(self, name: str) -> dict[str, int]:
        """``name``'s lifetime counts of `COUNTERS`, as plain data for status pages."""
        self._known(name)
        return dict(self._counters[name])

    # -- driving -----------------------------------------------------------------------------

    def start(self, now: float, resume: Mapping[str, ExecutorState] | None = None,
              held: Collection[str] = ()) -> list[Action]:
        """Choose the first active set from the pool (all SPARE) and start the rotation timer.

        With ``resume``, the states another controller left (a leader that went, `endosec.
        cluster.control`) are taken over first, through `RESUMED`: whatever that controller
        had ordered and not seen done is redone (an activation by the scheduler's choice
        again, a cleanse at once), except for the ``held`` quarantined, which stay held."""
        check_time("now", now)
        if self._started:
            raise RuntimeError("the controller has already started")
        self._started = True
        out: list[Action] = []
        for name, state in (resume or {}).items():
            if name in self._state:  # one the pool no longer has is let go
                self._state[name] = RESUMED[state]
        self._voters, self._shadows = self._in(ACTIVE), self._in(PROBATION)
        for name in self._in(QUARANTINED):
            if name not in held:
                self._fire(name, Signal.CLEANSE, out)
        self._settle(out)
        self._schedule_rotation(now, out)
        self._budget_at = now
        return out

    @property
    def started(self) -> bool:
        return self._started

    def handle(self, event: Event) -> list[Action]:
        """Apply one event; return the actions to carry out, in order."""
        if not self._started:
            raise RuntimeError("start() the controller before handling events")
        out: list[Action] = []
        match event:
            case VerdictReached():
                self._on_verdict(event, out)
            case ProbationResult():
                self._on_probation(event, out)
            case HealthReport():
                self._on_health(event, out)
            case Tick():
                self._on_tick(event, out)
            case ActionDone():
                self._on_done(event, out)
            case AdminRequest():
                self._on_admin(event, out)
            case Reconfigure():
                self._on_reconfigure(event, out)
            case ThreatChanged():
                self._on_threat(event, out)
            case MarkComponents(components=components, until=until):
                self._suspicion.mark(components, until)
            case LoadChanged():
                self._on_load(event, out)
            case BehaviourObserved(executor=name, reason=reason):
                self._known(name)
                self._trust.record(name, False)
                if self._can(name, Signal.FAULT):
                    self._quarantine_and_cleanse(name, reason, out)
            case IdentityReport():
                self._on_identity(event, out)
            case _:
                raise TypeError(f"not a controller event: {event!r}")
        self._review_isolation(event.now, out)
        self._settle(out)
        self._note_service(event.now)
        return out

    # -- event handlers ----------------------------------------------------------------------

    def _on_verdict(self, event: VerdictReached, out: list[Action]) -> None:
        v = event.verdict
        for name in (*v.agreed, *v.dissented, *v.failed):
            self._known(name)
        failed = v.failed if self.policy.failures_are_dissent else ()
        if v.accepted:
            accountable = v.dissented + failed
        else:
            out.append(Alert("warning", f"{v.outcome.value}: {v.reason}"))
            accountable = failed  # no winner to dissent from
        if v.accepted and v.dissented and self.policy.isolate_at is not None:
            self._suspicion.dissent(implicated(
                (self._profiles[n].components for n in v.dissented),
                (self._profiles[n].components for n in v.agreed)), event.now)
        for name in v.agreed:
            self._trust.record(name, True)
        for name in accountable:
            self._trust.record(name, False)
            self._bump(name, "dissents")
            if self._state[name] in (ACTIVE, ACTIVATING):
                self._count_dissent(name, event.now, out, event.confirmed)
            if not self._trust.may_vote(name) and self._can(name, Signal.FAULT):
                self._quarantine_and_cleanse(  # below L2 it never votes, floor or not
                    name, f"trust fell to L1 ({self._trust.points(name):g} points)", out)

    def _on_identity(self, event: IdentityReport, out: list[Action]) -> None:
        name = event.executor
        self._known(name)
        if event.ok:
            self._trust.attested(name, event.now)
            return
        self._trust.attestation_failed(name)
        if self._can(name, Signal.FAULT):
            self._quarantine_and_cleanse(name, f"attestation failed: {event.detail}", out)

    def _count_dissent(self, name: str, now: float, out: list[Action],
                       confirmed: bool = False) -> None:
        window = self._dissents[name]
        window.append(now)
        while window and window[0] <= now - self.policy.dissent_window:
            window.popleft()
        if len(window) < self.policy.quarantine_after or name in self._faulty:
            return
        reason = f"dissented {len(window)} time(s) within {self.policy.dissent_window:g}s"
        if confirmed or self._state[name] is not ACTIVE \
                or len(self._voters) - 1 >= self.policy.floor:
            self._quarantine_and_cleanse(name, reason, out)
            return
        # Quarantining it now would leave fewer voters than the floor: it stays, outvoted,
        # until a spare votes in its place (`_settle`), so dissent alone cannot take the
        # boundary down.
        self._faulty[name] = reason
        out.append(Alert("warning", f"{name} {reason}; it keeps voting until a spare replaces "
                                    f"it (quarantining it now would leave fewer than "
                                    f"{self.policy.floor} voters)"))
        self._replace(name, out)

    def _replace(self, name: str, out: list[Action]) -> None:
        """Start activating a spare for the faulty ``name``, if there is one."""
        if name in self._rotating:
            return
        picks = self._join([p for p in self._keep() if p.name != name], 1)
        if picks:
            self._rotating[name] = picks[0]
            self._fire(picks[0], Signal.ACTIVATE, out)

    def _on_probation(self, event: ProbationResult, out: list[Action]) -> None:
        name = event.executor
        self._known(name)
        if self._state[name] is not PROBATION:
            return  # stale: it already passed or failed
        self._trust.record(name, event.agreed)
        if not event.agreed:
            self._bump(name, "dissents")
            self._quarantine_and_cleanse(name, "disagreed while on probation", out)
            return
        self._streak[name] += 1
        if self._streak[name] >= self.policy.probation_agreements \
                and self._trust.may_vote(name):
            self._fire(name, Signal.PROBATION_PASSED, out)

    def _on_health(self, event: HealthReport, out: list[Action]) -> None:
        name = event.executor
        self._known(name)
        if not event.healthy and self._can(name, Signal.FAULT):
            self._quarantine_and_cleanse(name, "failed its health check", out)

    def _on_tick(self, event: Tick, out: list[Action]) -> None:
        now = event.now
        for name, at in list(self._retry_at.items()):
            if at <= now:
                self._fire(name, Signal.CLEANSE, out)
        due = self._next_rotation
        if due is None or now < due:
            return
        if self._busy() and now < due + self.policy.defer_max:
            if not self._deferred:  # look again at the deadline (or when the load falls)
                self._deferred = True
                out.append(Alert("warning", f"the host is busy ({self._load:.0%} CPU): the due "
                                            f"rotation waits, at most {self.policy.defer_max:g}s"))
                out.append(RequestWakeup(due + self.policy.defer_max))
            return
        self._deferred = False
        learned = self.policy.rotation
        if learned is None:
            self._rotate(out)
        else:
            self._decide(learned, now, out)
        self._schedule_rotation(now, out)

    def _note_service(self, now: float) -> None:
        """When each voter started its current turn (a learned policy reads the longest)."""
        self._since = {n: self._since.get(n, now) for n in self._voters}

    def _decide(self, learned: Decider, now: float, out: list[Action]) -> None:
        """Ask the learned policy; a rotation spends one from the budget, which accrues at
        one per mean wait of the fixed-rate rotation it replaces, never more often."""
        every = self.rotation_mean()
        assert every is not None
        if self._budget_at is not None:
            self._budget = min(float(BUDGETS), self._budget + (now - self._budget_at) / every)
        self._budget_at = now
        oldest = max((now - t for t in self._since.values()), default=0.0)
        band = BANDS.index(band_of(self._threat))
        action = learned.decide(RotationState(oldest, self._budget, band))
        movable = [n for n in self._voters if n not in self._rotating]
        if action == "wait" or self._budget < 1 or not movable:
            return
        if action == "rotate-oldest":
            first = min(movable, key=lambda n: self._since.get(n, now))
        else:
            first = self._rng.choice(movable)
        before = len(self._rotating) + len(self._refreshing)
        self._rotate(out, prefer=first)
        if len(self._rotating) + len(self._refreshing) > before:
            self._budget -= 1

    def _busy(self) -> bool:
        above = self.policy.defer_above
        return above is not None and self._load >= above

    def _on_load(self, event: LoadChanged, out: list[Action]) -> None:
        self._load = event.utilisation
        if self._deferred and not self._busy():
            self._on_tick(Tick(event.now), out)

    def _on_done(self, event: ActionDone, out: list[Action]) -> None:
        action = event.action
        if isinstance(action, (Alert, Isolate, RequestWakeup)):
            return
        name = action.executor
        self._known(name)
        if not isinstance(action, (Activate, Cleanse)) or self._awaiting.get(name) != action.seq:
            return  # nothing to wait for, or a stale order
        detail = f": {event.detail}" if event.detail else ""
        held = (f"{name} cannot be brought back{detail}; it stays quarantined until an "
                "operator orders a cleanse")
        if isinstance(action, Activate):
            if event.ok:
                self._fire(name, Signal.ACTIVATED, out)
            elif not event.retry:
                out.append(Alert("warning", held))
                self._fire(name, Signal.FAULT, out, f"activation cannot succeed{detail}")
            else:
                out.append(Alert("warning", f"activating {name} failed{detail}"))
                self._quarantine_and_cleanse(name, f"activation failed{detail}", out)
        elif event.ok:
            probation = self.policy.probation_agreements > 0 or not self._trust.may_vote(name)
            self._fire(name, Signal.CLEANSED_ON_PROBATION if probation else Signal.CLEANSED, out)
        elif not event.retry:
            self._fire(name, Signal.CLEANSE_FAILED, out)
            out.append(Alert("warning", held))
        else:
            self._failed_cleanses[name] += 1
            failures = self._failed_cleanses[name]
            wait = min(self.policy.cleanse_retry * 2 ** (failures - 1),
                       self.policy.cleanse_retry_max)
            self._fire(name, Signal.CLEANSE_FAILED, out)
            self._retry_at[name] = event.now + wait
            out.append(Alert("warning", f"cleansing {name} failed{detail}; it stays quarantined, "
                                        f"retry {failures} in {wait:g}s"))
            out.append(RequestWakeup(event.now + wait))

    def _on_admin(self, event: AdminRequest, out: list[Action]) -> None:
        name = event.executor
        self._known(name)
        state = self._state[name]
        if event.kind == "quarantine":
            if self._can(name, Signal.FAULT):
                self._fire(name, Signal.FAULT, out, "operator order")
                if len(self._voters) < self.policy.floor:
                    out.append(Alert("warning", f"operator quarantined {name}: "
                                                f"{len(self._voters)} voter(s) left, below the "
                                                f"floor of {self.policy.floor}"))
        elif event.kind == "cleanse":
            if self._can(name, Signal.CLEANSE):
                self._fire(name, Signal.CLEANSE, out)
            elif self._can(name, Signal.FAULT):
                self._quarantine_and_cleanse(name, "operator order", out)
        elif self._can(name, Signal.ACTIVATE):
            clash = self._clash(name, self._keep())
            if not self._trust.may_vote(name):
                out.append(Alert("warning", f"refused to activate {name}: its trust level is "
                                            f"{self._trust.level(name, event.now).name}, below "
                                            "L2"))
            elif clash:
                out.append(Alert("warning", f"refused to activate {name}: {clash} is isolated "
                                            "and an executor holding it votes"))
            else:
                self._fire(name, Signal.ACTIVATE, out)
        elif state not in (ACTIVE, ACTIVATING):
            out.append(Alert("warning", f"refused to activate {name}: it is {state.value} and "
                                        "has not been cleansed"))

    def _on_reconfigure(self, event: Reconfigure, out: list[Action]) -> None:
        for name in event.removed:
            self._known(name)
        for p in event.added:
            if p.name in self._state and p.name not in event.removed:
                raise ValueError(f"executor {p.name!r} is already in the pool")
        if len(self._state) - len(event.removed) + len(event.added) < 1:
            raise ValueError("the pool needs at least one executor")
        for name in event.removed:
            self._forget(name)
        for p in event.added:
            self._profiles[p.name] = p
            self._state[p.name] = SPARE
            self._dissents[p.name] = deque()
            self._streak[p.name] = 0
            self._counters[p.name] = dict.fromkeys(COUNTERS, 0)
            self._failed_cleanses[p.name] = 0
            self._trust.join(p.name)
        self._voters, self._shadows = self._in(ACTIVE), self._in(PROBATION)
        old, self.policy = self.policy, event.policy
        if (event.policy.rotate_every, event.policy.rotation) != (old.rotate_every,
                                                                   old.rotation):
            self._schedule_rotation(event.now, out)
        self._shrink(out)

    def _shrink(self, out: list[Action]) -> None:
        """Retire voters beyond the target size (a smaller ``active_size``, a threat that
        passed)."""
        extra = self._committed() - self._target_size()
        movable = [n for n in self._in(ACTIVE) if n not in self._rotating]
        if extra > 0 and movable:
            count = min(extra, len(movable))
            for name in self._checked(self._scheduler.retire(
                    self._p(movable), count, self._trust.snapshot(), self._rng), movable, count):
                self._fire(name, Signal.ROTATE_OUT, out, "the active set shrank")

    def _forget(self, name: str) -> None:
        """``name`` leaves the pool: every trace of it goes, orders to it included."""
        del self._profiles[name], self._state[name], self._dissents[name], self._streak[name]
        del self._counters[name], self._failed_cleanses[name]
        self._awaiting.pop(name, None)
        self._retry_at.pop(name, None)
        self._refreshing.discard(name)
        self._faulty.pop(name, None)
        for old, new in list(self._rotating.items()):
            if name in (old, new):
                del self._rotating[old]
        self._trust.leave(name)

    # -- decisions ---------------------------------------------------------------------------

    def _quarantine_and_cleanse(self, name: str, reason: str, out: list[Action]) -> None:
        self._fire(name, Signal.FAULT, out, reason)
        self._fire(name, Signal.CLEANSE, out)

    def rotation_mean(self) -> float | None:
        """The mean wait between rotations at the current threat level (None: off)."""
        every = self.policy.rotate_every
        if every is None:
            return None
        fastest = self.policy.rotate_min if self.policy.rotate_min is not None else every / 10
        return every + (fastest - every) * self._threat

    def _on_threat(self, event: ThreatChanged, out: list[Action]) -> None:
        rose = event.level > self._threat
        self._threat = event.level
        if rose:  # memoryless: drawing again at the faster rate loses nothing
            self._schedule_rotation(event.now, out)
        else:
            self._shrink(out)

    def _schedule_rotation(self, now: float, out: list[Action]) -> None:
        """The next rotation at an exponentially distributed time, its mean falling from
        ``rotate_every`` in calm to ``rotate_min`` under full threat (the rng is the operating
        system's entropy unless a seed was configured)."""
        self._deferred = False
        mean = self.rotation_mean()
        if mean is None:
            self._next_rotation = None
            return
        if self.policy.rotation is not None:  # the next decision, not the next rotation
            mean = self.policy.rotation.epoch
        self._next_rotation = now + self._rng.expovariate(1.0 / mean)
        out.append(RequestWakeup(self._next_rotation))

    def _target_size(self) -> int:
        """``active_size``, growing towards the whole pool as the threat rises past the calm
        band, with ``grow_under_threat``: more voters, more to compromise at once."""
        base = self.policy.active_size
        if not self.policy.grow_under_threat or self._threat <= CALM:
            return base
        return base + round((len(self._state) - base) * (self._threat - CALM) / (1 - CALM))

    def _rotate(self, out: list[Action], prefer: str | None = None) -> None:
        """Start replacing up to ``rotate_count`` actives (``prefer`` first, when a learned
        policy names one); `_settle` retires each one when its replacement votes. Without a
        spare, cleanse voters in place while the rest keep at least the floor voting."""
        movable = [n for n in self._in(ACTIVE) if n not in self._rotating]
        spares = self._in(SPARE)
        trust = self._trust.snapshot()

        def retire(movable: list[str], count: int) -> list[str]:
            first = [prefer] if prefer in movable else []
            rest = [n for n in movable if n not in first]
            return first + self._checked(self._scheduler.retire(
                self._p(rest), count - len(first), trust, self._rng), rest, count - len(first))

        if not spares and not self._rotating and self.policy.cleanse_on_rotate:
            count = min(self.policy.rotate_count, len(self._in(ACTIVE)) - self.policy.floor)
            if count > 0 and movable:
                for name in retire(movable, count):
                    self._fire(name, Signal.ROTATE_OUT, out, "rotated out to be cleansed")
                    self._fire(name, Signal.CLEANSE, out)
                    self._refreshing.add(name)
            return
        count = min(self.policy.rotate_count, len(spares), len(movable))
        # With components isolated, one at a time: who may join depends on who leaves.
        for batch in ([count] if not self._isolated else [1] * count):
            movable = [n for n in movable if n not in self._rotating]
            if self._isolated:  # only those some spare may replace
                movable = [n for n in movable if any(
                    not self._clash(s, [p for p in self._keep() if p.name != n])
                    for s in spares if self._state[s] is SPARE)]
            if batch == 0 or not movable:
                return
            retirees = retire(movable, batch)
            picks = self._join([p for p in self._keep() if p.name not in retirees], batch)
            for old, new in zip(retirees, picks, strict=False):
                self._rotating[old] = new
                self._fire(new, Signal.ACTIVATE, out)

    def _settle(self, out: list[Action]) -> None:
        """After every event: finish or repair rotations, refill the active set, report."""
        for old, new in list(self._rotating.items()):
            if self._state[old] is not ACTIVE:
                del self._rotating[old]  # it left on its own; `new` simply fills the gap
            elif self._state[new] is ACTIVE:
                del self._rotating[old]
                if old in self._faulty:
                    self._quarantine_and_cleanse(old, self._faulty[old], out)
                    continue
                self._fire(old, Signal.ROTATE_OUT, out, f"rotated out for {new}")
                if self.policy.cleanse_on_rotate:
                    self._fire(old, Signal.CLEANSE, out)
            elif self._state[new] is not ACTIVATING:
                picks = self._join([p for p in self._keep() if p.name != old], 1)
                if not picks:
                    del self._rotating[old]  # no other replacement: `old` stays
                    continue
                self._rotating[old] = picks[0]
                self._fire(picks[0], Signal.ACTIVATE, out)
        for name in self._faulty:
            if self._state[name] is ACTIVE and name not in self._rotating:
                self._replace(name, out)
        need = self._target_size() - self._committed()
        if need > 0:
            for name in self._join(self._keep(), need):
                self._fire(name, Signal.ACTIVATE, out)
        committed = self._committed()
        self._refreshing = {n for n in self._refreshing if self._state[n] is CLEANSING}
        short = committed + len(self._refreshing) < self.policy.active_size
        if short and not self._short:
            out.append(Alert("warning", f"no spare left: {committed} of "
                                        f"{self.policy.active_size} executors active or "
                                        "activating"))
        self._short = short
        below = committed < self.policy.floor
        if below and not self._below_floor:
            out.append(Alert("critical", f"only {committed} executor(s) active or activating, "
                                         f"below the floor of {self.policy.floor}: the arbiter "
                                         "must fail closed"))
        self._below_floor = below

    def _join(self, keep: Sequence[Profile], count: int) -> list[str]:
        """Up to ``count`` spares to join ``keep``, never a second holder of an isolated
        component (then chosen one at a time, each pick part of the set the next one joins)."""
        spares = tuple(n for n in self._in(SPARE) if self._trust.may_vote(n))
        count = min(count, len(spares))
        trust = self._trust.snapshot()
        if not self._isolated:
            if count <= 0:
                return []
            return self._checked(self._scheduler.choose(
                self._p(spares), keep, count, trust, self._rng), spares, count)
        staying, picks = list(keep), []
        for _ in range(count):
            allowed = [n for n in spares if n not in picks and not self._clash(n, staying)]
            if not allowed:
                break
            pick = self._checked(self._scheduler.choose(
                self._p(allowed), staying, 1, trust, self._rng), allowed, 1)[0]
            picks.append(pick)
            staying.append(self._profiles[pick])
        return picks

    def _clash(self, name: str, members: Sequence[Profile]) -> str | None:
        """An isolated component ``name`` holds that one of ``members`` holds too."""
        shared = self._profiles[name].components & self._isolated
        for p in members:
            if p.name != name and p.components & shared:
                return min(p.components & shared)
        return None

    def _review_isolation(self, now: float, out: list[Action]) -> None:
        """Isolate components as suspicion crosses the threshold (or the operator marks
        them), release them as it fades; then keep one voter per isolated component."""
        # Only a component two executors of the pool share can be isolated from anything.
        # (Counted only when something is suspect: this runs on every verdict.)
        isolated = self._suspicion.isolated(now)
        if isolated:
            held = Counter(c for p in self._profiles.values() for c in p.components)
            isolated = frozenset(c for c in isolated if held[c] >= 2)
        scores = self._suspicion.scores(now) if isolated - self._isolated else {}
        for c in sorted(isolated - self._isolated):
            holders = [n for n in self._voters if c in self._profiles[n].components]
            why = f"suspicion {scores[c]:.2f}" if c in scores and \
                scores[c] >= self._suspicion.policy.isolate_at else "marked by the operator"
            out.append(Isolate(c, True, f"{why}; voting holders: {', '.join(holders) or 'none'}"))
        for c in sorted(self._isolated - isolated):
            out.append(Isolate(c, False, "no longer suspect"))
        self._isolated = isolated
        self._unisolable &= isolated
        if isolated:  # look again when the first isolation would end
            end = min(self._suspicion.ends(c, now) for c in isolated)
            if end != self._isolation_ends:  # (a hair after: by then it has ended)
                out.append(RequestWakeup(end + 0.01))
        else:
            end = None
        self._isolation_ends = end
        for c in sorted(isolated):
            holders = sorted((n for n in self._in(ACTIVE) if c in self._profiles[n].components
                              and n not in self._rotating),
                             key=lambda n: -self._trust.score(n))
            for name in holders[1:]:  # the most trusted holder stays
                picks = self._join([p for p in self._keep() if p.name != name], 1)
                if picks:
                    self._rotating[name] = picks[0]
                    self._fire(picks[0], Signal.ACTIVATE, out)
                elif len(self._voters) - 1 >= self.policy.floor:
                    self._fire(name, Signal.ROTATE_OUT, out, f"component {c} is isolated")
                    self._fire(name, Signal.CLEANSE, out)
                elif c not in self._unisolable:
                    self._unisolable.add(c)
                    out.append(Alert("warning", f"component {c} is isolated but {name} keeps "
                                                "voting: without it fewer than the floor vote"))

    # -- the one place state changes ---------------------------------------------------------

    def _can(self, name: str, signal: Signal) -> bool:
        return (self._state[name], signal) in TRANSITIONS

    def _fire(self, name: str, signal: Signal, out: list[Action], reason: str = "") -> None:
        old = self._state[name]
        new = TRANSITIONS.get((old, signal))
        if new is None:
            raise RuntimeError(f"no transition from {old.value} on {signal.value} ({name})")
        self._state[name] = new
        self._awaiting.pop(name, None)
        if ACTIVE in (old, new):
            self._voters = self._in(ACTIVE)
        if PROBATION in (old, new):
            self._shadows = self._in(PROBATION)
        match signal:
            case Signal.FAULT:
                self._faulty.pop(name, None)
                out.append(Quarantine(name, reason))
                self._bump(name, "quarantines")
                self._dissents[name].clear()
            case Signal.CLEANSE:
                self._retry_at.pop(name, None)
                out.append(Cleanse(name, self._order(name)))
            case Signal.CLEANSED | Signal.CLEANSED_ON_PROBATION:
                self._bump(name, "cleanses")
                self._failed_cleanses[name] = 0
                self._streak[name] = 0
            case Signal.ACTIVATE:
                out.append(Activate(name, self._order(name)))
            case Signal.ACTIVATED:
                self._bump(name, "activations")
            case Signal.ROTATE_OUT:
                out.append(Deactivate(name, reason))
                self._bump(name, "rotations")
            case Signal.CLEANSE_FAILED | Signal.PROBATION_PASSED:
                pass

    # -- internals ---------------------------------------------------------------------------

    def _order(self, name: str) -> int:
        self._seq += 1
        self._awaiting[name] = self._seq
        return self._seq

    def _known(self, name: str) -> None:
        if name not in self._state:
            raise ValueError(f"unknown executor {name!r}")

    def _bump(self, name: str, counter: str) -> None:
        self._counters[name][counter] += 1

    def _in(self, state: ExecutorState) -> tuple[str, ...]:
        return tuple(n for n, s in self._state.items() if s is state)

    def _p(self, names: Sequence[str]) -> list[Profile]:
        return [self._profiles[n] for n in names]

    def _keep(self) -> list[Profile]:
        """The executors staying in the active set: active or activating, minus retirees."""
        return [p for n, p in self._profiles.items()
                if self._state[n] in (ACTIVE, ACTIVATING) and n not in self._rotating]

    def _committed(self) -> int:
        """Executors active or activating, a replacement and its retiree counted once."""
        return len(self._in(ACTIVE)) + len(self._in(ACTIVATING)) - len(self._rotating)

    @staticmethod
    def _checked(names: Sequence[str], allowed: Sequence[str], count: int) -> list[str]:
        picked = list(names)
        if len(picked) != count or len(set(picked)) != count or not set(picked) <= set(allowed):
            raise RuntimeError(f"scheduler returned {picked!r}; wanted {count} distinct names "
                               f"from {list(allowed)!r}")
        return picked
