"""Per-executor trust as Proof-of-Trust levels: how far the controller and a trust-weighted
arbiter believe each executor.

After the Proof of Trust of the industrial-Internet paper (seeds/002): an *identity* level from
attestation (`endosec.attest`) and a *behaviour* record from every vote combine into cumulative
*points* and a final level, and what an executor may do follows its level.

- **identity** is `Identity.ATTESTED` (with the time of its last matching measurement),
  `Identity.UNMEASURED` (attestation off, or a driver that cannot see the process) or
  `Identity.FAILED` (a measurement differed from the reference).
- **behaviour** is the mean of a Beta posterior over "this executor agrees with the verdict",
  with exponentially decaying evidence, so recent conduct weighs most.
- **points** accumulate by the table `POINTS`: an agreement earns ``gain``, a dissent, failure
  or behaviour report costs ``penalty`` (points never rise on one), a failed attestation takes
  them all; they stay within ``[0, cap]``, so old credit cannot grow without bound.
- **credibility** (`score`, what the schedulers read) is behaviour x points / cap, in [0, 1]:
  the paper's "accounting right", a node more likely to be chosen the higher its standing,
  rising with both the long record (points) and recent conduct (behaviour).

The final level (`TrustBook.level`, rules in `PointRules`):

======  ==================================================================================
L0      must not serve: attestation failed (the controller also counts quarantined and
        cleansing executors as L0)
L1      probation: fewer than ``vote_at`` points; asked as a shadow, never counted
L2      votes
L3      votes, ``lead_at`` points or more *and* attested within ``fresh_for`` seconds: its
        weight breaks ties in trust-weighted voting
======  ==================================================================================

Cleansing does **not** erase points or behaviour. A cleanse restores the pristine image, so
whatever flaw let the executor be subverted is still there after it; an implementation that
keeps getting compromised should keep losing credibility and be chosen less often. Only a new
build deserves a clean slate, and that is the operator's call: `TrustBook.reset`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum, IntEnum
from types import MappingProxyType
from typing import Final

__all__ = ["LEVEL_MEANINGS", "POINTS", "Evidence", "Identity", "Level", "PointRules",
           "TrustBook"]


class Identity(Enum):
    FAILED = "failed"
    UNMEASURED = "unmeasured"
    ATTESTED = "attested"


class Level(IntEnum):
    L0 = 0
    L1 = 1
    L2 = 2
    L3 = 3


LEVEL_MEANINGS: Final[Mapping[Level, str]] = MappingProxyType({
    Level.L0: "must not serve (attestation failed, quarantined or cleansing)",
    Level.L1: "probation: shadows only",
    Level.L2: "votes",
    Level.L3: "votes, and breaks ties in trust-weighted voting",
})


class Evidence(Enum):
    """What moves an executor's points."""

    AGREED = "agreed"
    DISSENTED = "dissented"  # a dissent, a failed exchange or a behaviour report
    ATTESTATION_FAILED = "attestation-failed"


@dataclass(frozen=True, slots=True)
class PointRules:
    """The Proof-of-Trust point rules; the defaults let a new executor vote at once and drop
    to probation after four dissents with no agreement between them."""

    start: float = 100.0
    gain: float = 1.0
    penalty: float = 15.0
    cap: float = 1000.0
    vote_at: float = 50.0
    lead_at: float = 500.0
    fresh_for: float = 900.0

    def __post_init__(self) -> None:
        for name in ("start", "gain", "penalty", "cap", "vote_at", "lead_at", "fresh_for"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name}: must be finite and >= 0, got {value!r}")
        if not self.vote_at <= self.lead_at <= self.cap:
            raise ValueError("points: need vote_at <= lead_at <= cap, got "
                             f"{self.vote_at!r}, {self.lead_at!r}, {self.cap!r}")
        if self.start > self.cap:
            raise ValueError(f"start: must be <= cap ({self.cap!r}), got {self.start!r}")


