"""Per-executor trust: how far the controller and a trust-weighted arbiter believe each executor.

A score has two factors, after the "identity trust level x behaviour trust level" of proof of
trust (seeds/002):

- **behaviour** is the mean of a Beta posterior over "this executor agrees with the verdict",
  fed by every vote it casts. Evidence decays exponentially (each new observation multiplies the
  old counts by ``decay``), so recent conduct weighs most and an old run of agreement cannot bank
  unlimited credit for a later attack; the prior keeps the mean away from 0 and 1 until there is
  evidence.
- **identity** is reserved for attested launches (a measured boot, a signed image): 1.0 until a
  runtime says otherwise.

``score = behaviour * identity``, always in [0, 1].

Cleansing does **not** erase behaviour. A cleanse restores the pristine image, so whatever flaw let
the executor be subverted is still there after it; an implementation that keeps getting
compromised should keep losing credibility and be chosen less often. Only a new build (a different
image) deserves a clean slate, and that is the operator's call: `TrustBook.reset`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

__all__ = ["TrustBook"]


class TrustBook:
    """Trust scores for a pool of executors (it changes only by `join` and `leave`).

    **Parameters:**

    * **names** - the executors; a name used later that is not here raises ``ValueError``.
    * **prior** - ``(alpha, beta)`` pseudo-counts of agreement and dissent before any vote;
      ``(1, 1)`` is uniform and starts every behaviour score at 0.5.
    * **decay** - in (0, 1]; the weight an observation keeps each time a newer one arrives.
      1.0 never forgets; 0.99 gives a memory of roughly the last hundred votes.
    """

    __slots__ = ("_agreed", "_decay", "_dissented", "_identity", "_prior")

    def __init__(self, names: Iterable[str], *, prior: tuple[float, float] = (1.0, 1.0),
                 decay: float = 0.99) -> None:
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
        self._agreed = dict.fromkeys(pool, 0.0)
        self._dissented = dict.fromkeys(pool, 0.0)
        self._identity = dict.fromkeys(pool, 1.0)

    def _known(self, name: str) -> None:
        if name not in self._identity:
            raise ValueError(f"unknown executor {name!r}")

    def record(self, name: str, agreed: bool) -> None:
        """Add one vote: ``agreed`` with the verdict, or dissented from it (or failed)."""
        self._known(name)
        d = self._decay
        self._agreed[name] = self._agreed[name] * d + (1.0 if agreed else 0.0)
        self._dissented[name] = self._dissented[name] * d + (0.0 if agreed else 1.0)

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

    def identity(self, name: str) -> float:
        """The identity factor last set by an attested launch (1.0 by default)."""
        self._known(name)
        return self._identity[name]

    def set_identity(self, name: str, score: float) -> None:
        """Record how far ``name``'s launch was attested: 1.0 fully, 0.0 not at all."""
        self._known(name)
        if not 0.0 <= score <= 1.0:
            raise ValueError(f"identity score for {name!r} must be in [0, 1], got {score!r}")
        self._identity[name] = float(score)

    def score(self, name: str) -> float:
        """``behaviour * identity``, in [0, 1]."""
        return self.behaviour(name) * self._identity[name]

    def reset(self, name: str) -> None:
        """Forget ``name``'s history and identity: for a new build, never for a cleanse."""
        self._known(name)
        self._agreed[name] = 0.0
        self._dissented[name] = 0.0
        self._identity[name] = 1.0

    def join(self, name: str) -> None:
        """A new executor in the pool, with no history."""
        if name in self._identity:
            raise ValueError(f"executor {name!r} is already in the pool")
        self._agreed[name] = 0.0
        self._dissented[name] = 0.0
        self._identity[name] = 1.0

    def leave(self, name: str) -> None:
        """An executor gone from the pool: its history goes with it."""
        self._known(name)
        for book in (self._agreed, self._dissented, self._identity):
            del book[name]

    def snapshot(self) -> dict[str, float]:
        """Every executor's current score, in pool order."""
        return {name: self.score(name) for name in self._identity}
