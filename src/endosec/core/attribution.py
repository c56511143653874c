"""Which clients cause dissent: divergence must not become a lever against the boundary.

Heterogeneous executors legitimately disagree on some inputs; an attacker who finds one can
send it over and over to quarantine executor after executor. So every quarantine is traced to
the client whose request caused it. A client that causes ``quarantines`` of them within
``window`` seconds is held responsible: the dissent its requests cause no longer counts
against executors, and (where its address cannot be forged: TCP, not UDP) it is refused for
``block`` seconds. Time is passed in; nothing here does I/O.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

__all__ = ["Attribution", "AttributionPolicy"]


@dataclass(frozen=True, slots=True)
class AttributionPolicy:
    quarantines: int = 2  # quarantines one client may cause within the window
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
    _caused: dict[str, deque[float]] = field(default_factory=dict)
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

    def caused(self, client: str | None, quarantines: int, now: float) -> bool:
        """``client``'s request caused ``quarantines`` quarantines; True when that makes it
        responsible (from now on, until ``now + block``)."""
        if client is None or quarantines == 0 or self.held(client, now):
            return False
        times = self._caused.setdefault(client, deque())
        times.extend([now] * quarantines)
        while times and times[0] <= now - self.policy.window:
            times.popleft()
        if len(times) < self.policy.quarantines:
            return False
        del self._caused[client]
        self._held[client] = now + self.policy.block
        return True

    def refused(self, now: float) -> tuple[str, ...]:
        """The clients held responsible now, sorted."""
        return tuple(sorted(c for c in list(self._held) if self.held(c, now)))
