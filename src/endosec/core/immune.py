"""Immune memory: what an antigen looked like, so that the next one is met at once.

An antigen is a request after which an executor dissented. Its *signature* is the set of its
features (`endosec.core.antigen`) that are rare in self traffic (requests every executor
agreed on): at most ``max_features`` of them, rarest first, each seen in at most ``rare`` of
the self sample. A request carrying at least ``match`` of a signature's features matches the
memory, and the data plane answers it with the memory's response before any executor does.
A memory not matched for ``decay`` seconds is forgotten. Pure: time is passed in.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, get_args

__all__ = ["RESPONSES", "Antigen", "ImmuneMemory", "ImmunePolicy", "Matched", "Memory", "Response",
           "signature"]

Response = Literal["rotate", "unanimity", "refuse"]
RESPONSES: tuple[str, ...] = get_args(Response)


@dataclass(frozen=True, slots=True)
class ImmunePolicy:
    """How memories are formed, matched and forgotten (the ``immune`` config section)."""

    response: Response = "rotate"
    rare: float = 0.01
    match: float = 0.5
    max_features: int = 16
    min_self: int = 50
    decay: float = 3600.0
    capacity: int = 256

    def __post_init__(self) -> None:
        if self.response not in RESPONSES:
            raise ValueError(f"response: expected one of {', '.join(RESPONSES)}")
        if not 0.0 <= self.rare < 1.0:
            raise ValueError("rare: expected a share in [0, 1)")
        if not 0.0 < self.match <= 1.0:
            raise ValueError("match: expected a share in (0, 1]")
        for key in ("max_features", "capacity"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key}: expected at least 1")
        if self.min_self < 0 or not self.decay > 0:
            raise ValueError("min_self must be >= 0 and decay > 0")


@dataclass(frozen=True, slots=True)
class Memory:
    """One remembered antigen; ``id`` is derived from its signature."""

    id: str
    features: tuple[int, ...]
    need: int
    response: Response
    implicated: tuple[str, ...]
    learned: float
    seen: float
    matches: int = 0

    def spec(self) -> dict[str, Any]:
        """What the data plane reads."""
        return {"id": self.id, "features": list(self.features), "need": self.need,
                "response": self.response, "implicated": list(self.implicated)}

    def record(self) -> dict[str, Any]:
        """What the ledger, the control view and the state file keep."""
        return {**self.spec(), "learned": self.learned, "seen": self.seen,
                "matches": self.matches}

    @classmethod
    def from_record(cls, data: Mapping[str, Any]) -> Memory:
        """A memory kept elsewhere (a state file, a store): ValueError for anything but one."""
        key, features, need = data["id"], data["features"], data["need"]
        implicated, learned, seen = data.get("implicated", []), data["learned"], data["seen"]
        matches, response = data.get("matches", 0), data["response"]
        if not (isinstance(key, str) and isinstance(features, list) and _ints(features)
                and _ints([need, matches]) and isinstance(implicated, list)
                and all(isinstance(n, str) for n in implicated)
                and all(isinstance(t, (int, float)) and not isinstance(t, bool)
                        and math.isfinite(t) for t in (learned, seen))):
            raise ValueError(f"memory {key!r}: malformed")
        ids = tuple(sorted(set(features)))
        if not 1 <= need <= len(ids) or any(not 0 <= f < 2**64 for f in ids) or matches < 0:
            raise ValueError(f"memory {key!r}: bad features, need or matches")
        if response not in RESPONSES:
            raise ValueError(f"memory {key!r}: unknown response {response!r}")
        return cls(id=key, features=ids, need=need, response=response,
                   implicated=tuple(implicated), learned=float(learned), seen=float(seen),
                   matches=matches)


@dataclass(frozen=True, slots=True)
class Antigen:
    """A request after which executors dissented, with how common each of its features is in
    self traffic (``counts`` of ``sampled`` requests)."""

    features: tuple[int, ...]
    counts: tuple[int, ...]
    sampled: int
    implicated: tuple[str, ...]
    now: float


@dataclass(frozen=True, slots=True)
class Matched:
    """Requests met a memory's response (``count`` of them, the last at ``now``)."""

    memory: str
    now: float
    count: int = 1


def _ints(values: list[Any]) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) for v in values)


def signature(features: Sequence[int], counts: Sequence[int], sampled: int,
              policy: ImmunePolicy) -> tuple[int, ...]:
    """The antigen's features that are rare in self traffic, rarest first (ties by id),
    sorted; empty while the self sample is smaller than ``min_self``."""
    if sampled < max(policy.min_self, 1):
        return ()
    rare = [(c, f) for f, c in zip(features, counts, strict=True) if c <= policy.rare * sampled]
    return tuple(sorted(f for _, f in sorted(rare)[:policy.max_features]))


def _id(features: Iterable[int]) -> str:
    return hashlib.sha256(",".join(map(str, features)).encode()).hexdigest()[:16]


@dataclass(slots=True)
class ImmuneMemory:
    """The memories a boundary holds, newest last."""

    policy: ImmunePolicy
    memories: dict[str, Memory] = field(default_factory=dict)

    def learn(self, features: Sequence[int], counts: Sequence[int], sampled: int,
              implicated: Iterable[str], now: float) -> Memory | None:
        """Remember an antigen (a known one is refreshed and learns who else it implicated);
        None if nothing in it is rare enough to recognise it by."""
        sig = signature(features, counts, sampled, self.policy)
        if not sig:
            return None
        key = _id(sig)
        old = self.memories.pop(key, None)
        names = tuple(sorted({*(old.implicated if old else ()), *implicated}))
        memory = Memory(id=key, features=sig, need=max(1, math.ceil(self.policy.match * len(sig))),
                        response=self.policy.response, implicated=names,
                        learned=old.learned if old else now, seen=now,
                        matches=old.matches if old else 0)
        self.memories[key] = memory
        while len(self.memories) > self.policy.capacity:  # the least recently seen goes
            del self.memories[min(self.memories.values(), key=lambda m: m.seen).id]
        return memory

    def matched(self, key: str, now: float, count: int = 1) -> Memory | None:
        """``count`` requests matched ``key``: it is seen again (None if it was forgotten
        since)."""
        old = self.memories.get(key)
        if old is None:
            return None
        self.memories[key] = replace(old, seen=max(old.seen, now),
                                     matches=old.matches + count)
        return self.memories[key]

    def decay(self, now: float) -> list[Memory]:
        """Forget the memories not seen for ``decay`` seconds; those forgotten."""
        gone = [m for m in self.memories.values() if now - m.seen >= self.policy.decay]
        for m in gone:
            del self.memories[m.id]
        return gone

    def adopt(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Take over memories kept elsewhere (a state file, the leader's view)."""
        self.memories = {m.id: m for m in map(Memory.from_record, records)}

    def specs(self) -> list[dict[str, Any]]:
        return [m.spec() for m in self.memories.values()]

    def records(self) -> list[dict[str, Any]]:
        return [m.record() for m in self.memories.values()]
