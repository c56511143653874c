"""The input agent's request reader: the strict, trusted entry point for client bytes.

Heads are framed and pre-scanned in Python for everything llhttp tolerates or that makes
framing ambiguous (NUL, bare CR or LF, obs-fold, duplicate or malformed Content-Length,
Transfer-Encoding other than ``chunked``), then parsed by llhttp. Bodies are read here, strictly,
so a request is either complete and unambiguous or rejected before any byte is forwarded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import httptools

from endosec.protocols.http._errors import LocalProtocolError, RemoteProtocolError
from endosec.protocols.http._events import (
    CONNECTION_CLOSED,
    NEED_DATA,
    ConnectionClosed,
    HttpLimits,
    NeedData,
    Request,
)
from endosec.protocols.http._syntax import DIGITS, TCHAR, TOKEN, connection_tokens

__all__ = ["RequestReader"]

_REQUEST_LINE = re.compile(rb"([^ ]+) ([^ ]+) HTTP/([0-9]\.[0-9])")
_HOST = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]*)(?::[0-9]*)?")
_ABSOLUTE = re.compile(rb"https?://([^/?#]*)(.*)", re.IGNORECASE | re.DOTALL)
_CHUNK_LINE = re.compile(
    rb"([0-9A-Fa-f]{1,16})"
    rb"(?:;[" + TCHAR + rb"]+(?:=(?:[" + TCHAR + rb"]+|\"[\x20\x21\x23-\x5b\x5d-\x7e]*\"))?)*")
_TRAILER_LINE = re.compile(rb"[" + TCHAR + rb"]+:[^\x00-\x08\x0a-\x1f\x7f]*")
_MAX_CHUNK_LINE = 256
_CHUNKED = -1
_UNSUPPORTED = frozenset({b"CONNECT", b"PRI"})


def _fail(reason: str, status: int = 400) -> RemoteProtocolError:
    return RemoteProtocolError(reason, status)


def _check_line_endings(buf: bytes | bytearray, start: int = 0) -> None:
    """Every CR and LF must belong to a CRLF pair; NUL is never allowed in a head."""
    if buf.find(b"\x00", start) >= 0:
        raise _fail("NUL byte in request head")
    crlf = buf.count(b"\r\n", start)
    if buf.count(b"\n", start) != crlf:
        raise _fail("bare LF line ending")
    if buf.count(b"\r", start) - crlf > (1 if buf.endswith(b"\r") else 0):
        raise _fail("bare CR in request head")


class _HeadSink:
    """llhttp callbacks: only the header fields are taken from it."""

    __slots__ = ("fields",)

    def __init__(self) -> None:
        self.fields: list[tuple[bytes, bytes]] = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields.append((name.lower(), value.rstrip(b" \t")))


@dataclass(frozen=True, slots=True)
class _Head:
    """A validated request head waiting for its body (``length`` is -1 when chunked)."""

    method: bytes
    target: bytes
    version: bytes
    headers: list[tuple[bytes, bytes]]
    keep_alive: bool
    length: int
    expect_continue: bool


def _parse_head(head: bytes, limits: HttpLimits) -> _Head:
    """Validate and parse one head (request line to the blank line, inclusive)."""
    _check_line_endings(head)
    if b"\r\n " in head or b"\r\n\t" in head:
        raise _fail("obsolete line folding in header")
    if head.count(b"\r\n") - 2 > limits.max_headers:
        raise _fail("too many header fields", 431)
    line = head[:head.find(b"\r\n")]
    parts = line.split(b" ")
    if len(parts) == 3 and len(parts[1]) > limits.max_target_bytes:
        raise _fail("request target too long", 414)
    m = _REQUEST_LINE.fullmatch(line)
    if m is None:
        raise _fail("malformed request line")
    method, target, version = m.groups()
    if TOKEN.fullmatch(method) is None:
        raise _fail("invalid method token")
    if version not in (b"1.0", b"1.1"):
        raise _fail(f"HTTP version {version.decode()} is not supported", 505)
    if method in _UNSUPPORTED:
        raise _fail(f"method {method.decode()} is not supported", 501)

    sink = _HeadSink()
    parser = httptools.HttpRequestParser(sink)
    try:
        parser.feed_data(head)
    except httptools.HttpParserUpgrade:
        pass  # Upgrade is hop-by-hop: the request is served as a plain one
    except httptools.HttpParserInvalidMethodError:
        raise _fail(f"method {method.decode()} is not supported", 501) from None
    except httptools.HttpParserError as exc:
        # llhttp checks Content-Length before us; an overflowing one is still a body too large.
        status = 413 if "Content-Length overflow" in str(exc) else 400
        raise _fail(f"invalid request head: {exc}", status) from None
    return _interpret(method, target, version, sink.fields, limits)


def _interpret(method: bytes, target: bytes, version: bytes,
               fields: list[tuple[bytes, bytes]], limits: HttpLimits) -> _Head:
    """Apply the framing rules to parsed fields; anything ambiguous is refused."""
    length: int | None = None
    chunked = False
    hosts = 0
    expect_continue = False
    for name, value in fields:
        if name == b"content-length":
            if length is not None:
                raise _fail("repeated Content-Length")
            if DIGITS.fullmatch(value) is None:
                raise _fail(f"invalid Content-Length {value!r}")
            if len(value) > 18 or int(value) > limits.max_body_bytes:
                raise _fail("request body too large", 413)
            length = int(value)
        elif name == b"transfer-encoding":
            if chunked or value.lower() != b"chunked":
                raise _fail("Transfer-Encoding must be exactly one 'chunked'")
            chunked = True
        elif name == b"host":
            hosts += 1
            if _HOST.fullmatch(value) is None:
                raise _fail("invalid Host header")
        elif name == b"expect":
            if value.lower() != b"100-continue":
                raise _fail("unsupported expectation", 417)
            expect_continue = True
    if chunked and length is not None:
        raise _fail("both Content-Length and Transfer-Encoding")
    if chunked and version == b"1.0":
        raise _fail("Transfer-Encoding in an HTTP/1.0 request")
    if hosts > 1:
        raise _fail("repeated Host header")
    if hosts == 0 and version == b"1.1":
        raise _fail("missing Host header")
    target, fields = _origin_form(method, target, fields)
    tokens = connection_tokens(fields)
    keep_alive = b"close" not in tokens if version == b"1.1" else b"keep-alive" in tokens
    return _Head(method=method, target=target, version=version, headers=fields,
                 keep_alive=keep_alive, length=_CHUNKED if chunked else (length or 0),
                 expect_continue=expect_continue)


def _origin_form(method: bytes, target: bytes, fields: list[tuple[bytes, bytes]]
                 ) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """Rewrite absolute-form to origin form with a matching Host, so executors see one meaning."""
    if target.startswith(b"/"):
        return target, fields
    if target == b"*":
        if method != b"OPTIONS":
            raise _fail("'*' target is only valid for OPTIONS")
        return target, fields
    m = _ABSOLUTE.fullmatch(target)
    if m is None:
        raise _fail("request target must be in origin or absolute form")
    authority, rest = m.groups()
    if not authority or b"@" in authority or _HOST.fullmatch(authority) is None:
        raise _fail("invalid authority in request target")
    path = rest if rest.startswith(b"/") else b"/" + rest
    fields = [(n, v) for n, v in fields if n != b"host"]
    fields.insert(0, (b"host", authority))
    return path, fields


class _ChunkedBody:
    """A strict incremental chunked decoder working on the reader's buffer."""

    __slots__ = ("_limits", "_parts", "_remaining", "_size", "_state")

    def __init__(self, limits: HttpLimits) -> None:
        self._limits = limits
        self._parts: list[bytes] = []
        self._size = 0
        self._remaining = 0
        self._state = "size"

    def feed(self, buf: bytearray) -> bytes | None:
        """Consume what it can from ``buf``; the whole body once the last chunk is read."""
        while True:
            if self._state == "size":
                if not self._size_line(buf):
                    return None
            elif self._state == "data":
                need = self._remaining
                if len(buf) < need + 2:
                    return None
                if buf[need:need + 2] != b"\r\n":
                    raise _fail("chunk data not followed by CRLF")
                self._parts.append(bytes(buf[:need]))
                del buf[:need + 2]
                self._state = "size"
            else:
                return self._trailers(buf)

    def _size_line(self, buf: bytearray) -> bool:
        end = buf.find(b"\r\n", 0, _MAX_CHUNK_LINE + 2)
        if end < 0:
            _check_line_endings(buf[:_MAX_CHUNK_LINE + 2])
            if len(buf) > _MAX_CHUNK_LINE:
                raise _fail("chunk size line too long")
            return False
        line = bytes(buf[:end])
        m = _CHUNK_LINE.fullmatch(line)
        if m is None:
            raise _fail("invalid chunk size line")
        size = int(m.group(1), 16)
        self._size += size
        if self._size > self._limits.max_body_bytes:
            raise _fail("request body too large", 413)
        del buf[:end + 2]
        self._remaining = size
        self._state = "data" if size else "trailers"
        return True

    def _trailers(self, buf: bytearray) -> bytes | None:
        """Validate and drop the trailer section: trailers are never forwarded."""
        if buf.startswith(b"\r\n"):
            del buf[:2]
            return b"".join(self._parts)
        limit = self._limits.max_header_bytes
        end = buf.find(b"\r\n\r\n", 0, limit + 4)
        if end < 0:
            _check_line_endings(buf[:limit + 4])
            if len(buf) > limit:
                raise _fail("trailer section too large", 431)
            return None
        block = bytes(buf[:end])
        _check_line_endings(block)
        for line in block.split(b"\r\n"):
            if _TRAILER_LINE.fullmatch(line) is None:
                raise _fail("invalid trailer field")
        del buf[:end + 4]
        return b"".join(self._parts)


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

    __slots__ = ("_body", "_buf", "_done", "_eof", "_error", "_head", "_head_size", "_limits",
                 "_scanned")

    def __init__(self, limits: HttpLimits | None = None) -> None:
        self._limits = limits or HttpLimits()
        self._buf = bytearray()
        self._eof = False
        self._done = False
        self._error: RemoteProtocolError | None = None
        self._head: _Head | None = None
        self._body: _ChunkedBody | None = None
        self._scanned = 0
        self._head_size = 0

    @property
    def buffered(self) -> int:
        """Bytes received for requests not yet returned (> 0: a request is under way)."""
        return len(self._buf) + (self._head_size if self._head is not None else 0)

    @property
    def expects_continue(self) -> bool:
        """The client sent ``Expect: 100-continue`` and is waiting before sending its body."""
        return self._head is not None and self._head.expect_continue and not self._buf

    def receive_data(self, data: bytes) -> None:
        """Buffer bytes from the client; ``b""`` means the client closed its side."""
        self._raise_if_broken()
        if self._eof and data:
            raise LocalProtocolError("data received after EOF")
        if data:
            self._buf += data
        else:
            self._eof = True

    def next_event(self) -> Request | NeedData | ConnectionClosed:
        """The next complete request, `NeedData`, or `ConnectionClosed` once the client is done."""
        self._raise_if_broken()
        try:
            return self._next()
        except RemoteProtocolError as exc:
            self._error = exc
            raise

    def _raise_if_broken(self) -> None:
        if self._error is not None:
            raise RemoteProtocolError(f"connection already failed: {self._error.reason}",
                                      self._error.status_hint)

    def _next(self) -> Request | NeedData | ConnectionClosed:
        if self._done:
            return CONNECTION_CLOSED
        if self._head is None:
            head = self._take_head()
            if head is None:
                if self._buf or not self._eof:
                    return NEED_DATA
                return CONNECTION_CLOSED
            self._head = self._take_parsed(head)
            self._head_size = len(head)
        body = self._take_body(self._head)
        if body is None:
            if self._eof:
                raise _fail("connection closed in the middle of a request body")
            return NEED_DATA
        h, self._head, self._body = self._head, None, None
        self._done = not h.keep_alive
        try:
            return Request(h.method, h.target, tuple(h.headers), body, h.keep_alive, h.version)
        except LocalProtocolError as exc:
            raise _fail(exc.reason) from None

    def _take_parsed(self, head: bytes) -> _Head:
        parsed = _parse_head(head, self._limits)
        if parsed.length == _CHUNKED:
            self._body = _ChunkedBody(self._limits)
        return parsed

    def _take_head(self) -> bytes | None:
        buf = self._buf
        while buf.startswith(b"\r\n"):  # tolerated blank lines between requests (RFC 9112 2.2)
            del buf[:2]
            self._scanned = 0
        if not buf:
            return None
        end = buf.find(b"\r\n\r\n", max(0, self._scanned - 3))
        if end >= 0:
            if end + 4 > self._limits.max_header_bytes:
                raise _fail("request head too large", 431)
            head = bytes(buf[:end + 4])
            del buf[:end + 4]
            self._scanned = 0
            return head
        start = self._scanned
        if start and buf[start - 1] == 0x0D:
            start -= 1
        _check_line_endings(buf, start)
        self._scanned = len(buf)
        if buf.find(b"\r\n") < 0 and len(buf) > self._limits.max_target_bytes + 64:
            raise _fail("request line too long", 414)
        if len(buf) > self._limits.max_header_bytes:
            raise _fail("request head too large", 431)
        if self._eof:
            raise _fail("connection closed in the middle of a request head")
        return None

    def _take_body(self, head: _Head) -> bytes | None:
        if self._body is not None:
            return self._body.feed(self._buf)
        if len(self._buf) < head.length:
            return None
        body = bytes(self._buf[:head.length])
        del self._buf[:head.length]
        return body
