"""The grammar pieces (RFC 9110/9112) shared by the readers and the writers."""

from __future__ import annotations

import re
from collections.abc import Iterable

from endosec.protocols.http._errors import LocalProtocolError

Headers = tuple[tuple[bytes, bytes], ...]

TCHAR = rb"!#$%&'*+.^_`|~0-9A-Za-z-"
TOKEN = re.compile(rb"[" + TCHAR + rb"]+")
LOWER_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9a-z-]+")
# field-value: visible bytes with inner spaces/tabs, no surrounding whitespace, no controls.
_VCHAR = rb"[\x21-\x7e\x80-\xff]"
FIELD_VALUE = re.compile(rb"(?:" + _VCHAR + rb"(?:[\t\x20-\x7e\x80-\xff]*" + _VCHAR + rb")?)?")
TARGET = re.compile(rb"[\x21-\x7e]+")
REASON = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
DIGITS = re.compile(rb"[0-9]+")

# Headers that describe one connection, not the message: never forwarded in either direction.
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
    b"transfer-encoding", b"upgrade", b"proxy-authorization", b"proxy-authenticate",
})
# Never dropped even when a Connection header names them: stripping Host would change the request.
_PROTECTED = frozenset({b"host"})


def connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """The lower-cased options listed by every Connection header."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b","))
    tokens.discard(b"")
    return frozenset(tokens)


def end_to_end(headers: Headers, also_drop: frozenset[bytes] = frozenset()) -> list[
        tuple[bytes, bytes]]:
    """The headers a proxy may forward: hop-by-hop ones and those Connection names removed."""
    drop = HOP_BY_HOP | also_drop | (connection_tokens(headers) - _PROTECTED)
    return [(n, v) for n, v in headers if n not in drop]


def check_headers(headers: Iterable[tuple[bytes, bytes]]) -> None:
    """Refuse any header that would let bytes escape its field when written out."""
    for name, value in headers:
        if LOWER_TOKEN.fullmatch(name) is None:
            raise LocalProtocolError(f"invalid header name {name!r} (must be a lower-case token)")
        if FIELD_VALUE.fullmatch(value) is None:
            raise LocalProtocolError(f"invalid value for header {name!r}")


def first(headers: Headers, name: bytes) -> bytes | None:
    """The value of the first header called ``name`` (lower case), if any."""
    for n, v in headers:
        if n == name:
            return v
    return None
