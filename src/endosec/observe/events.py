"""Operational events (dissent, quarantine, cleanse, rotation, no-quorum, ...) as JSON lines.

One JSON object per line, always with ``ts`` (UNIX seconds) and ``event``; the other keys depend
on the event. Events go to a file when configured, else to standard error, and the last few are
kept in memory for the admin status page.
"""

from __future__ import annotations

import json
import sys
import time
from collections import deque
from pathlib import Path
from typing import IO, Any

__all__ = ["EventLog"]


class EventLog:
    __slots__ = ("_out", "_owned", "recent")

    def __init__(self, path: Path | None = None, *, keep: int = 200) -> None:
        self._owned = path is not None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._out: IO[str] = path.open("a", encoding="utf-8") if path is not None else sys.stderr
        self.recent: deque[dict[str, Any]] = deque(maxlen=keep)

    def emit(self, event: str, **fields: Any) -> dict[str, Any]:
        record = {"ts": round(time.time(), 6), "event": event, **fields}
        self.recent.append(record)
        self._out.write(json.dumps(record, separators=(",", ":"), default=str) + "\n")
        self._out.flush()
        return record

    def close(self) -> None:
        if self._owned:
            self._out.close()
