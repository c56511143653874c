"""The DNS protocol adapter: client queries in, consensus replies out, executors over TCP.

The gateway always asks executors over TCP, so it sees every answer whole whatever its size;
a UDP client gets TC when the consensus reply does not fit its payload size and retries over
TCP (see `endosec.protocols.dns.encode_reply`). Queries never change executor state.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter
from typing import Literal

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype

from endosec.config import Config, parse_dns_question
from endosec.core.model import ErrorKind, Output, Verdict
from endosec.gateway.adapter import Exchange, Forward
from endosec.protocols.dns import (
    MAX_TCP_MESSAGE,
    DnsCanonicaliser,
    DnsSettings,
    Query,
    ReplyError,
    encode_reply,
    parse_reply,
    reply_output,
    servfail,
)
from endosec.runtime.base import HealthProbe
from endosec.tasks import spawn

__all__ = ["DnsAdapter", "DnsRequest", "DnsUpstream", "dns_health_probe", "settings_from_config"]

_LENGTH = struct.Struct("!H")
_MAX_IDLE = 8  # pooled connections kept per executor


@dataclass(frozen=True, slots=True)
class DnsRequest:
    """One accepted client query and the transport it came over (which bounds the reply)."""

    query: Query
    transport: Literal["udp", "tcp"]


def settings_from_config(config: Config) -> DnsSettings:
    d = config.dns
    return DnsSettings(flags=frozenset(d.flags), ttl=d.ttl, ttl_tolerance=d.ttl_tolerance,
                       additional=d.additional, udp_payload=d.udp_payload)


class DnsAdapter:
    __slots__ = ("canonicaliser", "settings")

    def __init__(self, settings: DnsSettings) -> None:
        self.settings = settings
        self.canonicaliser = DnsCanonicaliser(
            None if settings.ttl == "mask" else settings.ttl_tolerance)

    def upstream(self, address: tuple[str, int], *, connect_timeout: float,
                 read_timeout: float) -> DnsUpstream:
        return DnsUpstream(address, connect_timeout=connect_timeout, read_timeout=read_timeout)

    def forward(self, request: DnsRequest) -> Forward:
        query = request.query
        return Forward(request=request, payload=query.upstream_wire(self.settings), write=False,
                       label=query.label, key=query.key)

    def output(self, executor: str, reply: dns.message.Message, forward: Forward,
               latency: float) -> Output:
        return reply_output(executor, reply, self.settings, self.canonicaliser, latency)

    def failure(self, executor: str, error: ErrorKind, forward: Forward,
                latency: float) -> Output:
        return Output.failure(executor, error, self.canonicaliser, latency)

    def reply(self, forward: Forward, verdict: Verdict, winner: dns.message.Message, *,
              verdict_headers: bool) -> bytes:
        """The winner re-encoded for the client (DNS has no place for verdict headers)."""
        request: DnsRequest = forward.request
        limit = (request.query.udp_limit(self.settings) if request.transport == "udp"
                 else MAX_TCP_MESSAGE)
        return encode_reply(request.query, winner, self.settings, max_size=limit)

    def refuse(self, forward: Forward, reason: str) -> bytes:
        """SERVFAIL; never any executor's answer."""
        request: DnsRequest = forward.request
        return servfail(request.query, self.settings, f"no quorum: {reason}")


class _Connection:
    """One TCP connection to an executor: length-prefixed messages, one at a time."""

    __slots__ = ("reader", "received", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.received = False  # any byte of the current reply arrived

    async def ask(self, payload: bytes) -> bytes:
        self.received = False
        self.writer.write(_LENGTH.pack(len(payload)) + payload)
        await self.writer.drain()
        size = await self.reader.readexactly(1)
        self.received = True
        (length,) = _LENGTH.unpack(size + await self.reader.readexactly(1))
        return await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


class DnsUpstream:
    """Idle TCP connections to one executor's current address."""

    __slots__ = ("_idle", "address", "connect_timeout", "read_timeout")

    def __init__(self, address: tuple[str, int], *, connect_timeout: float,
                 read_timeout: float) -> None:
        self.address = address
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._idle: list[_Connection] = []

    def reset(self, address: tuple[str, int]) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()
        self.address = address

    def submit(self, forward: Forward, deliver: Callable[[Exchange], None]) -> None:
        """`exchange` in a task of its own, handing the outcome to ``deliver``."""
        spawn(self._deliver(forward, deliver), name="endosec-dns-ask")

    async def _deliver(self, forward: Forward, deliver: Callable[[Exchange], None]) -> None:
        deliver(await self.exchange(forward))

    async def exchange(self, forward: Forward) -> Exchange:
        """Ask the executor; a pooled connection it closed while idle is retried once anew."""
        query: Query = forward.request.query
        started = perf_counter()
        if self._idle:
            conn = self._idle.pop()
            outcome = await self._ask(conn, forward.payload, query)
            if outcome is not ErrorKind.RESET or conn.received:
                return _exchange(outcome, perf_counter() - started)
        try:
            async with asyncio.timeout(self.connect_timeout):
                conn = _Connection(*await asyncio.open_connection(*self.address))
        except (OSError, TimeoutError) as exc:
            return Exchange(None, ErrorKind.CONNECT, perf_counter() - started,
                            str(exc) or type(exc).__name__)
        return _exchange(await self._ask(conn, forward.payload, query), perf_counter() - started)

    async def _ask(self, conn: _Connection, payload: bytes, query: Query
                   ) -> dns.message.Message | ErrorKind:
        try:
            async with asyncio.timeout(self.read_timeout):
                wire = await conn.ask(payload)
            reply = parse_reply(wire, query)
        except TimeoutError:
            conn.close()
            return ErrorKind.TIMEOUT
        except ReplyError:
            conn.close()
            return ErrorKind.MALFORMED
        except (OSError, asyncio.IncompleteReadError):
            conn.close()
            return ErrorKind.RESET
        if len(self._idle) < _MAX_IDLE:
            self._idle.append(conn)
        else:
            conn.close()
        return reply


def _exchange(outcome: dns.message.Message | ErrorKind, latency: float) -> Exchange:
    if isinstance(outcome, ErrorKind):
        return Exchange(None, outcome, latency)
    return Exchange(outcome, None, latency)


def dns_health_probe(question: str) -> HealthProbe:
    """A probe asking ``"NAME TYPE"`` over TCP: healthy on an authoritative NOERROR answer."""
    name, rdtype = parse_dns_question(question)

    async def probe(host: str, port: int) -> bool:
        query = dns.message.make_query(name, dns.rdatatype.from_text(rdtype), flags=0)
        try:
            conn = _Connection(*await asyncio.open_connection(host, port))
        except OSError:
            return False
        try:
            reply = dns.message.from_wire(await conn.ask(query.to_wire()))
        except Exception:  # a half-started server may answer anything; it is not healthy
            return False
        finally:
            conn.close()
            with contextlib.suppress(OSError):
                await conn.writer.wait_closed()
        return (reply.id == query.id and reply.rcode() == dns.rcode.NOERROR
                and bool(reply.flags & dns.flags.AA) and bool(reply.answer))

    return probe
