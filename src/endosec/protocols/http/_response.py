"""The upstream response reader: the data plane's own (native) reader, in Python's terms.

A compromised executor is as hostile as any client: invalid, ambiguous or oversized responses
are refused by the rules in ``rust/dataplane/src/http/response.rs``. One reader reads one
response; a connection is reused only after a response with ``keep_alive`` set.
"""

from __future__ import annotations

from endosec import _native
from endosec.core.model import ErrorKind
from endosec.protocols.http._errors import LocalProtocolError, UpstreamProtocolError
from endosec.protocols.http._events import NEED_DATA, HttpLimits, NeedData, Response
from endosec.protocols.http._request import native_limits

__all__ = ["ResponseReader"]


class ResponseReader:
    """Reads one executor response from its connection.

    Feed bytes with `receive_data` (``b""`` for EOF) and call `next_event` until it returns a
    `Response`. Invalid, ambiguous or oversized responses raise `UpstreamProtocolError` with
    ``kind`` MALFORMED or OVERSIZE (RESET when the connection closed before any byte).
    ``keep_alive`` on the response says whether the connection may carry another exchange.

    **Parameters:**

    * **limits** - header and body limits (``max_response_bytes`` caps the body).
    * **request_method** - the method of the request being answered (HEAD has no body).
    """

    __slots__ = ("_emitted", "_failure", "_native")

    def __init__(self, limits: HttpLimits, request_method: bytes) -> None:
        self._native = _native.ResponseReader(native_limits(limits), request_method)
        self._failure: UpstreamProtocolError | None = None
        self._emitted = False

    def receive_data(self, data: bytes) -> None:
        """Buffer bytes from the executor; ``b""`` means it closed the connection."""
        self._raise_if_broken()
        self._native.receive_data(data)

    def next_event(self) -> Response | NeedData:
        """The complete response, or `NeedData`."""
        self._raise_if_broken()
        if self._emitted:
            raise LocalProtocolError("response already returned; read the next one with a "
                                     "new reader")
        event = self._native.next_event()
        if event[0] == "need-data":
            return NEED_DATA
        if event[0] == "failed":
            _, kind, reason = event
            self._failure = UpstreamProtocolError(ErrorKind(kind), reason)
            raise self._failure
        _, status, reason, headers, body, keep_alive = event
        self._emitted = True
        return Response(status, reason, headers, body, keep_alive)

    def _raise_if_broken(self) -> None:
        if self._failure is not None:
            raise UpstreamProtocolError(self._failure.kind, self._failure.reason)
