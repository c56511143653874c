"""The grammar pieces (RFC 9110/9112) the message constructors check their fields against."""

from __future__ import annotations

import re
from collections.abc import Iterable

from endosec.protocols.http._errors import LocalProtocolError

Headers = tuple[tuple[bytes, bytes], ...]

TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
LOWER_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9a-z-]+")
# field-value: visible bytes with inner spaces/tabs, no surrounding whitespace, no controls.
_VCHAR = rb"[\x21-\x7e\x80-\xff]"
FIELD_VALUE = re.compile(rb"(?:" + _VCHAR + rb"(?:[\t\x20-\x7e\x80-\xff]*" + _VCHAR + rb")?)?")
TARGET = re.compile(rb"[\x21-\x7e]+")

# Headers that describe one connection, not the message: never forwarded in either direction.
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
    b"transfer-encoding", b"upgrade", b"proxy-authorization", b"proxy-authenticate",
})


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
