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
        self._dirty = False  # matches not yet in the file
        # Requests sampled and how many carried each feature (the data plane's self sketch).
        self.self_counts: Callable[[list[int]], tuple[int, list[int]]] = \
            lambda features: (0, [0] * len(features))
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
        """Keep memories in ``state_dir``; take back what an earlier run kept (a file that
        cannot be read is set aside, with an alert: the gateway starts without them)."""
        self._file = state_dir / "immune.json"
        if not self._file.exists():
            return
        try:
            self.memory.adopt(json.loads(self._file.read_text())["memories"])
        except (OSError, ValueError, KeyError, TypeError, ArithmeticError) as exc:
            kept = self._file.with_suffix(".unreadable")
            os.replace(self._file, kept)
            self.events.emit("alert", level="error", message=f"immune memory: {self._file} "
                             f"is unreadable ({exc}); kept as {kept}, starting without it")
            return
        self._changed()

    def specs(self) -> list[dict[str, Any]]:
        """What the data plane matches requests against."""
        return self.memory.specs() if self.enabled else []

    def antigen(self, antigen: Antigen) -> None:
        """An antigen this gateway's data plane saw: an example for the detectors; a memory,
        decided here or by the leader."""
        self.antigens.append(antigen.features)
        if not self.enabled:
            return
        if self.forward is not None:
            self.forward(antigen)
            return
        self._learn(antigen)

    def _learn(self, antigen: Antigen) -> None:
        memory = self.memory.learn(antigen.features, antigen.counts, antigen.sampled,
                                   antigen.implicated, antigen.now)
        if memory is not None:
            self._learned.inc()
            self.events.emit("immune-memory", **memory.record())
            self._kept()

    def matched(self, tally: Mapping[str, Any], now: float) -> None:
        """Requests the data plane met with a memory's response since the last tally (one
        event per memory, with the count and the last of them)."""
        count = int(tally["count"])
        self._matches.labels(str(tally["response"])).inc(count)
        self.events.emit("immune-match", memory=tally["memory"], response=tally["response"],
                         count=count, request=tally["request"], method=tally["method"],
                         path=tally["path"], client=tally.get("client"))
        if str(tally["memory"]) not in self.memory.memories:
            return  # the detector's, or forgotten since
        if self.forward is not None:
            self.forward(Matched(str(tally["memory"]), now, count))
        elif self.memory.matched(str(tally["memory"]), now, count) is not None:
            self._dirty = True

    def sampled(self, selves: list[list[int]]) -> None:
        """Self requests the data plane sampled."""
        self.selves.extend(tuple(s) for s in selves)

    def learned(self, detector: dict[str, Any]) -> None:
        """The boundary's newest detector (`DetectorSpec`), for the data plane; one the data
        plane refuses is not kept (the one before stays)."""
        before, self.detector = self.detector, detector
        try:
            self._changed()
        except ValueError as exc:
            self.detector = before
            self.events.emit("alert", level="error",
                             message=f"immune: detector {detector['id']} refused: {exc}")
            return
        self.events.emit("immune-detector", id=detector["id"], threshold=detector["threshold"],
                         response=detector["response"])

    def heard(self, report: Antigen | Matched) -> None:
        """A follower's report, at the leader. An antigen's features must be rare in this
        gateway's self traffic too: a follower cannot make common requests a memory."""
        if isinstance(report, Matched):
            if self.memory.matched(report.memory, report.now, report.count) is not None:
                self._dirty = True
            return
        if not self.enabled:
            return
        sampled, counts = self.self_counts(list(report.features))
        if sampled < self.memory.policy.min_self:  # too little traffic here to judge by
            self._learn(report)
            return
        # Each feature as common as it is in the commoner of the two samples.
        commoner = [max(c * sampled, own * report.sampled)
                    for c, own in zip(report.counts, counts, strict=True)]
        self._learn(Antigen(report.features, tuple(commoner), sampled * report.sampled,
                            report.implicated, report.now))

    def review(self, now: float) -> None:
        """Forget what was not seen for the decay time (the leader's, or a lone gateway's);
        keep what matches changed."""
        if self.forward is not None:
            return
        gone = self.memory.decay(now)
        for m in gone:
            self.events.emit("immune-forgotten", id=m.id, matches=m.matches,
                             learned=m.learned, seen=m.seen)
        if gone:
            self._kept()
        elif self._dirty:
            self._save()

    def adopt(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Apply the leader's memories (the data plane only when what it matches changed)."""
        specs = self.memory.specs()
        self.memory.adopt(records)
        if self.memory.specs() != specs:
            self._kept()

    def status(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "response": self.memory.policy.response,
                "memories": [_shown(m) for m in self.memory.memories.values()],
                "detector": None if self.detector is None else {
                    k: self.detector[k] for k in ("id", "threshold", "response")},
                "examples": {"antigens": len(self.antigens), "self": len(self.selves)}}

    def _kept(self) -> None:
        self._changed()
        self._save()

    def _save(self) -> None:
        self._dirty = False
        if self._file is None:
            return
        tmp = self._file.with_suffix(".tmp")
        with tmp.open("w") as f:
            json.dump({"memories": self.memory.records()}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._file)


def _shown(m: Memory) -> dict[str, Any]:
    return {"id": m.id, "features": len(m.features), "need": m.need, "response": m.response,
            "implicated": list(m.implicated), "learned": m.learned, "seen": m.seen,
            "matches": m.matches}
