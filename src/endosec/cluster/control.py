"""What the leading gateway tells the others, and what they tell it: plain data, no I/O.

The leader alone runs the controller. After every change it publishes a `ControlView` (who
votes, shadows, is kept level, lends no support, and every executor's state); followers apply
the newest view to their data planes and keep it, so that whichever of them leads next
resumes from it (`endosec.core.controller.Controller.start`). What a follower's data plane
learns that needs the controller (dissent, failures, probation results, behaviour and identity
reports) goes to the leader as a `Report`, and the leader feeds it to its controller as if its
own data plane had seen it, timed by its own clock.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from endosec.core.controller_events import (
    BehaviourObserved,
    IdentityReport,
    ProbationResult,
    VerdictReached,
)
from endosec.core.immune import Antigen, Matched, Memory
from endosec.core.model import ExecutorState, Outcome, Verdict

__all__ = ["Agreements", "ControlError", "ControlView", "Forwarded", "decode_report",
           "encode_report"]


@dataclass(frozen=True, slots=True)
class Agreements:
    """Clean agreements a follower's data plane counted, per executor: they earn trust
    points, which the leader's controller decides by."""

    counts: Mapping[str, int]
    now: float


Forwarded = (VerdictReached | ProbationResult | BehaviourObserved | IdentityReport | Agreements
             | Antigen | Matched)
"""What a follower sends to the leader: controller events, agreements for trust, antigens and
matches for immune memory."""


class ControlError(ValueError):
    """A view or report that is not well-formed (it is ignored, with an alert)."""


