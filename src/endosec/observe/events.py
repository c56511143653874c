"""Operational events (dissent, quarantine, cleanse, rotation, no-quorum, ...) as JSON lines.

One JSON object per line, always with ``ts`` (UNIX seconds) and ``event``; the other keys depend
on the event. Events go to a file when configured, else to standard error, and the last few are
kept in memory for the admin status page. The events an auditor needs (verdicts with dissent,
controller and admin actions, configuration loads) are also appended to the signed ledger.
"""

from __future__ import annotations

import json
import sys
import time
from collections import deque
from pathlib import Path
from typing import IO, Any

from endosec.observe.ledger import Ledger

__all__ = ["LEDGER_KINDS", "EventLog"]

# Event name -> ledger record kind, for the events that go on the tamper-evident record.
LEDGER_KINDS = {
    "dissent": "verdict",
    "no-quorum": "verdict",
    "all-failed": "verdict",
    "in-doubt": "verdict",
    "quarantine": "controller-action",
    "cleanse": "controller-action",
    "cleansed": "controller-action",
    "cleanse-failed": "controller-action",
    "activated": "controller-action",
    "activate-failed": "controller-action",
    "rotation": "controller-action",
    "threat": "controller-action",
    "isolation": "controller-action",
    "alert": "controller-action",
    "unhealthy": "controller-action",
    "outbound-refused": "controller-action",
    "behaviour": "verdict",
    "start-failed": "controller-action",
    "admin": "admin-action",
    "config-loaded": "config-load",
    "journal-opened": "config-load",
    "checkpoint": "checkpoint",
    "restored": "controller-action",
    "trust-level": "controller-action",
    "attestation": "attestation",
    "cluster-joined": "cluster",
    "cluster-leader": "cluster",
    "cluster-follower": "cluster",
    "cluster-store-lost": "cluster",
    "cluster-store-back": "cluster",
    "cluster-stale": "cluster",
    "immune-memory": "immune",
    "immune-match": "immune",
    "immune-forgotten": "immune",
    "immune-detector": "immune",
}


class EventLog:
    __slots__ = ("_out", "_owned", "ledger", "recent")

    def __init__(self, path: Path | None = None, *, keep: int = 200,
                 ledger: Ledger | None = None) -> None:
        self.ledger = ledger
        self._owned = path is not None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._out: IO[str] = path.open("a", encoding="utf-8") if path is not None else sys.stderr
        self.recent: deque[dict[str, Any]] = deque(maxlen=keep)

    def emit(self, event: str, **fields: Any) -> dict[str, Any]:
        now = time.time()
        record = {"ts": round(now, 6), "event": event, **fields}
        self.recent.append(record)
        kind = LEDGER_KINDS.get(event)
        if self.ledger is not None and kind is not None:
            self.ledger.append(kind, {"event": event, **fields}, now=now)
        self._out.write(json.dumps(record, separators=(",", ":"), default=str) + "\n")
        self._out.flush()
        return record

    def close(self) -> None:
        if self.ledger is not None:
            self.ledger.close()
        if self._owned:
            self._out.close()
