"""The DHR vocabulary as plain data: profiles, executor states, outputs and verdicts.

Everything here is pure: no sockets, no clocks, no global state. Protocol adapters build
`Output`s, the arbiter turns them into `Verdict`s, and the controller reads both.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Hashable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

__all__ = [
    "Canonical",
    "Canonicaliser",
    "ErrorKind",
    "ExecutorState",
    "Outcome",
    "Output",
    "Profile",
    "Verdict",
]


@dataclass(frozen=True, slots=True)
class Profile:
    """An executor's name and the set of components it is built from.

    Components are free-form strings such as ``"os:debian12"`` or ``"server:nginx-1.22"``; two
    executors that share a component share that component's flaws (common mode).
    """

    name: str
    components: frozenset[str]

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("an executor profile needs a non-empty name")

    def jaccard_distance(self, other: Profile) -> float:
        """1 - |A and B| / |A or B|: 0 for identical builds, 1 for nothing in common."""
        union = self.components | other.components
        if not union:
            return 0.0
        return 1.0 - len(self.components & other.components) / len(union)


class ExecutorState(StrEnum):
    """Where an executor is in the controller's negative-feedback loop."""

    ACTIVE = "active"  # votes on every request
    ACTIVATING = "activating"  # chosen to vote; the runtime is bringing its state up to date
    SPARE = "spare"  # healthy and clean, waiting to be chosen
    QUARANTINED = "quarantined"  # dissented or failed; removed from voting, awaiting cleansing
    CLEANSING = "cleansing"  # being restored from its pristine image
    PROBATION = "probation"  # cleansed; shadows requests without voting until it agrees again


class ErrorKind(StrEnum):
    """Why an executor produced no value. Errors never agree with anything."""

    TIMEOUT = "timeout"
    CONNECT = "connect"
    RESET = "reset"
    MALFORMED = "malformed"
    OVERSIZE = "oversize"
    CRASH = "crash"


@dataclass(frozen=True, slots=True)
class Canonical:
    """The comparable form of one output.

    ``key`` is a canonical encoding: equal keys mean agreement. ``value`` is the parsed
    canonical structure, kept for tolerant comparison and for display.
    """

    key: bytes
    value: object = None


class Canonicaliser(Protocol):
    """A compiled canonicalisation rule (see `endosec.core.canonicalise`)."""

    def canonicalise(self, raw: bytes) -> Canonical:
        """Turn raw output bytes into their canonical form."""
        ...

    def equivalent(self, a: Canonical, b: Canonical) -> bool:
        """Whether two canonical forms agree (equal keys, or within a configured tolerance)."""
        ...


class Output:
    """One executor's answer to one request, as the arbiter sees it.

    ``head`` is a cheap, eagerly canonicalised part (for HTTP: status and canonical headers;
    ``()`` when the protocol has none). ``raw`` is the bulk (for HTTP: the body). Agreement is
    decided on the fast path by byte equality of ``raw``; the canonical form is computed lazily,
    only when raw bytes differ.
    """

    __slots__ = ("_canonical", "_digest", "canonicaliser", "error", "executor", "head", "latency",
                 "raw")

    def __init__(
        self,
        executor: str,
        raw: bytes,
        canonicaliser: Canonicaliser,
        *,
        head: Hashable = (),
        latency: float = 0.0,
        error: ErrorKind | None = None,
    ) -> None:
        if latency < 0 or math.isnan(latency):
            raise ValueError(f"latency must be a non-negative number, got {latency!r}")
        self.executor = executor
        self.raw = raw
        self.canonicaliser = canonicaliser
        self.head = head
        self.latency = latency
        self.error = error
        self._canonical: Canonical | None = None
        self._digest: bytes | None = None

    @classmethod
    def failure(cls, executor: str, error: ErrorKind, canonicaliser: Canonicaliser,
                latency: float = 0.0) -> Output:
        """An output that carries no value, only the reason there is none."""
        return cls(executor, b"", canonicaliser, latency=latency, error=error)

    @property
    def canonical(self) -> Canonical:
        """The canonical form of ``raw``, computed on first use and cached."""
        if self._canonical is None:
            self._canonical = self.canonicaliser.canonicalise(self.raw)
        return self._canonical

    @property
    def digest(self) -> bytes:
        """A BLAKE2b digest of the head and canonical form: what the ledger records."""
        if self._digest is None:
            h = hashlib.blake2b(digest_size=32)
            if self.error is not None:
                h.update(b"error:" + self.error.value.encode())
            else:
                h.update(repr(self.head).encode())
                h.update(b"\x00")
                h.update(self.canonical.key)
            self._digest = h.digest()
        return self._digest

    def agrees_with(self, other: Output) -> bool:
        """Whether two outputs carry the same value. Errors agree with nothing."""
        if self.error is not None or other.error is not None:
            return False
        if self.head != other.head:
            return False
        if self.raw == other.raw:
            return True
        return self.canonicaliser.equivalent(self.canonical, other.canonical)

    def __repr__(self) -> str:
        what = f"error={self.error.value}" if self.error else f"{len(self.raw)} bytes"
        return f"Output({self.executor!r}, {what}, latency={self.latency:.6f})"


class Outcome(StrEnum):
    ACCEPTED = "accepted"  # a value reached the quorum; it is the answer
    NO_QUORUM = "no-quorum"  # values came back but none reached the quorum: fail closed
    ALL_FAILED = "all-failed"  # no executor produced a value


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the arbiter decided about one request.

    ``dissented`` answered with a value other than the winner; ``failed`` produced no value
    (error, timeout, or no answer before the ballot closed). On no-quorum there is no winner to
    dissent from, so every executor that answered is in ``agreed``-less limbo: ``dissented`` and
    ``agreed`` are both empty and ``failed`` lists those without a value.
    """

    outcome: Outcome
    winner: Output | None
    agreed: tuple[str, ...]
    dissented: tuple[str, ...]
    failed: tuple[str, ...]
    reason: str

    @property
    def accepted(self) -> bool:
        return self.outcome is Outcome.ACCEPTED

    @property
    def dissenters(self) -> tuple[str, ...]:
        """Everyone the controller should hold to account: wrong values and failures."""
        return self.dissented + self.failed
