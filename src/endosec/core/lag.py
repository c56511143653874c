"""The latency rule: an executor that answers much later than its peers on the same requests.

An implant that works a few hundred microseconds on each request keeps its output right; only
its timing shows it. Load slows every voter of a request together, so the data plane measures
each voter against the others on the same request: in every unanimous round of three voters or
more, an executor's *lag* is the time it had the request minus that of the fastest of the
others (so one slow peer does not make the rest look fast). Per sample window
the judge gets the median lag (`window_lag`, from binned counts). Different stacks have
different speeds, so each executor is held to its own baseline: the last ``baseline_windows``
windows (each of at least ``min_requests`` unanimous requests) that did not break the rule,
across its runs (a cleanse does not change how fast its stack is, and a run re-infected at once
would otherwise learn its implant), judged once ``first_windows`` are in. A run that breaks
any behaviour rule takes its windows out of the baseline (`LagTrack.forget`): what an
implant did is not normal. A window whose median
lag exceeds the baseline's median by ``floor_us`` and by ``spread`` times the baseline's median
absolute deviation, ``windows`` times in a row, breaks the rule.

The lags are as precise as the data plane is prompt: with many requests under way, replies
queue in the gateway, so the data plane measures only rounds that started while at most four
were under way, and the gateway drops windows while the host's CPU is busy
(``behaviour.busy_above``): the rule sees less under load, it does not see more. Time and
counts are passed in; nothing here does I/O.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["LagPolicy", "LagTrack", "window_lag"]


def window_lag(counts: Sequence[int], bin_us: int, side: int) -> tuple[int, float]:
    """How many lags ``counts`` holds and their median (microseconds, at the middle of its
    bin); bin ``i`` holds lags from ``(i - side) * bin_us``."""
    total = sum(counts)
    if total == 0:
        return 0, 0.0
    half, running = total / 2, 0
    for i, n in enumerate(counts):
        running += n
        if running >= half:
            return total, ((i - side) + 0.5) * bin_us
    raise AssertionError("unreachable: the running count reaches the total")


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
class LagTrack:
    """One executor's lag baseline and how many windows in a row it has been over it."""

    base: deque[tuple[float, float]] = field(default_factory=deque)  # (run, median lag)
    slow: int = 0

    def forget(self, run: float) -> None:
        """Take run ``run``'s windows out of the baseline."""
        self.base = deque(b for b in self.base if b[0] != run)

    def observe(self, run: float, count: int, median: float, policy: LagPolicy) -> str | None:
        """One window of run ``run``; why it breaks the rule (None: it does not, or cannot
        tell)."""
        if count < policy.min_requests:
            return None  # too few requests to say anything: neither counts nor clears
        if len(self.base) >= policy.first_windows:
            usual = statistics.median(b for _, b in self.base)
            spread = statistics.median(abs(b - usual) for _, b in self.base)
            if median - usual >= max(policy.floor_us, policy.spread * spread):
                self.slow += 1
                if self.slow < policy.windows:
                    return None
                return (f"answers {median:.0f} µs behind the fastest of its peers over "
                        f"{count} unanimous requests (usually {usual:.0f} µs)")
        self.slow = 0
        self.base.append((run, median))
        while len(self.base) > policy.baseline_windows:
            self.base.popleft()
        return None
