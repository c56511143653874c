"""The upstream response reader: one per executor connection, reused across responses.

llhttp does the parsing; Python callbacks enforce limits and refuse ambiguous framing, since a
compromised executor is as hostile as any client. httptools cannot tell llhttp to skip a body,
so responses to HEAD are framed here and only their heads are given to llhttp.
"""

from __future__ import annotations

import httptools

from endosec.core.model import ErrorKind
from endosec.protocols.http._errors import LocalProtocolError, UpstreamProtocolError
from endosec.protocols.http._events import NEED_DATA, HttpLimits, NeedData, Response
from endosec.protocols.http._syntax import DIGITS, REASON, connection_tokens

__all__ = ["ResponseReader"]

_MALFORMED = ErrorKind.MALFORMED
_OVERSIZE = ErrorKind.OVERSIZE


class _Extra(Exception):
    """Stops llhttp when bytes follow a complete response."""


class _Sink:
    """llhttp callbacks for one response at a time (1xx interim responses are skipped)."""

    __slots__ = ("body", "body_size", "close_delimited", "complete", "extra", "failure",
                 "head_bytes", "head_only", "headers", "headers_done", "keep_alive", "limits",
                 "parser", "reason", "status")

    def __init__(self, limits: HttpLimits) -> None:
        self.limits = limits
        self.parser: httptools.HttpResponseParser | None = None
        self.reset(head_only=False)

    def reset(self, head_only: bool) -> None:
        self.head_only = head_only
        self.complete = False
        self.extra = False
        self.failure: UpstreamProtocolError | None = None
        self.on_message_begin()

    def _fail(self, kind: ErrorKind, reason: str) -> UpstreamProtocolError:
        self.failure = UpstreamProtocolError(kind, reason)
        return self.failure

    def on_message_begin(self) -> None:
        if self.complete:
            self.extra = True
            raise _Extra
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_bytes = 0
        self.headers_done = False
        self.body: list[bytes] = []
        self.body_size = 0
        self.keep_alive = False
        self.close_delimited = False

    def on_status(self, data: bytes) -> None:
        self.reason += data

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.headers_done:
            return  # trailer fields are never forwarded
        self.head_bytes += len(name) + len(value) + 4
        if len(self.headers) >= self.limits.max_headers:
            raise self._fail(_OVERSIZE, "too many response header fields")
        if self.head_bytes > self.limits.max_header_bytes:
            raise self._fail(_OVERSIZE, "response head too large")
        self.headers.append((name.lower(), value.rstrip(b" \t")))

    def on_headers_complete(self) -> None:
        assert self.parser is not None
        self.headers_done = True
        self.status = status = self.parser.get_status_code()
        if not 100 <= status <= 599:
            raise self._fail(_MALFORMED, f"status {status} is outside 100..599")
        if REASON.fullmatch(self.reason) is None:
            raise self._fail(_MALFORMED, "control character in reason phrase")
        length: bytes | None = None
        chunked = False
        for name, value in self.headers:
            if name == b"content-length":
                if length is not None or DIGITS.fullmatch(value) is None:
                    raise self._fail(_MALFORMED, "repeated or invalid Content-Length")
                length = value
            elif name == b"transfer-encoding":
                if chunked or value.lower() != b"chunked":
                    raise self._fail(_MALFORMED, "Transfer-Encoding must be exactly 'chunked'")
                chunked = True
        version = self.parser.get_http_version()
        if version not in ("1.0", "1.1"):
            raise self._fail(_MALFORMED, f"HTTP/{version} response")
        if chunked and (length is not None or version == "1.0"):
            raise self._fail(_MALFORMED, "ambiguous response framing")
        no_body = self.head_only or status < 200 or status in (204, 304)
        if not no_body and length is not None and (
                len(length) > 18 or int(length) > self.limits.max_response_bytes):
            raise self._fail(_OVERSIZE, "response body too large")
        self.close_delimited = not no_body and length is None and not chunked
        tokens = connection_tokens(self.headers)
        persistent = b"close" not in tokens if version == "1.1" else b"keep-alive" in tokens
        self.keep_alive = persistent and not self.close_delimited

    def on_body(self, data: bytes) -> None:
        self.body_size += len(data)
        if self.body_size > self.limits.max_response_bytes:
            raise self._fail(_OVERSIZE, "response body too large")
        self.body.append(data)

    def on_message_complete(self) -> None:
        if self.status >= 200:
            self.complete = True
        else:
            self.on_message_begin()  # an interim response: wait for the final one

    def response(self) -> Response:
        return Response(self.status, self.reason, tuple(self.headers), b"".join(self.body),
                        self.keep_alive and not self.extra)