#: Points after one piece of evidence: ``POINTS[evidence](points, rules)``.
POINTS: Final[Mapping[Evidence, Callable[[float, PointRules], float]]] = MappingProxyType({
    Evidence.AGREED: lambda p, r: min(r.cap, p + r.gain),
    Evidence.DISSENTED: lambda p, r: max(0.0, p - r.penalty),
    Evidence.ATTESTATION_FAILED: lambda p, r: 0.0,
})


class TrustBook:
    """Trust for a pool of executors (it changes only by `join` and `leave`).

    **Parameters:**

    * **names** - the executors; a name used later that is not here raises ``ValueError``.
    * **prior** - ``(alpha, beta)`` pseudo-counts of agreement and dissent before any vote;
      ``(1, 1)`` is uniform and starts every behaviour score at 0.5.
    * **decay** - in (0, 1]; the weight an observation keeps each time a newer one arrives.
      1.0 never forgets; 0.99 gives a memory of roughly the last hundred votes.
    * **rules** - the point rules (`PointRules`).
    """

    __slots__ = ("_agreed", "_attested_at", "_decay", "_dissented", "_identity", "_points",
                 "_prior", "rules")

    def __init__(self, names: Iterable[str], *, prior: tuple[float, float] = (1.0, 1.0),
                 decay: float = 0.99, rules: PointRules | None = None) -> None:
        alpha, beta = prior
        if not (alpha > 0 and beta > 0 and math.isfinite(alpha) and math.isfinite(beta)):
            raise ValueError(f"prior: pseudo-counts must be positive and finite, got {prior!r}")
        if not 0 < decay <= 1:
            raise ValueError(f"decay: must be in (0, 1], got {decay!r}")
        pool = list(names)
        if len(set(pool)) != len(pool):
            raise ValueError("names: executor names must be unique")
        self._prior = (float(alpha), float(beta))
        self._decay = float(decay)
        self.rules = rules or PointRules()
        self._agreed: dict[str, float] = {}
        self._dissented: dict[str, float] = {}
        self._identity: dict[str, Identity] = {}
        self._attested_at: dict[str, float] = {}
        self._points: dict[str, float] = {}
        for name in pool:
            self._fresh(name)

    def _fresh(self, name: str) -> None:
        self._agreed[name] = 0.0
        self._dissented[name] = 0.0
        self._identity[name] = Identity.UNMEASURED
        self._attested_at.pop(name, None)
        self._points[name] = self.rules.start

    def _known(self, name: str) -> None:
        if name not in self._identity:
            raise ValueError(f"unknown executor {name!r}")

    def _earn(self, name: str, evidence: Evidence) -> None:
        self._points[name] = POINTS[evidence](self._points[name], self.rules)

    def record(self, name: str, agreed: bool) -> None:
        """Add one vote: ``agreed`` with the verdict, or dissented from it (or failed)."""
        self._known(name)
        d = self._decay
        self._agreed[name] = self._agreed[name] * d + (1.0 if agreed else 0.0)
        self._dissented[name] = self._dissented[name] * d + (0.0 if agreed else 1.0)
        self._earn(name, Evidence.AGREED if agreed else Evidence.DISSENTED)

    def record_agreements(self, name: str, count: int) -> None:
        """Add ``count`` agreeing votes at once: the same as ``count`` calls of `record`."""
        self._known(name)
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count!r}")
        d = self._decay
        kept = d ** count
        gained = float(count) if d == 1.0 else (1.0 - kept) / (1.0 - d)
        self._agreed[name] = self._agreed[name] * kept + gained
        self._dissented[name] = self._dissented[name] * kept
        self._points[name] = min(self.rules.cap, self._points[name] + self.rules.gain * count)

    def carry(self, name: str, points: float, agreed: float, dissented: float) -> None:
        """Take over another book's count for ``name``: its points and the decayed evidence
        behind its behaviour (a new leader's, from what its predecessor published); identity
        stays what this book measured."""
        self._known(name)
        for what, value in (("agreed", agreed), ("dissented", dissented)):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{what}: expected a non-negative count, got {value!r}")
        if not (math.isfinite(points) and 0 <= points <= self.rules.cap):
            raise ValueError(f"points: expected 0..{self.rules.cap:g}, got {points!r}")
        self._points[name], self._agreed[name], self._dissented[name] = points, agreed, dissented

    def attested(self, name: str, now: float) -> None:
        """A measurement of ``name`` matched its reference at ``now``."""
        self._known(name)
        self._identity[name] = Identity.ATTESTED
        self._attested_at[name] = now

    def attestation_failed(self, name: str) -> None:
        """A measurement of ``name`` differed: identity fails and every point goes."""
        self._known(name)
        self._identity[name] = Identity.FAILED
        self._attested_at.pop(name, None)
        self._earn(name, Evidence.ATTESTATION_FAILED)

    def behaviour(self, name: str) -> float:
        """The decayed Beta posterior mean of agreement, in (0, 1)."""
        self._known(name)
        alpha, beta = self._prior
        a = alpha + self._agreed[name]
        return a / (a + beta + self._dissented[name])

    def evidence(self, name: str) -> tuple[float, float]:
        """The decayed counts ``(agreed, dissented)`` behind the behaviour score, for display."""
        self._known(name)
        return self._agreed[name], self._dissented[name]

    def identity(self, name: str) -> Identity:
        self._known(name)
        return self._identity[name]

    def attested_at(self, name: str) -> float | None:
        """When ``name`` last matched its reference (None: not since its identity failed or
        the book learnt of it)."""
        self._known(name)
        return self._attested_at.get(name)

    def points(self, name: str) -> float:
        self._known(name)
        return self._points[name]

    def may_vote(self, name: str) -> bool:
        """At L2 or above: the controller activates nothing else (the level's time-dependent
        part, the L3 freshness, does not matter here)."""
        self._known(name)
        return (self._identity[name] is not Identity.FAILED
                and self._points[name] >= self.rules.vote_at)

    def level(self, name: str, now: float) -> Level:
        """The final level from identity and points alone (see the module's table)."""
        self._known(name)
        if self._identity[name] is Identity.FAILED:
            return Level.L0
        points, rules = self._points[name], self.rules
        if points < rules.vote_at:
            return Level.L1
        at = self._attested_at.get(name)
        if points >= rules.lead_at and at is not None and now - at <= rules.fresh_for:
            return Level.L3
        return Level.L2

    def score(self, name: str) -> float:
        """Credibility for the schedulers, in [0, 1]: ``behaviour x points / cap``, so it rises
        with each and an executor with no points has none; 0 once identity failed, whatever it
        earned since. With ``cap`` 0 points say nothing and it is the behaviour alone."""
        if self.identity(name) is Identity.FAILED:
            return 0.0
        cap = self.rules.cap
        return self.behaviour(name) * (self._points[name] / cap if cap > 0 else 1.0)

    def weights(self, now: float) -> dict[str, float]:
        """Trust-weighted voting's weights by level: nothing below L2, 1 at L2, and at L3 a
        bonus small enough that it only breaks ties (the bonuses of a whole pool add up to
        less than one vote)."""
        bonus = 1.0 / (len(self._identity) + 1)
        weight = {Level.L0: 0.0, Level.L1: 0.0, Level.L2: 1.0, Level.L3: 1.0 + bonus}
        return {name: weight[self.level(name, now)] for name in self._identity}

    def reset(self, name: str) -> None:
        """Forget ``name``'s history and identity: for a new build, never for a cleanse."""
        self._known(name)
        self._fresh(name)

    def join(self, name: str) -> None:
        """A new executor in the pool, with no history."""
        if name in self._identity:
            raise ValueError(f"executor {name!r} is already in the pool")
        self._fresh(name)

    def leave(self, name: str) -> None:
        """An executor gone from the pool: its history goes with it."""
        self._known(name)
        for book in (self._agreed, self._dissented, self._identity, self._points):
            del book[name]
        self._attested_at.pop(name, None)

    def snapshot(self) -> dict[str, float]:
        """Every executor's credibility (`score`), in pool order: the schedulers' ``trust``."""
        return {name: self.score(name) for name in self._identity}
