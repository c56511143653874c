"""Scanning: many error answers to one client in a short time.

A scanner tries paths (or names) that mostly do not exist, and an honest client seldom gets an
error, so the data plane counts error answers per client (HTTP 400 or more, a DNS rcode other
than NOERROR). Each client's count runs over a sliding ``window``; when it reaches ``errors``,
that is one burst, a ``scan`` threat signal naming the client, and the count starts over (a
scanner that goes on makes burst after burst). At most ``clients`` clients are remembered, the
longest quiet forgotten first. Time and counts are passed in; nothing here does I/O.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["ScanPolicy", "Scans"]


@dataclass(frozen=True, slots=True)
class ScanPolicy:
    errors: int = 200
    window: float = 10.0
    clients: int = 10_000

    def __post_init__(self) -> None:
        if self.errors < 1 or self.clients < 1:
            raise ValueError("errors and clients must be at least 1")
        if not (math.isfinite(self.window) and self.window > 0):
            raise ValueError(f"window must be a positive number, got {self.window!r}")


@dataclass(slots=True)
class Scans:
    """Recent error answers per client."""

    policy: ScanPolicy = field(default_factory=ScanPolicy)
    _seen: dict[str, deque[tuple[float, int]]] = field(default_factory=dict)

    def observe(self, counts: Mapping[str, int], now: float) -> list[tuple[str, int]]:
        """Error answers per client since the last call; the clients whose errors made a
        burst, each with its count over the window."""
        p, bursts = self.policy, []
        for client, count in sorted(counts.items()):
            if count <= 0:
                continue
            seen = self._seen.pop(client, deque())  # back in last: the most recent
            seen.append((now, count))
            while seen[0][0] <= now - p.window:
                seen.popleft()
            total = sum(n for _, n in seen)
            if total >= p.errors:
                bursts.append((client, total))
                seen.clear()
            else:
                self._seen[client] = seen
        while len(self._seen) > p.clients:
            del self._seen[next(iter(self._seen))]
        return bursts
