"""The host's CPU utilisation, from the kernel's counters (``/proc/stat``): what the
controller weighs before an optional rotation, which costs a restart and a journal replay."""

from __future__ import annotations

from pathlib import Path

__all__ = ["CpuLoad"]

_STAT = Path("/proc/stat")


class CpuLoad:
    """Busy share of all CPUs between two calls of `sample` (None where the kernel does not
    say: a host without ``/proc/stat`` never defers)."""

    __slots__ = ("_last", "_path")

    def __init__(self, path: Path = _STAT) -> None:
        self._path = path
        self._last = self._read()

    def _read(self) -> tuple[int, int] | None:
        try:
            with self._path.open("rb") as f:
                fields = f.readline().split()
        except OSError:
            return None
        if len(fields) < 5 or fields[0] != b"cpu":
            return None
        ticks = [int(x) for x in fields[1:]]
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
        return sum(ticks[:8]), idle

    def sample(self) -> float | None:
        now, last = self._read(), self._last
        self._last = now
        if now is None or last is None or now[0] <= last[0]:
            return None
        total, idle = now[0] - last[0], now[1] - last[1]
        return min(1.0, max(0.0, 1.0 - idle / total))
