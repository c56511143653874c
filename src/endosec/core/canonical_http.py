"""The header rule: which headers of an HTTP-like output take part in the vote, and how.

Names are lowercased and ignored headers dropped (by default those every server spells its own
way: Date, Server, ETag, ...); an optional allow list keeps only the named ones; presence-only
headers are compared by presence, not value; content types are compared by media type. Some
differences are legitimate for one status only (say, a ``Content-Range`` some servers add to a
416): ``ignore_on_status`` drops a header for the given statuses and keeps it for all others.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["DEFAULT_IGNORED_HEADERS", "HeaderRule", "header_names", "http_status"]

DEFAULT_IGNORED_HEADERS: tuple[str, ...] = (
    "date", "server", "etag", "last-modified", "x-request-id", "keep-alive", "connection",
    "transfer-encoding", "content-length",
)

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def header_names(field_name: str, names: object) -> frozenset[bytes]:
    """Validate a configured list of header names; their lowercased wire form."""
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise ValueError(f"{field_name}: expected a list of header names")
    out = set()
    for i, name in enumerate(names):
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise ValueError(f"{field_name}[{i}]: invalid header name {name!r}")
        out.add(name.lower().encode("ascii"))
    return frozenset(out)


def http_status(value: object) -> int | None:
    """A configured status as an int, None if it is not one (100-599).

    JSON (and configs rewritten through it) can only spell a mapping key as a string, so a
    string of digits is read as the number it spells.
    """
    status = int(value) if isinstance(value, str) and value.isdigit() else value
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        return None
    return status


def _media_type(value: bytes) -> bytes:
    """``Application/JSON; charset="UTF-8"`` -> ``application/json``: spelling, not meaning."""
    kind, *params = value.split(b";")
    out = [kind.strip().lower()]
    for param in params:
        name, _, v = param.strip().partition(b"=")
        name = name.strip().lower()
        if not name:
            continue
        v = v.strip()
        if name == b"charset":
            v = v.strip(b'"').lower()
            if v == b"utf-8":
                continue
        out.append(name + b"=" + v)
    return b";".join(out)


@dataclass(frozen=True, slots=True)
class HeaderRule:
    """Which headers of an HTTP-like output take part in the vote, and how."""

    ignore: Sequence[str] = DEFAULT_IGNORED_HEADERS
    allow: Sequence[str] | None = None
    presence_only: Sequence[str] = ()
    content_type: str = "media-type"
    ignore_on_status: Mapping[int, Sequence[str]] = field(default_factory=dict)
    _ignore: frozenset[bytes] = field(init=False, repr=False, compare=False)
    _on_status: dict[int, frozenset[bytes]] = field(init=False, repr=False, compare=False)
    _allow: frozenset[bytes] | None = field(init=False, repr=False, compare=False)
    _presence: frozenset[bytes] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_ignore", header_names("ignore", self.ignore))
        allow = None if self.allow is None else header_names("allow", self.allow)
        object.__setattr__(self, "_allow", allow)
        object.__setattr__(self, "_presence", header_names("presence_only", self.presence_only))
        object.__setattr__(self, "ignore", tuple(self.ignore))
        object.__setattr__(self, "presence_only", tuple(self.presence_only))
        if self.allow is not None:
            object.__setattr__(self, "allow", tuple(self.allow))
        on_status = {}
        for key, names in self.ignore_on_status.items():
            status = http_status(key)
            if status is None:
                raise ValueError(f"ignore_on_status: {key!r} is not an HTTP status")
            on_status[status] = self._ignore | header_names(f"ignore_on_status.{status}", names)
        object.__setattr__(self, "_on_status", on_status)
        if self.content_type not in ("media-type", "exact"):
            raise ValueError(f"content_type: must be 'media-type' or 'exact', "
                             f"got {self.content_type!r}")

    def canonical_headers(self, headers: Sequence[tuple[bytes, bytes]], status: int = 0
                          ) -> tuple[tuple[bytes, bytes], ...]:
        """Lowercased names, sorted by name (stable), values trimmed, exemptions applied."""
        out: list[tuple[bytes, bytes]] = []
        present: set[bytes] = set()
        media = self.content_type == "media-type"
        ignore = self._on_status.get(status, self._ignore)
        for name, value in headers:
            n = name.lower()
            if n in ignore:
                continue
            if n in self._presence:
                if n not in present:
                    present.add(n)
                    out.append((n, b""))
                continue
            if self._allow is not None and n not in self._allow:
                continue
            v = value.strip(b" \t")
            if media and n == b"content-type":
                v = _media_type(v)
            out.append((n, v))
        out.sort(key=lambda item: item[0])
        return tuple(out)
