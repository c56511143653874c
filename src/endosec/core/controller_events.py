"""What the controller is told and what it orders: events in, actions out.

Both are frozen, slotted dataclasses that check themselves (a time must be finite), so a bad
message fails where it is made, not deep inside the feedback loop. A runtime answers each
`Activate` and `Cleanse` with ``ActionDone`` carrying the very action it received.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from endosec.core.model import Profile, Verdict

if TYPE_CHECKING:
    from endosec.core.controller import ControllerPolicy

__all__ = [
    "Action",
    "ActionDone",
    "Activate",
    "AdminKind",
    "AdminRequest",
    "Alert",
    "BehaviourObserved",
    "Cleanse",
    "Deactivate",
    "Event",
    "HealthReport",
    "IdentityReport",
    "Isolate",
    "LoadChanged",
    "MarkComponents",
    "ProbationResult",
    "Quarantine",
    "Reconfigure",
    "RequestWakeup",
    "ThreatChanged",
    "Tick",
    "VerdictReached",
    "check_time",
]


def check_time(what: str, value: float) -> None:
    """Reject NaN and infinite times, which would stall every timer they touch."""
    if not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number of seconds, got {value!r}")


# -- actions (out) ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Quarantine:
    """Stop routing to ``executor``; the controller has already removed it from voting."""

    executor: str
    reason: str


@dataclass(frozen=True, slots=True)
class Cleanse:
    """Stop, wipe, restore the pristine image, start, wait healthy, replay the journal; then
    answer ``ActionDone(this, ok)``. ``seq`` identifies the order and is ignored by ``==``."""

    executor: str
    seq: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class Activate:
    """Bring ``executor``'s state up to date (journal replay); then answer
    ``ActionDone(this, ok)``. It votes only after a successful completion."""

    executor: str
    seq: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class Deactivate:
    """``executor`` leaves voting because it was rotated out (not because it misbehaved)."""

    executor: str
    reason: str


@dataclass(frozen=True, slots=True)
class Alert:
    """Something an operator should know: ``critical`` means the arbiter must fail closed."""

    level: Literal["warning", "critical"]
    message: str

    def __post_init__(self) -> None:
        if self.level not in ("warning", "critical"):
            raise ValueError(f"alert level must be 'warning' or 'critical', got {self.level!r}")


@dataclass(frozen=True, slots=True)
class Isolate:
    """``component`` is isolated (``on``: at most one executor holding it votes) or no longer
    is; ``reason`` says why."""

    component: str
    on: bool
    reason: str


@dataclass(frozen=True, slots=True)
class RequestWakeup:
    """Send the controller ``Tick(at)`` at time ``at`` (rotation and cleanse-retry timers)."""

    at: float

    def __post_init__(self) -> None:
        check_time("RequestWakeup.at", self.at)


Action = Quarantine | Cleanse | Activate | Deactivate | Alert | Isolate | RequestWakeup


# -- events (in) -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VerdictReached:
    """A ballot closed. Final verdicts only: early ones do not yet name every failure.

    ``confirmed`` marks dissent known to be an attack (behaviour evidence, immune memory, an
    operator): its dissenters are quarantined at once even below the floor. Otherwise a
    dissenter whose quarantine would leave fewer voters than the floor keeps voting (and being
    outvoted) until a spare has replaced it.
    """

    verdict: Verdict
    now: float
    confirmed: bool = False

    def __post_init__(self) -> None:
        check_time("now", self.now)


@dataclass(frozen=True, slots=True)
class ProbationResult:
    """A shadow executor's output did or did not agree with the accepted answer."""

    executor: str
    agreed: bool
    now: float

    def __post_init__(self) -> None:
        check_time("now", self.now)


@dataclass(frozen=True, slots=True)
class HealthReport:
    """The runtime's health check of one executor."""

    executor: str
    healthy: bool
    now: float

    def __post_init__(self) -> None:
        check_time("now", self.now)


@dataclass(frozen=True, slots=True)
class Tick:
    """The clock reached ``now`` (usually in answer to a `RequestWakeup`)."""

    now: float

    def __post_init__(self) -> None:
        check_time("now", self.now)


@dataclass(frozen=True, slots=True)
class ActionDone:
    """The runtime finished ``action`` (the object it was given), successfully or not.

    ``retry`` False says a failure would repeat on every attempt (the executor cannot be
    brought level), so the controller holds the executor instead of trying again.
    """

    action: Action
    ok: bool
    now: float
    detail: str = ""
    retry: bool = True

    def __post_init__(self) -> None:
        check_time("now", self.now)


AdminKind = Literal["quarantine", "cleanse", "activate"]


@dataclass(frozen=True, slots=True)
class AdminRequest:
    """An operator's order. Quarantine holds the executor (for inspection) without cleansing."""

    kind: AdminKind
    executor: str
    now: float

    def __post_init__(self) -> None:
        check_time("now", self.now)
        if self.kind not in ("quarantine", "cleanse", "activate"):
            raise ValueError(f"admin request kind must be quarantine, cleanse or activate, "
                             f"got {self.kind!r}")


@dataclass(frozen=True, slots=True)
class Reconfigure:
    """A reloaded configuration: a new policy, executors that joined the pool (already
    started, so they join as spares) and executors that left it (the runtime stops them once
    the controller has let them go)."""

    policy: ControllerPolicy
    added: tuple[Profile, ...]
    removed: tuple[str, ...]
    now: float

    def __post_init__(self) -> None:
        check_time("now", self.now)


@dataclass(frozen=True, slots=True)
class ThreatChanged:
    """The threat level moved (``level`` in [0, 1]): rotations come faster, and the active
    set may grow, as it rises."""

    level: float
    now: float

    def __post_init__(self) -> None:
        check_time("now", self.now)
        if not 0.0 <= self.level <= 1.0:
            raise ValueError(f"level must be in [0, 1], got {self.level!r}")


@dataclass(frozen=True, slots=True)
class MarkComponents:
    """The operator's word: ``components`` are under attack until ``until`` (isolated)."""

    components: frozenset[str]
    until: float
    now: float

    def __post_init__(self) -> None:
        check_time("now", self.now)
        check_time("until", self.until)


@dataclass(frozen=True, slots=True)
class LoadChanged:
    """The host's CPU utilisation, in [0, 1]: optional rotations wait while it is high."""

    utilisation: float
    now: float

    def __post_init__(self) -> None:
        check_time("now", self.now)
        if not 0.0 <= self.utilisation <= 1.0:
            raise ValueError(f"utilisation must be in [0, 1], got {self.utilisation!r}")


@dataclass(frozen=True, slots=True)
class BehaviourObserved:
    """``executor`` broke a behaviour rule (`endosec.core.behaviour`): an attack whatever its
    output, so it is quarantined and cleansed at once, even below the floor."""

    executor: str
    reason: str
    now: float

    def __post_init__(self) -> None:
        check_time("now", self.now)


@dataclass(frozen=True, slots=True)
class IdentityReport:
    """A measurement of ``executor`` (`endosec.attest`) matched its reference (``ok``) or did
    not: then ``detail`` names the files that differ, identity trust drops to L0 and the
    executor is quarantined at once, even below the floor."""

    executor: str
    ok: bool
    detail: str
    now: float

    def __post_init__(self) -> None:
        check_time("now", self.now)


Event = (VerdictReached | ProbationResult | HealthReport | Tick | ActionDone | AdminRequest
         | Reconfigure | ThreatChanged | MarkComponents | LoadChanged | BehaviourObserved
         | IdentityReport)
