"""The latency rule: an executor that answers much later than its peers on the same requests.

An implant that works a few hundred microseconds on each request keeps its output right; only
its timing shows it. Load slows every voter of a request together, so the data plane measures
each voter against the others on the same request: in every unanimous round of three voters or
more, an executor's *lag* is the time it had the request minus that of the fastest of the
others (so one slow peer does not make the rest look fast). A stack serves some routes slower
than others (the data plane names a request's route by its method and path, or question type
and name, with digits folded), so lags are judged per executor and route: a workload that
moves to a route one stack serves slowly changes no route's figures.

Lags arrive as counts per lag (`Lags`) and gather per route until a window holds
``min_requests``; the judge takes the window's median. Different stacks have different
speeds, so each executor is held to its own baseline per route: the last
``baseline_windows`` windows that did not break the rule, across its runs (a cleanse does not
change how fast its stack is, and a run re-infected at once would otherwise learn its
implant), judged once ``first_windows`` are in. A run that breaks any behaviour rule takes its
windows out of the baseline (`LagTrack.forget`): what an implant did is not normal. A window
whose median lag exceeds the baseline's median by ``floor_us`` and by ``spread`` times the
baseline's median absolute deviation, ``windows`` times in a row on one route, breaks the rule.

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
    first_windows: int = 5
    baseline_windows: int = 60
    floor_us: float = 300.0
    spread: float = 2.0
    windows: int = 3

    def __post_init__(self) -> None:
        if min(self.min_requests, self.first_windows, self.windows) < 1 \
                or self.baseline_windows < self.first_windows:
            raise ValueError("min_requests, first_windows and windows must be at least 1, and "
                             "baseline_windows at least first_windows")
        if not (math.isfinite(self.floor_us) and self.floor_us > 0
                and math.isfinite(self.spread) and self.spread >= 0):
            raise ValueError("floor_us must be positive and spread at least 0")


@dataclass(slots=True)
class _Route:
    pending: Counter[float] = field(default_factory=Counter)  # the window under way
    base: deque[tuple[float, float]] = field(default_factory=deque)  # (run, median lag)
    slow: int = 0  # windows in a row over the baseline

    def close(self, name: str, run: float, policy: LagPolicy) -> str | None:
        """Judge the window under way (it holds enough requests) and start the next."""
        count, median = sum(self.pending.values()), median_lag(self.pending)
        self.pending.clear()
        if len(self.base) >= policy.first_windows:
            usual = statistics.median(b for _, b in self.base)
            spread = statistics.median(abs(b - usual) for _, b in self.base)
            if median - usual >= max(policy.floor_us, policy.spread * spread):
                self.slow += 1
                if self.slow < policy.windows:
                    return None
                return (f"answers {median:.0f} µs behind the fastest of its peers on {name} "
                        f"over {count} unanimous requests (usually {usual:.0f} µs)")
        self.slow = 0
        self.base.append((run, median))
        while len(self.base) > policy.baseline_windows:
            self.base.popleft()
        return None


@dataclass(slots=True)
class LagTrack:
    """One executor's lag baselines, per route."""

    routes: dict[str, _Route] = field(default_factory=dict)

    def forget(self, run: float) -> None:
        """Take run ``run``'s windows out of the baselines."""
        for r in self.routes.values():
            r.base = deque(b for b in r.base if b[0] != run)

    def restart(self) -> None:
        """A new run, or a pause in voting: windows under way and counts in a row start over."""
        for r in self.routes.values():
            r.pending.clear()
            r.slow = 0

    def observe(self, run: float, lags: Lags, policy: LagPolicy) -> str | None:
        """Lags of run ``run`` since the last call; why they break the rule (None: they do
        not, or cannot tell yet)."""
        why = None
        for name, counts in sorted(lags.items()):
            route = self.routes.setdefault(name, _Route())
            route.pending.update(counts)
            if sum(route.pending.values()) >= policy.min_requests:
                slow = route.close(name, run, policy)
                why = why or slow
        return why
