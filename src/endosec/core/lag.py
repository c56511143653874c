"""The latency rule: an executor that answers much later than its peers on the same requests.

An implant that works a few hundred microseconds on each request keeps its output right; only
its timing shows it. Load slows every voter of a request together, so the data plane measures
each voter against the others on the same request: in every unanimous round of three voters or
more, an executor's *lag* is the time it had the request minus that of the fastest of the
others (so one slow peer does not make the rest look fast). A stack serves some routes slower
than others (the data plane names a request's route by its method and path, or question type
and name, with digits folded), so each executor is held to its own baseline per route, and a
workload that moves to a route one stack serves slowly moves nothing.

Lags arrive as counts per lag (`Lags`). Per route they gather into windows of
``route_requests`` (few, so that a route's baseline forms soon however thinly the traffic
spreads); a route's baseline is the median of its last ``baseline_windows`` window medians,
across the executor's runs (a cleanse does not change how fast its stack is, and a run
re-infected at once would otherwise learn its implant), formed once ``first_windows`` are in.
Its *bar* is the baseline plus ``floor_us`` or ``spread`` times the window medians' median
absolute deviation, whichever is more. Judging pools every route with a baseline: each lag is
taken past its own route's bar, and a window of at least ``min_requests`` such lags (those
since the last sample) whose median is at or past 0 (most requests slower than their route
allows), ``windows`` times in a row, breaks the rule. Pooling keeps detection as quick as the
whole traffic, however it spreads over routes. A route window over its bar, or closed while
the executor is, does not enter its baseline, and a run that breaks any behaviour rule takes
its windows out (`LagTrack.forget`): what an implant did is not normal.

The lags are as precise as the data plane is prompt: with many requests under way, replies
queue in the gateway, so the data plane measures only rounds that started while at most four
were under way, and the gateway drops lags taken while the host's CPU is busy
(``behaviour.busy_above``): the rule sees less under load, it does not see more. Time and
counts are passed in; nothing here does I/O.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["LagPolicy", "LagTrack", "Lags", "median_lag"]

#: Per route, how many lags of each size (microseconds) were seen.
Lags = Mapping[str, Mapping[float, int]]


def median_lag(counts: Mapping[float, int]) -> float:
    """The median of lags counted by size (0.0: none)."""
    total = sum(counts.values())
    half, running = total / 2, 0
    for lag in sorted(counts):
        running += counts[lag]
        if running >= half and running > 0:
            return lag
    return 0.0


@dataclass(frozen=True, slots=True)
class LagPolicy:
    min_requests: int = 30
    route_requests: int = 10
    first_windows: int = 3
    baseline_windows: int = 60
    floor_us: float = 300.0
    spread: float = 2.0
    windows: int = 3

    def __post_init__(self) -> None:
        if min(self.min_requests, self.route_requests, self.first_windows, self.windows) < 1 \
                or self.baseline_windows < self.first_windows:
            raise ValueError("min_requests, route_requests, first_windows and windows must be "
                             "at least 1, and baseline_windows at least first_windows")
        if not (math.isfinite(self.floor_us) and self.floor_us > 0
                and math.isfinite(self.spread) and self.spread >= 0):
            raise ValueError("floor_us must be positive and spread at least 0")


@dataclass(slots=True)
class _Route:
    pending: Counter[float] = field(default_factory=Counter)  # the window under way
    base: deque[tuple[float, float]] = field(default_factory=deque)  # (run, median lag)

    def usual(self, policy: LagPolicy) -> tuple[float, float] | None:
        """The baseline and the bar (None: not formed yet)."""
        if len(self.base) < policy.first_windows:
            return None
        usual = statistics.median(b for _, b in self.base)
        spread = statistics.median(abs(b - usual) for _, b in self.base)
        return usual, usual + max(policy.floor_us, policy.spread * spread)


@dataclass(slots=True)
class LagTrack:
    """One executor's lag baselines, per route, and the pooled window under way."""

    routes: dict[str, _Route] = field(default_factory=dict)
    past: Counter[float] = field(default_factory=Counter)  # lags past their route's bar
    later: Counter[float] = field(default_factory=Counter)  # lags past their route's usual
    seen: Counter[str] = field(default_factory=Counter)  # the window's requests per route
    slow: int = 0  # windows in a row over the bar

    def forget(self, run: float) -> None:
        """Take run ``run``'s windows out of the baselines."""
        for r in self.routes.values():
            r.base = deque(b for b in r.base if b[0] != run)

    def restart(self) -> None:
        """A new run, or a pause in voting: windows under way and counts in a row start over."""
        for r in self.routes.values():
            r.pending.clear()
        self.past.clear()
        self.later.clear()
        self.seen.clear()
        self.slow = 0

    def observe(self, run: float, lags: Lags, policy: LagPolicy) -> str | None:
        """Lags of run ``run`` since the last call; why they break the rule (None: they do
        not, or cannot tell yet)."""
        for name, counts in sorted(lags.items()):
            route = self.routes.setdefault(name, _Route())
            usual = route.usual(policy)
            if usual is not None:
                for lag, n in counts.items():
                    self.past[lag - usual[1]] += n
                    self.later[lag - usual[0]] += n
                self.seen[name] += sum(counts.values())
            route.pending.update(counts)
            if sum(route.pending.values()) >= policy.route_requests:
                median = median_lag(route.pending)
                if self.slow == 0 and (usual is None or median < usual[1]):
                    route.base.append((run, median))
                    while len(route.base) > policy.baseline_windows:
                        route.base.popleft()
                route.pending.clear()
        count = sum(self.past.values())
        if count < policy.min_requests:
            return None
        over, later = median_lag(self.past) >= 0, median_lag(self.later)
        routes = ", ".join(r for r, _ in self.seen.most_common(3))
        self.past.clear()
        self.later.clear()
        self.seen.clear()
        self.slow = self.slow + 1 if over else 0
        if self.slow < policy.windows:
            return None
        return (f"answers {later:.0f} µs later than usual behind the fastest of its peers "
                f"over {count} unanimous requests ({routes})")
