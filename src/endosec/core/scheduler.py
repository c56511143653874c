"""Schedulers: which spares join the active set, and which actives a rotation retires.

A scheduler is pure policy. The controller hands it profiles, trust (each executor's
credibility, `TrustBook.score`) and its own ``random.Random``; the same inputs and the same
generator state always give the same answer, so a seeded run replays exactly (in the gateway,
the tests and the quantifier's simulator alike).

The set-based policies score a whole candidate active set, lexicographically:

1. fewest *majority-shared* components: a component held by at least two members and by more
   than half of the set. A flaw in it would let a majority answer wrongly in unison (common
   mode, the known limit of DHR), so this is avoided whenever any choice avoids it;
2. then the policy's spread: pairwise Jaccard distance, optionally weighted by trust.

Ties are broken by the generator (candidates are shuffled before the search), so an attacker
cannot predict the schedule from the pool alone. Small pools are searched exhaustively; when
the number of combinations exceeds `EXHAUSTIVE_LIMIT` a greedy search is used instead.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from math import comb
from typing import Protocol

from endosec.core.model import Profile

__all__ = [
    "EXHAUSTIVE_LIMIT",
    "CredibilityWeightedScheduler",
    "MaxDissimilarityScheduler",
    "RandomScheduler",
    "RoundRobinScheduler",
    "Scheduler",
    "majority_shared",
    "scheduler_from_config",
]

#: Most combinations searched exhaustively (16 candidates choose up to 5; tens of ms at worst).
EXHAUSTIVE_LIMIT = 5000


class Scheduler(Protocol):
    """The seam every scheduling policy implements."""

    def choose(self, candidates: Sequence[Profile], keep: Sequence[Profile], count: int,
               trust: Mapping[str, float], rng: random.Random) -> list[str]:
        """Choose ``count`` names from ``candidates`` (spares) to join ``keep`` (actives)."""
        ...

    def retire(self, active: Sequence[Profile], count: int, trust: Mapping[str, float],
               rng: random.Random) -> list[str]:
        """Choose ``count`` names from ``active`` to rotate out."""
        ...


def _check_count(count: int, available: int) -> None:
    if not 0 <= count <= available:
        raise ValueError(f"cannot pick {count} executors from {available}")


def majority_shared(members: Sequence[Profile]) -> int:
    """How far components are shared by a majority: the sum, over every component held by at
    least two members and by more than half of them, of the holders beyond half. 0 is safe."""
    n = len(members)
    held = Counter(c for p in members for c in p.components)
    return sum(k - n // 2 for k in held.values() if k >= 2 and 2 * k > n)


def _trust(trust: Mapping[str, float], name: str) -> float:
    try:
        return trust[name]
    except KeyError:
        raise ValueError(f"no trust score for executor {name!r}") from None


def _weighted_sample(candidates: Sequence[Profile], count: int, trust: Mapping[str, float],
                     rng: random.Random) -> list[str]:
    """``count`` names drawn one at a time without replacement, each draw picking among those
    left with probability proportional to trust (equal trust: a uniform pick). Names with trust
    0 come only once every positive one is taken, uniformly among themselves: the controller
    offers only executors that may vote, so all-zero trust is no reason to leave seats empty."""
    weights = {p.name: _trust(trust, p.name) for p in candidates}
    for name, w in weights.items():
        if not (math.isfinite(w) and w >= 0):
            raise ValueError(f"trust for executor {name!r}: must be finite and >= 0, got {w!r}")
    left = [(name, w) for name, w in weights.items() if w > 0]
    chosen: list[str] = []
    while left and len(chosen) < count:
        (i,) = rng.choices(range(len(left)), weights=[w for _, w in left])
        chosen.append(left.pop(i)[0])
    zero = [name for name, w in weights.items() if w == 0]
    return chosen + rng.sample(zero, count - len(chosen))


@dataclass(frozen=True, slots=True)
class RandomScheduler:
    """The baseline moving target. A spare joins with probability proportional to its trust
    (the more credible, the likelier to vote); a rotation retires uniformly at random, since
    rotating is about wiping footholds, and a quiet foothold keeps its trust."""

    def choose(self, candidates: Sequence[Profile], keep: Sequence[Profile], count: int,
               trust: Mapping[str, float], rng: random.Random) -> list[str]:
        _check_count(count, len(candidates))
        return _weighted_sample(candidates, count, trust, rng)

    def retire(self, active: Sequence[Profile], count: int, trust: Mapping[str, float],
               rng: random.Random) -> list[str]:
        _check_count(count, len(active))
        return rng.sample([p.name for p in active], count)


class RoundRobinScheduler:
    """Every executor takes its turn: the spare idle longest joins, the active serving longest
    leaves. Names it has never chosen count as oldest, in the order given."""

    __slots__ = ("_chosen_at", "_clock")

    def __init__(self) -> None:
        self._clock = 0
        self._chosen_at: dict[str, int] = {}

    def _oldest(self, pool: Sequence[Profile], count: int) -> list[str]:
        order = sorted(range(len(pool)), key=lambda i: (self._chosen_at.get(pool[i].name, -1), i))
        return [pool[i].name for i in order[:count]]

    def choose(self, candidates: Sequence[Profile], keep: Sequence[Profile], count: int,
               trust: Mapping[str, float], rng: random.Random) -> list[str]:
        _check_count(count, len(candidates))
        chosen = self._oldest(candidates, count)
        for name in chosen:
            self._clock += 1
            self._chosen_at[name] = self._clock
        return chosen

    def retire(self, active: Sequence[Profile], count: int, trust: Mapping[str, float],
               rng: random.Random) -> list[str]:
        _check_count(count, len(active))
        return self._oldest(active, count)


Spread = Callable[[Sequence[Profile]], float]


def _search_choose(candidates: Sequence[Profile], keep: Sequence[Profile], count: int,
                   spread: Spread, rng: random.Random) -> list[str]:
    _check_count(count, len(candidates))
    pool = list(candidates)
    rng.shuffle(pool)
    fixed = list(keep)

    def value(extra: Sequence[Profile]) -> tuple[int, float]:
        members = fixed + list(extra)
        return -majority_shared(members), round(spread(members), 9)

    if comb(len(pool), count) <= EXHAUSTIVE_LIMIT:
        return [p.name for p in max(combinations(pool, count), key=value)]
    chosen: list[Profile] = []
    for _ in range(count):
        rest = [p for p in pool if p not in chosen]
        chosen.append(max(rest, key=lambda p: value([*chosen, p])))
    return [p.name for p in chosen]


def _search_retire(active: Sequence[Profile], count: int, spread: Spread,
                   rng: random.Random) -> list[str]:
    _check_count(count, len(active))
    stay = set(_search_choose(active, (), len(active) - count, spread, rng))
    return [p.name for p in active if p.name not in stay]


class _Distances:
    """Pairwise Jaccard distances, memoised for one search."""

    __slots__ = ("_memo",)

    def __init__(self) -> None:
        self._memo: dict[tuple[str, str], float] = {}

    def __call__(self, a: Profile, b: Profile) -> float:
        key = (a.name, b.name) if a.name < b.name else (b.name, a.name)
        d = self._memo.get(key)
        if d is None:
            d = self._memo[key] = a.jaccard_distance(b)
        return d


def _pair_sum(distance: _Distances) -> Spread:
    def spread(members: Sequence[Profile]) -> float:
        return sum(distance(a, b) for a, b in combinations(members, 2))
    return spread


@dataclass(frozen=True, slots=True)
class MaxDissimilarityScheduler:
    """Maximise the total pairwise Jaccard distance of the resulting active set."""

    def choose(self, candidates: Sequence[Profile], keep: Sequence[Profile], count: int,
               trust: Mapping[str, float], rng: random.Random) -> list[str]:
        return _search_choose(candidates, keep, count, _pair_sum(_Distances()), rng)

    def retire(self, active: Sequence[Profile], count: int, trust: Mapping[str, float],
               rng: random.Random) -> list[str]:
        return _search_retire(active, count, _pair_sum(_Distances()), rng)


def _credibility(distance: _Distances, trust: Mapping[str, float]) -> Spread:
    def spread(members: Sequence[Profile]) -> float:
        total = 0.0
        for p in members:
            others = [distance(p, q) for q in members if q is not p]
            total += _trust(trust, p.name) * (sum(others) / len(others) if others else 1.0)
        return total
    return spread


@dataclass(frozen=True, slots=True)
class CredibilityWeightedScheduler:
    """Historical credibility times dissimilarity: maximise the sum over members of
    ``trust x mean distance to the other members``. With equal trust this is max-dissimilarity;
    with equal distances it picks the most trusted. Rotation retires the least credible."""

    def choose(self, candidates: Sequence[Profile], keep: Sequence[Profile], count: int,
               trust: Mapping[str, float], rng: random.Random) -> list[str]:
        return _search_choose(candidates, keep, count, _credibility(_Distances(), trust), rng)

    def retire(self, active: Sequence[Profile], count: int, trust: Mapping[str, float],
               rng: random.Random) -> list[str]:
        return _search_retire(active, count, _credibility(_Distances(), trust), rng)


_POLICIES: dict[str, Callable[[], Scheduler]] = {
    "random": RandomScheduler,
    "round-robin": RoundRobinScheduler,
    "max-dissimilarity": MaxDissimilarityScheduler,
    "credibility-weighted": CredibilityWeightedScheduler,
}


def scheduler_from_config(name: str) -> Scheduler:
    """A fresh scheduler for a configured policy name."""
    try:
        return _POLICIES[name]()
    except KeyError:
        raise ValueError(
            f"scheduler policy: unknown {name!r}; choose one of {', '.join(_POLICIES)}"
        ) from None
