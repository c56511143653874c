"""Client-facing DNS listeners: UDP and TCP on the same HOST:PORT, the input agent's edge.

Every message goes through `parse_query` before anything is forwarded: refused queries get
their FORMERR/NOTIMP/REFUSED/BADVERS answer from here, responses and runts are dropped (over
TCP the connection is closed). UDP queries are answered concurrently up to a bound (beyond
it they are dropped, as a loaded server drops datagrams); a TCP connection is answered one
query at a time, must deliver a started message within ``message_timeout`` and is closed
after ``idle_timeout`` without one.
"""

from __future__ import annotations

import asyncio
import errno
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, cast

import dns.rcode

from endosec.gateway.dns import DnsRequest
from endosec.protocols.dns import DnsSettings, Query, QueryError, error_reply, parse_query, servfail
from endosec.tasks import spawn

__all__ = ["DnsHandler", "DnsListener", "DnsServerState", "serve_dns"]

DnsHandler = Callable[[DnsRequest], Awaitable[bytes]]
_LENGTH = struct.Struct("!H")
_BIND_RETRIES = 5  # port-0 listeners: TCP port chosen, UDP found taken, try another


@dataclass(slots=True)
class DnsServerState:
    """What both listeners and all TCP connections share."""

    handler: DnsHandler
    settings: DnsSettings
    message_timeout: float
    idle_timeout: float
    max_connections: int
    max_udp_inflight: int
    on_reject: Callable[[str], None] = lambda reason: None
    connections: set[_TcpConnection] = field(default_factory=set)
    udp_inflight: int = 0

    def accept(self, wire: bytes) -> Query | bytes | None:
        """The query to forward, else the error reply to send, else None (drop)."""
        try:
            return parse_query(wire)
        except QueryError as exc:
            self.on_reject("dropped" if exc.rcode is None
                           else dns.rcode.to_text(dns.rcode.Rcode.make(exc.rcode)))
            return error_reply(exc, self.settings)

    async def answer(self, query: Query, transport: Literal["udp", "tcp"]) -> bytes:
        try:
            return await self.handler(DnsRequest(query, transport))
        except Exception as exc:  # a bug must cost one reply, never the listener
            self.on_reject("internal")
            return servfail(query, self.settings, f"internal error: {type(exc).__name__}")


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, state: DnsServerState) -> None:
        self.state = state
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        assert self.transport is not None
        outcome = self.state.accept(data)
        if isinstance(outcome, bytes):
            self.transport.sendto(outcome, addr)
        elif isinstance(outcome, Query):
            if self.state.udp_inflight >= self.state.max_udp_inflight:
                self.state.on_reject("overload")
                return
            self.state.udp_inflight += 1
            spawn(self._serve(outcome, addr), name="endosec-dns-udp")

    async def _serve(self, query: Query, addr: tuple[str | object, ...]) -> None:
        assert self.transport is not None
        try:
            reply = await self.state.answer(query, "udp")
        finally:
            self.state.udp_inflight -= 1
        if not self.transport.is_closing():
            self.transport.sendto(reply, addr)


class _TcpConnection(asyncio.Protocol):
    def __init__(self, state: DnsServerState) -> None:
        self.state = state
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.busy = False
        self.eof = False
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        if len(self.state.connections) >= self.state.max_connections:
            self.state.on_reject("connections")
            transport.close()
            return
        self.state.connections.add(self)
        self._arm(self.state.idle_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.state.connections.discard(self)
        self._disarm()

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self.timer = asyncio.get_running_loop().call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _expired(self) -> None:
        if self.transport is not None and not self.busy:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if not self.buffer and not self.busy:
            self._arm(self.state.message_timeout)
        self.buffer += data
        if not self.busy:
            self._next()

    def eof_received(self) -> bool:
        self.eof = True
        return self.busy  # keep the write side open for the reply under way

    def _next(self) -> None:
        assert self.transport is not None
        if len(self.buffer) < 2:
            return
        (length,) = _LENGTH.unpack_from(self.buffer)
        if len(self.buffer) < 2 + length:
            return
        wire = bytes(self.buffer[2:2 + length])
        del self.buffer[:2 + length]
        outcome = self.state.accept(wire)
        if isinstance(outcome, Query):
            self.busy = True
            self._disarm()
            self.transport.pause_reading()
            spawn(self._serve(outcome), name="endosec-dns-tcp")
            return
        if outcome is None:
            self.transport.close()
            return
        self.transport.write(_LENGTH.pack(len(outcome)) + outcome)
        self._continue()

    def _continue(self) -> None:
        if self.eof and len(self.buffer) < 2:
            assert self.transport is not None
            self.transport.close()
            return
        self._arm(self.state.message_timeout if self.buffer else self.state.idle_timeout)
        self._next()

    async def _serve(self, query: Query) -> None:
        assert self.transport is not None
        reply = await self.state.answer(query, "tcp")
        if self.transport.is_closing():
            return
        self.transport.write(_LENGTH.pack(len(reply)) + reply)
        self.busy = False
        self.transport.resume_reading()
        self._continue()


@dataclass(slots=True)
class DnsListener:
    """The TCP server and UDP endpoint listening on one address."""

    tcp: asyncio.Server
    udp: asyncio.DatagramTransport
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"dns://{host}:{self.port}"

    def close(self) -> None:
        self.tcp.close()
        self.udp.close()


async def serve_dns(state: DnsServerState, host: str, port: int) -> DnsListener:
    """Listen on TCP and UDP ``host:port``; port 0 picks one port free for both."""
    loop = asyncio.get_running_loop()
    for attempt in range(1, _BIND_RETRIES + 1):
        tcp = await loop.create_server(lambda: _TcpConnection(state), host, port,
                                       reuse_address=True)
        bound = tcp.sockets[0].getsockname()[1]
        try:
            udp, _ = await loop.create_datagram_endpoint(lambda: _Udp(state),
                                                         local_addr=(host, bound))
        except OSError as exc:
            tcp.close()
            if port == 0 and exc.errno == errno.EADDRINUSE and attempt < _BIND_RETRIES:
                continue
            raise
        return DnsListener(tcp, udp, host, bound)
    raise AssertionError("unreachable")  # pragma: no cover