def _names(data: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = data.get(key)
    if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
        raise ControlError(f"{key}: expected a list of executor names")
    return tuple(value)


def _str(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise ControlError(f"{key}: expected a string")
    return value


def _int(data: Mapping[str, Any], key: str) -> int:
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ControlError(f"{key}: expected a non-negative integer")
    return value


def _load(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ControlError(f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ControlError("expected a JSON object")
    return data


@dataclass(frozen=True, slots=True)
class ControlView:
    """The boundary's control state as its leader ``leader`` published it, ``seq``-th in its
    term ``term`` (the lease it leads under: a new leader has a new term)."""

    leader: str
    term: int
    seq: int
    serve: str  # the leader's listener, where followers send writes ("": none)
    states: Mapping[str, ExecutorState]
    voters: tuple[str, ...]
    shadows: tuple[str, ...]
    keep_level: tuple[str, ...]
    discounted: tuple[str, ...]
    held: tuple[str, ...]
    # the leader's trust book: points, and the decayed (agreed, dissented) behind behaviour
    trust: Mapping[str, tuple[float, float, float]]
    # the leader's immune memories, as `Memory.record` gives them
    memories: tuple[Mapping[str, Any], ...] = ()

    def __post_init__(self) -> None:
        named = set(self.states)
        for key in ("voters", "shadows", "keep_level", "discounted", "held"):
            if not set(getattr(self, key)) <= named:
                raise ControlError(f"{key}: names an executor without a state")
        if any(self.states[n] is not ExecutorState.ACTIVE for n in self.voters):
            raise ControlError("voters: every voter must be active")
        if not set(self.trust) <= named:
            raise ControlError("trust: names an executor without a state")

    def memory_specs(self) -> list[dict[str, Any]]:
        """The memories as the data plane reads them (without when they were seen)."""
        return [Memory.from_record(m).spec() for m in self.memories]

    def newer_than(self, other: ControlView | None) -> bool:
        return other is None or (self.term, self.seq) != (other.term, other.seq)

    def encode(self) -> bytes:
        return json.dumps({
            "leader": self.leader, "term": self.term, "seq": self.seq, "serve": self.serve,
            "states": {n: s.value for n, s in self.states.items()},
            "voters": list(self.voters), "shadows": list(self.shadows),
            "keep_level": list(self.keep_level), "discounted": list(self.discounted),
            "held": list(self.held), "trust": {n: list(t) for n, t in self.trust.items()},
            "memories": list(self.memories)},
            separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes) -> ControlView:
        data = _load(raw)
        states = data.get("states")
        if not isinstance(states, dict):
            raise ControlError("states: expected an object")
        try:
            parsed = {str(n): ExecutorState(s) for n, s in states.items()}
        except ValueError as exc:
            raise ControlError(f"states: {exc}") from exc
        voters, shadows, keep, discounted, held = (
            _names(data, k) for k in ("voters", "shadows", "keep_level", "discounted", "held"))
        return cls(_str(data, "leader"), _int(data, "term"), _int(data, "seq"),
                   _str(data, "serve"), parsed, voters, shadows, keep, discounted, held,
                   _trust(data), _memories(data))


def _memories(data: Mapping[str, Any]) -> tuple[Mapping[str, Any], ...]:
    found = data.get("memories", [])
    if not isinstance(found, list):
        raise ControlError("memories: expected a list")
    try:
        return tuple(Memory.from_record(m).record() for m in found)
    except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
        raise ControlError(f"memories: {exc}") from exc


def _trust(data: Mapping[str, Any]) -> dict[str, tuple[float, float, float]]:
    found = data.get("trust")
    if not isinstance(found, dict):
        raise ControlError("trust: expected an object")
    book: dict[str, tuple[float, float, float]] = {}
    for name, counts in found.items():
        if not (isinstance(counts, list) and len(counts) == 3 and all(
                isinstance(c, (int, float)) and not isinstance(c, bool) for c in counts)):
            raise ControlError(f"trust.{name}: expected [points, agreed, dissented]")
        book[str(name)] = (float(counts[0]), float(counts[1]), float(counts[2]))
    return book


def encode_report(event: Forwarded) -> bytes:
    """A follower's event for the leader, without its time (the leader's clock decides)."""
    match event:
        case VerdictReached(verdict=v, confirmed=confirmed):
            data: dict[str, Any] = {
                "kind": "verdict", "outcome": v.outcome.value, "agreed": list(v.agreed),
                "dissented": list(v.dissented), "failed": list(v.failed), "reason": v.reason,
                "confirmed": confirmed}
        case ProbationResult(executor=name, agreed=agreed):
            data = {"kind": "probation", "executor": name, "agreed": agreed}
        case BehaviourObserved(executor=name, reason=reason):
            data = {"kind": "behaviour", "executor": name, "reason": reason}
        case IdentityReport(executor=name, ok=ok, detail=detail):
            data = {"kind": "identity", "executor": name, "ok": ok, "detail": detail}
        case Agreements(counts=counts):
            data = {"kind": "agreements", "counts": dict(counts)}
        case Antigen(features=features, counts=counts, sampled=sampled, implicated=names):
            data = {"kind": "antigen", "features": list(features), "counts": list(counts),
                    "sampled": sampled, "implicated": list(names)}
        case Matched(memory=memory, count=count):
            data = {"kind": "matched", "memory": memory, "count": count}
    return json.dumps(data, separators=(",", ":")).encode()


def _bool(data: Mapping[str, Any], key: str) -> bool:
    value = data.get(key)
    if not isinstance(value, bool):
        raise ControlError(f"{key}: expected true or false")
    return value


def decode_report(raw: bytes, now: float) -> Forwarded:
    """The event a report carries, as of ``now``; `ControlError` for anything else."""
    data = _load(raw)
    kind = data.get("kind")
    if kind == "verdict":
        try:
            outcome = Outcome(_str(data, "outcome"))
        except ValueError as exc:
            raise ControlError(f"outcome: {exc}") from exc
        verdict = Verdict(outcome, None, _names(data, "agreed"), _names(data, "dissented"),
                          _names(data, "failed"), _str(data, "reason"))
        return VerdictReached(verdict, now, _bool(data, "confirmed"))
    if kind == "probation":
        return ProbationResult(_str(data, "executor"), _bool(data, "agreed"), now)
    if kind == "behaviour":
        return BehaviourObserved(_str(data, "executor"), _str(data, "reason"), now)
    if kind == "identity":
        return IdentityReport(_str(data, "executor"), _bool(data, "ok"), _str(data, "detail"),
                              now)
    if kind == "agreements":
        counts = data.get("counts")
        if not isinstance(counts, dict) or not all(
                isinstance(n, int) and not isinstance(n, bool) and n >= 0
                for n in counts.values()):
            raise ControlError("counts: expected executor names mapped to counts")
        return Agreements({str(k): v for k, v in counts.items()}, now)
    if kind == "antigen":
        features, counts = data.get("features"), data.get("counts")
        if not (isinstance(features, list) and isinstance(counts, list)
                and len(features) == len(counts)
                and all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 2**64
                        for n in (*features, *counts))):
            raise ControlError("features, counts: expected two lists of counts, as long")
        return Antigen(tuple(features), tuple(counts), _int(data, "sampled"),
                       _names(data, "implicated"), now)
    if kind == "matched":
        return Matched(_str(data, "memory"), now, max(1, _int(data, "count")))
    raise ControlError(f"kind: {kind!r} is not a report")
