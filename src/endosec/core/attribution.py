"""Which clients cause dissent: divergence must not become a lever against the boundary.

Heterogeneous executors legitimately disagree on some inputs; an attacker who finds one can
send it over and over to quarantine executor after executor. So every quarantine is traced to
the client whose request caused it, and to the request (its method and path, or DNS question).
An implant dissents on whatever requests pass, and is gone once its executor is cleansed; a
benign divergence is in the input, and the same request makes an executor dissent again after
it came back clean. So a client whose *same* request causes ``quarantines`` of them within
``window`` seconds is held responsible: for ``block`` seconds the dissent its requests cause no
longer counts against executors, and (where its address cannot be forged: TCP, not UDP) it is
refused. Time is passed in; nothing here does I/O.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

__all__ = ["Attribution", "AttributionPolicy"]


@dataclass(frozen=True, slots=True)
class AttributionPolicy:
    quarantines: int = 2  # quarantines one client's same request may cause within the window
    window: float = 60.0
    block: float = 300.0

    def __post_init__(self) -> None:
        if self.quarantines < 1:
            raise ValueError(f"quarantines must be at least 1, got {self.quarantines!r}")
        for name in ("window", "block"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")


@dataclass(slots=True)
class Attribution:
    """The quarantines each client caused, and the clients held responsible until when."""

    policy: AttributionPolicy = field(default_factory=AttributionPolicy)
    _caused: dict[tuple[str, str], deque[float]] = field(default_factory=dict)
    _held: dict[str, float] = field(default_factory=dict)  # client -> held until

    def held(self, client: str | None, now: float) -> bool:
        """Whether dissent caused by ``client`` must not count against executors now."""
        if client is None:
            return False
        until = self._held.get(client)
        if until is not None and until <= now:
            del self._held[client]
            return False
        return until is not None

    def caused(self, client: str | None, request: str, quarantines: int, now: float) -> bool:
        """``client``'s ``request`` caused ``quarantines`` quarantines; True when that makes
        the client responsible (from now on, until ``now + block``)."""
        if client is None or quarantines == 0 or self.held(client, now):
            return False
        horizon = now - self.policy.window
        for key in [k for k, t in self._caused.items() if t[-1] <= horizon]:
            del self._caused[key]  # bounded by what happened within one window
        times = self._caused.setdefault((client, request), deque())
        times.extend([now] * quarantines)
        while times and times[0] <= horizon:
            times.popleft()
        if len(times) < self.policy.quarantines:
            return False
        for key in [k for k in self._caused if k[0] == client]:
            del self._caused[key]
        self._held[client] = now + self.policy.block
        return True

    def refused(self, now: float) -> tuple[str, ...]:
        """The clients held responsible now, sorted."""
        return tuple(sorted(c for c in list(self._held) if self.held(c, now)))
