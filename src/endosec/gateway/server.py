"""Client-facing HTTP/1.1 connections: the input agent's edge.

Each connection feeds bytes to the sans-I/O `RequestReader`, answers one request at a time (so
pipelined replies stay in order), and refuses anything ambiguous with the reader's status hint
before a byte of it is forwarded. Slow clients are bounded: a request must arrive whole within
``client_header_timeout`` of its first byte, an idle connection closes after
``client_idle_timeout``, and reading pauses while a request is being answered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import cast

from endosec.gateway.tasks import spawn
from endosec.protocols.http import (
    ConnectionClosed,
    HttpLimits,
    NeedData,
    RemoteProtocolError,
    Request,
    RequestReader,
    error_response,
)

__all__ = ["Handler", "ServerState", "serve"]

Handler = Callable[[Request], Awaitable[bytes]]


@dataclass(slots=True)
class ServerState:
    """What all connections of one listener share."""

    handler: Handler
    limits: HttpLimits
    header_timeout: float
    idle_timeout: float
    max_connections: int
    on_reject: Callable[[int], None] = lambda status: None
    connections: set[ClientConnection] = field(default_factory=set)


class ClientConnection(asyncio.Protocol):
    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.reader = RequestReader(state.limits)
        self.transport: asyncio.Transport | None = None
        self.busy = False
        self.partial = False
        self.continued = False  # a 100 Continue was sent for the request under way
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        if len(self.state.connections) >= self.state.max_connections:
            self.state.on_reject(503)
            self.transport.write(error_response(503, {"error": "too many connections"}))
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
        if self.transport is None or self.busy:
            return
        if self.partial:
            self.state.on_reject(408)
            self.transport.write(error_response(408, {"error": "request not received in time"}))
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        if not self.partial and not self.busy:
            self.partial = True
            self._arm(self.state.header_timeout)
        self.reader.receive_data(data)
        if not self.busy:
            self._next()

    def eof_received(self) -> bool:
        self.reader.receive_data(b"")
        if not self.busy:
            self._next()
        return True

    def _next(self) -> None:
        assert self.transport is not None
        try:
            event = self.reader.next_event()
        except RemoteProtocolError as exc:
            self.state.on_reject(exc.status_hint)
            self.transport.write(error_response(exc.status_hint, {"error": exc.reason}))
            self.transport.close()
            return
        if isinstance(event, NeedData):
            if self.reader.expects_continue and not self.continued:
                self.continued = True
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            return
        if isinstance(event, ConnectionClosed):
            self.transport.close()
            return
        self.busy = True
        self.partial = False
        self.continued = False
        self._disarm()
        self.transport.pause_reading()
        spawn(self._serve(event), name="endosec-client-request")

    async def _serve(self, request: Request) -> None:
        assert self.transport is not None
        try:
            reply = await self.state.handler(request)
        except Exception as exc:  # a bug must cost one reply, never the listener
            self.state.on_reject(500)
            reply = error_response(500, {"error": "internal error", "detail": type(exc).__name__})
            request = _closing(request)
        if self.transport.is_closing():
            return
        self.transport.write(reply)
        if not request.keep_alive:
            self.transport.close()
            return
        self.busy = False
        self.transport.resume_reading()
        self._arm(self.state.idle_timeout)
        self._next()
        if self.busy is False and self.reader_has_partial():
            self.partial = True
            self._arm(self.state.header_timeout)

    def reader_has_partial(self) -> bool:
        return self.reader.buffered > 0


def _closing(request: Request) -> Request:
    return replace(request, keep_alive=False)


async def serve(state: ServerState, host: str, port: int) -> asyncio.Server:
    """Start listening; the caller owns the returned server and closes it."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: ClientConnection(state), host, port,
                                    reuse_address=True)
