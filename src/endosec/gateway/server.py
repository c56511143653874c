"""Client-facing HTTP/1.1 connections: the input agent's edge.

Each connection feeds bytes to the sans-I/O `RequestReader`, answers one request at a time (so
pipelined replies stay in order), and refuses anything ambiguous with the reader's status hint
before a byte of it is forwarded. Slow clients are bounded: a request must arrive whole within
``client_header_timeout`` of its first byte, an idle connection closes after
``client_idle_timeout``, and reading pauses while a request is being answered. Deadlines are
checked by one sweep per listener, not by a timer per request.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import cast

from endosec.protocols.http import (
    ConnectionClosed,
    HttpLimits,
    NeedData,
    RemoteProtocolError,
    Request,
    RequestReader,
    error_response,
)
from endosec.tasks import spawn

__all__ = ["Respond", "ServerState", "Submit", "serve", "submitting"]

Respond = Callable[[bytes], None]
# Takes a request, the client's address and a callback; calls the callback once with the reply.
Submit = Callable[[Request, str, Respond], None]

_SWEEP_SECONDS = 0.25


def submitting(handler: Callable[[Request, str], Awaitable[bytes]]) -> Submit:
    """Adapt an ``async def handler(request, peer) -> bytes`` (the admin pages) to `Submit`."""

    def submit(request: Request, peer: str, respond: Respond) -> None:
        async def run() -> None:
            respond(await handler(request, peer))

        spawn(run(), name="endosec-handler")

    return submit


@dataclass(slots=True)
class ServerState:
    """What all connections of one listener share."""

    submit: Submit
    limits: HttpLimits
    header_timeout: float
    idle_timeout: float
    max_connections: int
    on_reject: Callable[[int], None] = lambda status: None
    connections: set[ClientConnection] = field(default_factory=set)

    def sweep(self, now: float) -> None:
        for conn in list(self.connections):
            if not conn.busy and now >= conn.deadline:
                conn.expire()


class ClientConnection(asyncio.Protocol):
    __slots__ = ("busy", "continued", "deadline", "loop", "partial", "peer", "reader",
                 "request", "state", "submitting", "transport")

    def __init__(self, state: ServerState, loop: asyncio.AbstractEventLoop) -> None:
        self.state = state
        self.loop = loop
        self.reader = RequestReader(state.limits)
        self.transport: asyncio.Transport | None = None
        self.request: Request | None = None  # the request being answered
        self.busy = False
        self.partial = False  # part of the next request has arrived
        self.continued = False  # a 100 Continue was sent for the request under way
        self.submitting = False  # inside state.submit: a synchronous reply must wait
        self.deadline = loop.time() + state.idle_timeout
        self.peer = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer or "")
        if len(self.state.connections) >= self.state.max_connections:
            self.state.on_reject(503)
            self.transport.write(error_response(503, {"error": "too many connections"}))
            self.transport.close()
            return
        self.state.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.state.connections.discard(self)

    def expire(self) -> None:
        """The deadline passed with no complete request: 408 if one was under way, then close."""
        if self.transport is None or self.transport.is_closing():
            return
        if self.partial:
            self.state.on_reject(408)
            self.transport.write(error_response(408, {"error": "request not received in time"}))
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        if not self.partial and not self.busy:
            self.partial = True
            self.deadline = self.loop.time() + self.state.header_timeout
        self.reader.receive_data(data)
        if not self.busy:
            self._next()

    def eof_received(self) -> bool:
        self.reader.receive_data(b"")
        if not self.busy:
            self._next()
        return True

    def _next(self) -> None:
        transport = self.transport
        assert transport is not None
        try:
            event = self.reader.next_event()
        except RemoteProtocolError as exc:
            self.state.on_reject(exc.status_hint)
            transport.write(error_response(exc.status_hint, {"error": exc.reason}))
            transport.close()
            return
        if isinstance(event, NeedData):
            if self.reader.expects_continue and not self.continued:
                self.continued = True
                transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            return
        if isinstance(event, ConnectionClosed):
            transport.close()
            return
        self.busy = True
        self.partial = False
        self.continued = False
        self.request = event
        transport.pause_reading()
        self.submitting = True
        try:
            self.state.submit(event, self.peer, self._respond)
        except Exception as exc:  # a bug must cost one reply, never the listener
            self.state.on_reject(500)
            self.request = None
            self._respond(error_response(500, {"error": "internal error",
                                               "detail": type(exc).__name__}))
        finally:
            self.submitting = False

    def _respond(self, reply: bytes) -> None:
        transport = self.transport
        assert transport is not None
        request, self.request = self.request, None
        if transport.is_closing():
            return
        transport.write(reply)
        if request is None or not request.keep_alive:
            transport.close()
            return
        self.busy = False
        self.deadline = self.loop.time() + self.state.idle_timeout
        transport.resume_reading()
        if self.submitting:  # answered synchronously: do not recurse into the next request
            self.loop.call_soon(self._resume)
        else:
            self._resume()

    def _resume(self) -> None:
        if self.busy or self.transport is None or self.transport.is_closing():
            return
        self._next()
        if not self.busy and self.reader.buffered > 0 and not self.partial:
            self.partial = True
            self.deadline = self.loop.time() + self.state.header_timeout


async def _sweeper(state: ServerState) -> None:
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(_SWEEP_SECONDS)
        state.sweep(loop.time())


async def serve(state: ServerState, host: str, port: int, *,
                tls: ssl.SSLContext | None = None) -> asyncio.Server:
    """Start listening (TLS with ``tls``); the caller owns the returned server and closes it."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: ClientConnection(state, loop), host, port,
                                      reuse_address=True, ssl=tls,
                                      ssl_handshake_timeout=state.header_timeout if tls else None)
    spawn(_sweeper(state), name=f"endosec-sweep-{port}")
    return server
