"""Whose fault a protocol failure is, and what to tell the client.

    ProtocolError                 (abstract: never raised itself)
     ├── LocalProtocolError       we were asked to produce invalid HTTP (a caller bug)
     ├── RemoteProtocolError      the client sent invalid or ambiguous HTTP
     └── UpstreamProtocolError    an executor answered with invalid HTTP (``kind`` says how)

Every error carries ``status_hint``, the status the gateway should answer the client with.
"""

from __future__ import annotations

from endosec.core.model import ErrorKind

__all__ = ["LocalProtocolError", "ProtocolError", "RemoteProtocolError", "UpstreamProtocolError"]


class ProtocolError(Exception):
    """A violation of HTTP/1.1; subclasses say whose."""

    reason: str
    status_hint: int

    def __init__(self, reason: str, status_hint: int = 400) -> None:
        if type(self) is ProtocolError:
            raise TypeError("ProtocolError is abstract: raise one of its subclasses")
        super().__init__(reason)
        self.reason = reason
        self.status_hint = status_hint


class LocalProtocolError(ProtocolError):
    """We were asked to build a message that is not valid HTTP."""


class RemoteProtocolError(ProtocolError):
    """The client's bytes are invalid or ambiguous; nothing of them may be forwarded."""


class UpstreamProtocolError(ProtocolError):
    """An executor's response could not be read; it counts as that executor's failure."""

    kind: ErrorKind

    def __init__(self, kind: ErrorKind, reason: str = "") -> None:
        super().__init__(reason or kind.value, 502)
        self.kind = kind