class ResponseReader:
    """Reads one executor response at a time from its connection.

    Feed bytes with `receive_data` (``b""`` for EOF) and call `next_event` until it returns a
    `Response`. Invalid, ambiguous or oversized responses raise `UpstreamProtocolError` with
    ``kind`` MALFORMED or OVERSIZE (RESET when the connection closed before any byte). After
    a response with ``keep_alive`` set, call `reset` before sending the next request.

    **Parameters:**

    * **limits** - header and body limits (``max_response_bytes`` caps the body).
    * **request_method** - the method of the request being answered (HEAD has no body).
    """

    __slots__ = ("_clean", "_emitted", "_eof", "_failure", "_head_buf", "_head_fed",
                 "_limits", "_parser", "_pending", "_sink", "_wire")

    def __init__(self, limits: HttpLimits, request_method: bytes) -> None:
        self._limits = limits
        self._parser: httptools.HttpResponseParser | None = None
        self._clean = False
        self._start(request_method)

    def _start(self, request_method: bytes) -> None:
        head_only = request_method == b"HEAD"
        if self._parser is None or not self._clean:
            # llhttp keeps the callbacks it was built with, so parser and sink live together.
            self._sink = _Sink(self._limits)
            self._parser = httptools.HttpResponseParser(self._sink)
            self._sink.parser = self._parser
        self._sink.reset(head_only)
        # After a complete non-HEAD response llhttp sits at a message boundary and can be reused.
        self._clean = not head_only
        self._pending: list[bytes] = []
        self._head_buf = bytearray()
        self._head_fed = 0
        self._wire = 0
        self._eof = False
        self._emitted = False
        self._failure: UpstreamProtocolError | None = None

    def reset(self, request_method: bytes) -> None:
        """Prepare for the response to the next request sent on this connection.

        Allowed on a fresh reader and after a kept-alive response. Raises
        `UpstreamProtocolError` if the executor sent bytes unasked (MALFORMED) or closed
        the connection (RESET): the connection must then be dropped.
        """
        self._raise_if_broken()
        if self._pending or self._sink.extra:
            self._failure = UpstreamProtocolError(_MALFORMED, "bytes sent before the request")
            raise self._failure
        if self._eof:
            self._failure = UpstreamProtocolError(ErrorKind.RESET, "the executor closed")
            raise self._failure
        if self._emitted:
            if not self._sink.keep_alive:
                raise LocalProtocolError("the connection is not reusable after this response")
        elif self._wire:
            raise LocalProtocolError("the previous response has not been read")
        self._start(request_method)

    def receive_data(self, data: bytes) -> None:
        """Buffer bytes from the executor; ``b""`` means it closed the connection."""
        self._raise_if_broken()
        if data:
            if self._eof:
                raise LocalProtocolError("data received after EOF")
            self._pending.append(data)
        else:
            self._eof = True

    def next_event(self) -> Response | NeedData:
        """The complete response, or `NeedData`."""
        self._raise_if_broken()
        if self._emitted:
            raise LocalProtocolError("response already returned; call reset() first")
        try:
            return self._next()
        except UpstreamProtocolError as exc:
            self._failure = exc
            raise

    def _raise_if_broken(self) -> None:
        if self._failure is not None:
            raise UpstreamProtocolError(self._failure.kind, self._failure.reason)

    def _next(self) -> Response | NeedData:
        sink = self._sink
        pending, self._pending = self._pending, []
        for data in pending:
            self._feed(data)
        if not sink.complete and self._eof:
            if self._wire == 0:
                raise UpstreamProtocolError(ErrorKind.RESET, "closed before responding")
            if not (sink.headers_done and sink.close_delimited) or self._head_buf:
                raise UpstreamProtocolError(_MALFORMED, "closed in the middle of a response")
            sink.complete = True
        if not sink.complete:
            return NEED_DATA
        self._emitted = True
        if self._eof:
            sink.keep_alive = False
        return sink.response()

    def _feed(self, data: bytes) -> None:
        sink = self._sink
        self._wire += len(data)
        if self._wire > self._limits.max_response_bytes + self._limits.max_header_bytes:
            raise UpstreamProtocolError(_OVERSIZE, "response too large")
        if sink.complete:
            sink.extra = True
            return
        if sink.head_only:
            self._feed_head_only(data)
            return
        if not sink.headers_done:
            self._head_fed += len(data)
        self._parse(data)
        if not sink.headers_done and self._head_fed > self._limits.max_header_bytes:
            raise UpstreamProtocolError(_OVERSIZE, "response head too large")

    def _feed_head_only(self, data: bytes) -> None:
        """Frame heads here: llhttp would wait for a body that a HEAD response never has."""
        sink = self._sink
        buf = self._head_buf
        buf += data
        while not sink.complete:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > self._limits.max_header_bytes:
                    raise UpstreamProtocolError(_OVERSIZE, "response head too large")
                return
            head = bytes(buf[:end + 4])
            del buf[:end + 4]
            self._parse(head)
            if sink.headers_done and sink.status >= 200:
                sink.complete = True
        if buf:
            sink.extra = True
            del buf[:]

    def _parse(self, data: bytes) -> None:
        assert self._parser is not None
        sink = self._sink
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            if sink.failure is not None:
                raise sink.failure from None
            if sink.complete:  # bytes after the response (llhttp stopped on them)
                sink.extra = True
                self._clean = False
                return
            if isinstance(exc, httptools.HttpParserUpgrade):
                raise UpstreamProtocolError(_MALFORMED, "unrequested protocol upgrade") from None
            raise UpstreamProtocolError(_MALFORMED, f"invalid response: {exc}") from None
