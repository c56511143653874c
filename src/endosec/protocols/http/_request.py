"""The input agent's request reader: the data plane's own (native) reader, in Python's terms.

Every ambiguous framing is refused before anything is forwarded; the rules live in
``rust/dataplane/src/http/request.rs``, so the admin listener and the data plane admit exactly
the same requests.
"""

from __future__ import annotations

from endosec import _native
from endosec.protocols.http._errors import LocalProtocolError, RemoteProtocolError
from endosec.protocols.http._events import (
    CONNECTION_CLOSED,
    NEED_DATA,
    ConnectionClosed,
    HttpLimits,
    NeedData,
    Request,
)

__all__ = ["RequestReader", "native_limits"]


def native_limits(limits: HttpLimits) -> tuple[int, int, int, int, int]:
    return (limits.max_header_bytes, limits.max_headers, limits.max_body_bytes,
            limits.max_target_bytes, limits.max_response_bytes)


class RequestReader:
    """Turns a client's byte stream into complete, unambiguous `Request`s, pipelining included.

    Feed bytes with `receive_data` (``b""`` for EOF) and call `next_event` until it returns
    `NeedData`. The first violation raises `RemoteProtocolError`, whose ``status_hint`` is
    the status to answer with; the reader then stays broken and every call raises again.

    >>> reader = RequestReader(HttpLimits())
    >>> reader.receive_data(b"GET / HTTP/1.1\\r\\nHost: a\\r\\n\\r\\n")
    >>> reader.next_event().target
    b'/'
    """

    __slots__ = ("_eof", "_error", "_native")

    def __init__(self, limits: HttpLimits | None = None) -> None:
        self._native = _native.RequestReader(native_limits(limits or HttpLimits()))
        self._eof = False
        self._error: RemoteProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received for requests not yet returned (> 0: a request is under way)."""
        return self._native.buffered

    @property
    def expects_continue(self) -> bool:
        """The client sent ``Expect: 100-continue`` and is waiting before sending its body."""
        return self._native.expects_continue

    def receive_data(self, data: bytes) -> None:
        """Buffer bytes from the client; ``b""`` means the client closed its side."""
        self._raise_if_broken()
        if self._eof and data:
            raise LocalProtocolError("data received after EOF")
        self._eof = self._eof or not data
        self._native.receive_data(data)

    def next_event(self) -> Request | NeedData | ConnectionClosed:
        """The next complete request, `NeedData`, or `ConnectionClosed` once the client is done."""
        self._raise_if_broken()
        event = self._native.next_event()
        if event[0] == "request":
            _, method, target, headers, body, keep_alive, version = event
            try:
                return Request(method, target, headers, body, keep_alive, version)
            except LocalProtocolError as exc:  # the native reader admitted what it must not
                raise AssertionError(f"input agent admitted an invalid request: {exc}") from exc
        if event[0] == "need-data":
            return NEED_DATA
        if event[0] == "closed":
            return CONNECTION_CLOSED
        _, status, reason = event
        self._error = RemoteProtocolError(reason, status)
        raise self._error

    def _raise_if_broken(self) -> None:
        if self._error is not None:
            raise RemoteProtocolError(f"connection already failed: {self._error.reason}",
                                      self._error.status_hint)
