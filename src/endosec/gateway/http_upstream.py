"""Pooled keep-alive HTTP connections to one executor, and one exchange over them.

Each connection is a plain asyncio Protocol feeding the sans-I/O `ResponseReader`; nothing here
interprets HTTP beyond handing bytes over and awaiting the next complete response.
"""

from __future__ import annotations

import asyncio
from typing import cast

from endosec.core.model import ErrorKind
from endosec.gateway.adapter import Exchange, Forward
from endosec.protocols.http import (
    HttpLimits,
    NeedData,
    Response,
    ResponseReader,
    UpstreamProtocolError,
)

__all__ = ["HttpUpstream"]


class _Connection(asyncio.Protocol):
    __slots__ = ("closed", "reader", "received", "transport", "waiter")

    def __init__(self, limits: HttpLimits) -> None:
        self.reader = ResponseReader(limits, b"GET")
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[Response] | None = None
        self.closed = False
        self.received = False  # any byte of the current response arrived

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        self.received = True
        self.reader.receive_data(data)
        self._pump()

    def eof_received(self) -> bool:
        self.reader.receive_data(b"")
        self._pump()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionResetError("executor closed the connection"))

    def _pump(self) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        try:
            event = self.reader.next_event()
        except UpstreamProtocolError as exc:
            waiter.set_exception(exc)
            self.close()
            return
        if not isinstance(event, NeedData):
            waiter.set_result(event)

    def send(self, request: bytes, method: bytes) -> asyncio.Future[Response]:
        assert self.transport is not None
        self.received = False
        self.reader.reset(method)
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self.waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class HttpUpstream:
    """Idle keep-alive connections to one executor's current address."""

    __slots__ = ("_idle", "address", "connect_timeout", "limits", "read_timeout")

    def __init__(self, address: tuple[str, int], limits: HttpLimits, *,
                 connect_timeout: float, read_timeout: float) -> None:
        self.address = address
        self.limits = limits
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._idle: list[_Connection] = []

    def reset(self, address: tuple[str, int]) -> None:
        """Drop every pooled connection, e.g. after the executor was restarted elsewhere."""
        for conn in self._idle:
            conn.close()
        self._idle.clear()
        self.address = address

    def _idle_connection(self) -> _Connection | None:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn
        return None

    async def _new_connection(self) -> _Connection:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.connect_timeout):
            _, conn = await loop.create_connection(
                lambda: _Connection(self.limits), *self.address)
        return conn

    async def exchange(self, forward: Forward) -> Exchange:
        """Send ``request`` and await the response, mapping every failure to an ErrorKind.

        A pooled connection the executor closed while idle fails before any response byte
        arrives; that is not the executor's fault, so the request is sent once more on a new
        connection (the executor cannot have acted on bytes it never read).
        """
        request, method = forward.payload, forward.request.method
        loop = asyncio.get_running_loop()
        started = loop.time()
        conn = self._idle_connection()
        if conn is not None:
            outcome = await self._send(conn, request, method)
            if not (isinstance(outcome, ErrorKind) and outcome is ErrorKind.RESET
                    and not conn.received):
                return self._exchange(outcome, loop.time() - started)
        try:
            conn = await self._new_connection()
        except (OSError, TimeoutError):
            return Exchange(None, ErrorKind.CONNECT, loop.time() - started)
        return self._exchange(await self._send(conn, request, method), loop.time() - started)

    @staticmethod
    def _exchange(outcome: Response | ErrorKind, latency: float) -> Exchange:
        if isinstance(outcome, ErrorKind):
            return Exchange(None, outcome, latency)
        return Exchange(outcome, None, latency)

    async def _send(self, conn: _Connection, request: bytes, method: bytes
                    ) -> Response | ErrorKind:
        try:
            async with asyncio.timeout(self.read_timeout):
                response = await conn.send(request, method)
        except TimeoutError:
            conn.close()
            return ErrorKind.TIMEOUT
        except UpstreamProtocolError as exc:
            conn.close()
            return exc.kind
        except OSError:
            conn.close()
            return ErrorKind.RESET
        if response.keep_alive and not conn.closed:
            self._idle.append(conn)
        else:
            conn.close()
        return response
