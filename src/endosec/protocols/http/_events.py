"""Immutable messages and sentinels exchanged with the HTTP readers and writers.

Constructors check their own fields, so a `Request` or `Response` that exists can always be
written out without letting one header's bytes spill into another (no smuggling by construction).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, cast

from endosec.protocols.http._errors import LocalProtocolError
from endosec.protocols.http._syntax import TARGET, TOKEN, Headers, check_headers, first

__all__ = ["ConnectionClosed", "HttpLimits", "NeedData", "Request", "Response"]


class _Sentinel(type):
    """A class that is its own type, so ``type(NeedData) is NeedData`` (as in h11)."""

    def __new__(cls, name: str, bases: tuple[type, ...], namespace: dict[str, Any]) -> _Sentinel:
        assert bases == (_Sentinel,)
        v = super().__new__(cls, name, bases, namespace)
        v.__class__ = v  # type: ignore[assignment]
        return v

    def __repr__(self) -> str:
        return self.__name__


class NeedData(_Sentinel, metaclass=_Sentinel):
    """No complete message yet: feed more bytes with ``receive_data``."""


class ConnectionClosed(_Sentinel, metaclass=_Sentinel):
    """The client is done: it closed cleanly, or its last request asked to close."""


# Each sentinel is an instance of itself; these typed aliases let readers declare
# ``-> Request | NeedData`` so that ``isinstance(event, NeedData)`` narrows for callers.
NEED_DATA = cast(NeedData, NeedData)
CONNECTION_CLOSED = cast(ConnectionClosed, ConnectionClosed)


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """Resource limits for one connection; exceeding them is the peer's fault."""

    max_header_bytes: int = 16384
    max_headers: int = 100
    max_body_bytes: int = 1 << 20
    max_target_bytes: int = 8192
    max_response_bytes: int = 16 << 20

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"HttpLimits.{f.name} must be a positive integer, got {value!r}")


@dataclass(frozen=True, slots=True)
class Request:
    """One complete client request, body de-chunked.

    ``headers`` keeps the client's order with lower-cased names; ``target`` is always in
    origin form (``/path?query``) or ``*``.
    """

    method: bytes
    target: bytes
    headers: Headers
    body: bytes = b""
    keep_alive: bool = True
    http_version: bytes = b"1.1"

    def __post_init__(self) -> None:
        if TOKEN.fullmatch(self.method) is None:
            raise LocalProtocolError(f"invalid method {self.method!r}")
        if TARGET.fullmatch(self.target) is None:
            raise LocalProtocolError(f"invalid request target {self.target!r}")
        if self.http_version not in (b"1.0", b"1.1"):
            raise LocalProtocolError(f"unsupported HTTP version {self.http_version!r}")
        check_headers(self.headers)
        if self.http_version == b"1.1" and first(self.headers, b"host") is None:
            raise LocalProtocolError("an HTTP/1.1 request needs a Host header")

    def header(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (lower case), or None."""
        return first(self.headers, name)


@dataclass(frozen=True, slots=True)
class Response:
    """One complete executor response as read off the wire, body de-chunked.

    Headers are kept verbatim (names lower-cased), framing headers included: the canonicaliser
    decides what is compared and `encode_response` decides what is forwarded.
    """

    status: int
    reason: bytes
    headers: Headers
    body: bytes = b""
    keep_alive: bool = True

    def __post_init__(self) -> None:
        if not 100 <= self.status <= 599:
            raise LocalProtocolError(f"status {self.status} is outside 100..599")

    def header(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (lower case), or None."""
        return first(self.headers, name)
