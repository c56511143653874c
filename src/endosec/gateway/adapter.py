"""The seam between the protocol-agnostic engine and one wire protocol (HTTP, DNS, ...).

A protocol adapter says, for one parsed client request, what bytes every executor receives and
whether they change executor state; it reads executors' replies into the arbiter's `Output`s;
and it encodes what the client gets. The engine never looks inside a request or a reply.
Adding a protocol means one adapter, one upstream client and one listener, never a core change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from endosec.core.model import ErrorKind, Output, Verdict

__all__ = ["Exchange", "Forward", "ProtocolAdapter", "Upstream"]


@dataclass(frozen=True, slots=True)
class Forward:
    """One client request as the engine handles it."""

    request: Any  # the adapter's parsed client request, for building the reply
    payload: bytes  # sent identically to every executor
    write: bool  # changes executor state: forwarded alone and journaled
    label: str  # e.g. the HTTP method or the DNS query type, for events
    key: str  # e.g. the HTTP path or the DNS name: selects canonicalisation rules


@dataclass(frozen=True, slots=True)
class Exchange:
    """What came back from one executor: a reply (adapter's type), or the failure, and when."""

    reply: Any
    error: ErrorKind | None
    latency: float
    detail: str = ""  # what went wrong, in words, for the operator's events


class Upstream(Protocol):
    """Connections to one executor."""

    def submit(self, forward: Forward, deliver: Callable[[Exchange], None]) -> None:
        """Send ``forward.payload`` and call ``deliver`` exactly once with the outcome.

        Never raises: failures, timeouts included, come back as ``Exchange.error``.
        """
        ...

    async def exchange(self, forward: Forward) -> Exchange:
        """`submit`, awaitable."""
        ...

    def reset(self, address: tuple[str, int]) -> None:
        """Forget every connection, e.g. after the executor restarted at a new address."""
        ...


class ProtocolAdapter(Protocol):
    def upstream(self, address: tuple[str, int], *, connect_timeout: float,
                 read_timeout: float) -> Upstream: ...

    def forward(self, request: Any) -> Forward: ...

    def output(self, executor: str, reply: Any, forward: Forward, latency: float) -> Output: ...

    def failure(self, executor: str, error: ErrorKind, forward: Forward,
                latency: float) -> Output: ...

    def reply(self, forward: Forward, verdict: Verdict, winner: Any, *,
              verdict_headers: bool) -> bytes:
        """Encode the consensus reply for the client."""
        ...

    def refuse(self, forward: Forward, reason: str) -> bytes:
        """Fail closed: the client's error when no consensus can be given."""
        ...
