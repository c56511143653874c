"""Which components a dissent points at, and which ones are isolated for it.

When an executor dissents from the winning class, the flaw behind it most likely sits in a
component the dissenter has and no agreeing executor has (a component an agreeing executor
holds answered correctly there). Each such component gains one unit of suspicion, which decays
exponentially (``half_life``). A component at ``isolate_at`` or above is *isolated*: at most
one executor holding it may vote, so an exploit on it cannot reach a majority even when it
works on every stack built with it. The operator may also mark components as under attack for
a while. Time is passed in; nothing here does I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = ["Suspicion", "SuspicionPolicy", "implicated"]


def implicated(dissenters: Iterable[frozenset[str]],
               agreers: Iterable[frozenset[str]]) -> frozenset[str]:
    """Components some dissenter holds and no agreeing executor does."""
    cleared = frozenset().union(*agreers)
    return frozenset().union(*dissenters) - cleared


@dataclass(frozen=True, slots=True)
class SuspicionPolicy:
    isolate_at: float = 0.5  # one attributed dissent weighs 1: it isolates for one half-life
    half_life: float = 3600.0  # seconds for suspicion to halve

    def __post_init__(self) -> None:
        for name in ("isolate_at", "half_life"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")


@dataclass(slots=True)
class Suspicion:
    """Decaying suspicion per component, and the operator's marks."""

    policy: SuspicionPolicy = field(default_factory=SuspicionPolicy)
    _score: dict[str, float] = field(default_factory=dict)
    _at: float = 0.0
    _marked: dict[str, float] = field(default_factory=dict)  # component -> until

    def _decay(self, now: float) -> None:
        if now > self._at:
            factor = 0.5 ** ((now - self._at) / self.policy.half_life)
            # Below a hundredth of the threshold a component is forgotten: the map stays small.
            floor = self.policy.isolate_at / 100
            self._score = {c: s * factor for c, s in self._score.items() if s * factor >= floor}
            self._at = now

    def dissent(self, components: Iterable[str], now: float) -> None:
        """One dissent implicating ``components`` (see `implicated`)."""
        self._decay(now)
        for c in components:
            self._score[c] = self._score.get(c, 0.0) + 1.0

    def mark(self, components: Iterable[str], until: float) -> None:
        """The operator's word: ``components`` are under attack until ``until``."""
        for c in components:
            self._marked[c] = max(until, self._marked.get(c, -math.inf))

    def scores(self, now: float) -> Mapping[str, float]:
        self._decay(now)
        return dict(self._score)

    def ends(self, component: str, now: float) -> float:
        """When ``component`` stops being isolated if nothing more happens (now: it is not)."""
        self._decay(now)
        score = self._score.get(component, 0.0)
        fades = now + self.policy.half_life * math.log2(score / self.policy.isolate_at) \
            if score >= self.policy.isolate_at else now
        return max(fades, self._marked.get(component, now))

    def isolated(self, now: float) -> frozenset[str]:
        self._decay(now)
        self._marked = {c: t for c, t in self._marked.items() if t > now}
        return frozenset(c for c, s in self._score.items() if s >= self.policy.isolate_at) \
            | frozenset(self._marked)
