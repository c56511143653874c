"""Pooled keep-alive HTTP connections to one executor, and one exchange over them.

Each connection is a plain asyncio Protocol feeding the sans-I/O `ResponseReader`. An exchange
is a callback, not a task: the request is written, a timer is armed, and whichever comes first,
the response or the timer, calls back exactly once. This keeps the fan-out to n executors free
of per-executor tasks on the request path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from time import perf_counter
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
from endosec.tasks import spawn

__all__ = ["HttpUpstream"]

Deliver = Callable[[Exchange], None]


class _Connection(asyncio.Protocol):
    """One keep-alive connection; at most one exchange in flight."""

    __slots__ = ("closed", "deliver", "forward", "loop", "pool", "reader", "received", "reused",
                 "started", "timer", "transport")

    def __init__(self, pool: HttpUpstream, loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.loop = loop
        self.reader = ResponseReader(pool.limits, b"GET")
        self.transport: asyncio.Transport | None = None
        self.deliver: Deliver | None = None
        self.forward: Forward | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.closed = False
        self.received = False  # any byte of the current response arrived
        self.reused = False  # the current exchange runs on a connection kept from before
        self.started = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        self.received = True
        self.reader.receive_data(data)
        if self.deliver is None:
            return
        try:
            event = self.reader.next_event()
        except UpstreamProtocolError as exc:
            self._finish(None, exc.kind)
            return
        if not isinstance(event, NeedData):
            self._finish(event, None)

    def eof_received(self) -> bool:
        self.data_received(b"")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.deliver is not None:
            self._finish(None, ErrorKind.RESET)

    def _timed_out(self) -> None:
        self.timer = None
        self._finish(None, ErrorKind.TIMEOUT)

    def send(self, forward: Forward, deliver: Deliver, started: float) -> None:
        """Write the request; ``started`` is the `perf_counter` time the exchange began."""
        assert self.transport is not None
        self.deliver = deliver
        self.forward = forward
        self.started = started
        self.received = False
        self.timer = self.loop.call_later(self.pool.read_timeout, self._timed_out)
        try:
            self.reader.reset(forward.request.method)
        except UpstreamProtocolError as exc:
            self._finish(None, exc.kind)
            return
        self.transport.write(forward.payload)

    def _finish(self, response: Response | None, error: ErrorKind | None) -> None:
        deliver, forward = self.deliver, self.forward
        assert deliver is not None and forward is not None
        self.deliver = self.forward = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if error is not None:
            self.close()
            if error is ErrorKind.RESET and self.reused and not self.received:
                # The executor closed this idle connection before reading our request; it
                # cannot have acted on it, so it is not its fault: send again on a new one.
                self.pool.connect_and_send(forward, deliver, self.started)
                return
        elif response is not None and response.keep_alive and not self.closed:
            self.pool.idle.append(self)
        else:
            self.close()
        deliver(Exchange(response, error, perf_counter() - self.started))

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class HttpUpstream:
    """Idle keep-alive connections to one executor's current address."""

    __slots__ = ("address", "connect_timeout", "idle", "limits", "read_timeout")

    def __init__(self, address: tuple[str, int], limits: HttpLimits, *,
                 connect_timeout: float, read_timeout: float) -> None:
        self.address = address
        self.limits = limits
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.idle: list[_Connection] = []

    def reset(self, address: tuple[str, int]) -> None:
        """Drop every pooled connection, e.g. after the executor was restarted elsewhere."""
        for conn in self.idle:
            conn.close()
        self.idle.clear()
        self.address = address

    def submit(self, forward: Forward, deliver: Deliver) -> None:
        """Send ``forward`` and call ``deliver`` exactly once with the outcome."""
        started = perf_counter()
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed:
                conn.reused = True
                conn.send(forward, deliver, started)
                return
        self.connect_and_send(forward, deliver, started)

    def connect_and_send(self, forward: Forward, deliver: Deliver, started: float) -> None:
        spawn(self._connect_and_send(forward, deliver, started), name="endosec-connect")

    async def _connect_and_send(self, forward: Forward, deliver: Deliver,
                                started: float) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(lambda: _Connection(self, loop),
                                                       *self.address)
        except (OSError, TimeoutError) as exc:
            detail = str(exc) or type(exc).__name__
            deliver(Exchange(None, ErrorKind.CONNECT, perf_counter() - started, detail))
            return
        conn.reused = False
        conn.send(forward, deliver, started)

    async def exchange(self, forward: Forward) -> Exchange:
        """The same, awaitable: for journal replay and other work off the request path."""
        done: asyncio.Future[Exchange] = asyncio.get_running_loop().create_future()
        self.submit(forward, done.set_result)
        return await done
