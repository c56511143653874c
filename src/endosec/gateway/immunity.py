"""Immune memory in a running gateway: learn from antigens, publish memories, forget them.

The decisions are `endosec.core.immune`'s; this wires them to the data plane (antigens and
matches come up in its events; memories go down in snapshots), to the event log (every memory
formed, matched and forgotten is on the ledger), to metrics, and to a state file, so that a
restarted gateway remembers. While another gateway leads the boundary, antigens and matches go
to the leader, whose memories every gateway applies.
"""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from prometheus_client import Counter, Gauge

from endosec.config import ImmuneConfig
from endosec.core.immune import Antigen, ImmuneMemory, Matched, Memory
from endosec.observe.events import EventLog
from endosec.observe.metrics import GatewayMetrics

__all__ = ["Immunity"]

#: Labelled examples of each kind kept for the learned detectors (the oldest go first).
_KEPT = 2000


class Immunity:
    """A gateway's immune memory."""

    def __init__(self, config: ImmuneConfig, events: EventLog, metrics: GatewayMetrics,
                 changed: Callable[[], None]) -> None:
        self.enabled = config.enabled
        self.memory = ImmuneMemory(config.policy())
        # This gateway's labelled traffic, for the learned detectors (kept only when learning):
        # antigens it saw (label 1) and self requests its data plane sampled (label 0).
        keep = _KEPT if config.learn.enabled else 0
        self.antigens: deque[tuple[int, ...]] = deque(maxlen=keep)
        self.selves: deque[tuple[int, ...]] = deque(maxlen=keep)
        # The boundary's learned detector, as the data plane reads it (None: none yet).
        self.detector: dict[str, Any] | None = None
        self.events = events
        self._changed = changed
        self._file: Path | None = None
        # While following: where antigens and matches go instead (the leader's outbox).
        self.forward: Callable[[Antigen | Matched], None] | None = None
        r = metrics.registry
        self._matches = Counter("endosec_immune_matches",
                                "Requests that matched an immune memory, per response",
                                ["response"], registry=r)
        self._learned = Counter("endosec_immune_learned",
                                "Antigens remembered (new or refreshed memories)", registry=r)
        Gauge("endosec_immune_memories", "Immune memories held", registry=r).set_function(
            lambda: float(len(self.memory.memories)))

    def open(self, state_dir: Path) -> None:
        """Keep memories in ``state_dir``; take back what an earlier run kept."""
        self._file = state_dir / "immune.json"
        if self._file.exists():
            self.memory.adopt(json.loads(self._file.read_text())["memories"])
            self._changed()

    def specs(self) -> list[dict[str, Any]]:
        """What the data plane matches requests against."""
        return self.memory.specs() if self.enabled else []

    def antigen(self, antigen: Antigen) -> None:
        if not self.enabled:
            return
        self.antigens.append(antigen.features)
        if self.forward is not None:
            self.forward(antigen)
            return
        memory = self.memory.learn(antigen.features, antigen.counts, antigen.sampled,
                                   antigen.implicated, antigen.now)
        if memory is not None:
            self._learned.inc()
            self.events.emit("immune-memory", **memory.record())
            self._kept()

    def matched(self, event: Mapping[str, Any], now: float) -> None:
        """The data plane met a request with a memory's response."""
        self._matches.labels(str(event["response"])).inc()
        self.events.emit("immune-match", memory=event["memory"], response=event["response"],
                         request=event["request"], method=event["method"],
                         path=event["path"], client=event.get("client"))
        if self.forward is not None:
            self.forward(Matched(str(event["memory"]), now))
        else:
            self.memory.matched(str(event["memory"]), now)

    def sampled(self, selves: list[list[int]]) -> None:
        """Self requests the data plane sampled."""
        self.selves.extend(tuple(s) for s in selves)

    def learned(self, detector: dict[str, Any]) -> None:
        """The boundary's newest detector (`DetectorSpec`), for the data plane."""
        self.detector = detector
        self.events.emit("immune-detector", id=detector["id"], threshold=detector["threshold"],
                         response=detector["response"])
        self._changed()

    def heard(self, report: Antigen | Matched) -> None:
        """A follower's report, at the leader."""
        if isinstance(report, Matched):
            self.memory.matched(report.memory, report.now)
        else:
            self.antigen(report)

    def review(self, now: float) -> None:
        """Forget what was not seen for the decay time (the leader's, or a lone gateway's)."""
        if self.forward is not None:
            return
        gone = self.memory.decay(now)
        for m in gone:
            self.events.emit("immune-forgotten", id=m.id, matches=m.matches,
                             learned=m.learned, seen=m.seen)
        if gone:
            self._kept()

    def adopt(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Apply the leader's memories."""
        if self.memory.records() != list(records):
            self.memory.adopt(records)
            self._kept()

    def status(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "response": self.memory.policy.response,
                "memories": [_shown(m) for m in self.memory.memories.values()],
                "detector": None if self.detector is None else {
                    k: self.detector[k] for k in ("id", "threshold", "response")},
                "examples": {"antigens": len(self.antigens), "self": len(self.selves)}}

    def _kept(self) -> None:
        self._changed()
        if self._file is not None:
            tmp = self._file.with_suffix(".tmp")
            tmp.write_text(json.dumps({"memories": self.memory.records()}))
            os.replace(tmp, self._file)


def _shown(m: Memory) -> dict[str, Any]:
    return {"id": m.id, "features": len(m.features), "need": m.need, "response": m.response,
            "implicated": list(m.implicated), "learned": m.learned, "seen": m.seen,
            "matches": m.matches}
