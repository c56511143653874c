"""The features of a request, as immune memory and the learned detectors see it.

A request is reduced to a set of 64-bit feature ids: its method, its path template (digit runs
as ``#``) and segments, query parameter names and value tokens, header names and value tokens,
and the first tokens of its body. A token is a run of ASCII letters and digits, lowercased, digit
runs as ``#``, 2 to 32 bytes long. Values that differ on every request or that hold secrets
(``Content-Length``, ``Host``, ``Date``, ``Cookie``, ``Authorization``) give their name only, so
that a memory neither keys on noise nor keeps a credential; the gateway's own ``X-Endosec-*``
headers give nothing. Percent-escapes in the path and query
are decoded first (``+`` as a space in the query), so that spelling does not hide a token.

A DNS query is reduced the same way (`query_features`): its type, its name's template and
labels. This is the reference; the data plane computes the same ids natively and a
differential property holds them equal.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

__all__ = ["BODY_BYTES", "MAX_TOKENS", "fnv1a", "query_features", "request_features", "tokens"]

#: How much of a body is read for tokens.
BODY_BYTES = 4096
#: Tokens kept from one value, query or body.
MAX_TOKENS = 64
_VALUELESS = frozenset({b"content-length", b"host", b"date", b"cookie", b"authorization",
                        b"proxy-authorization"})
_RUN = re.compile(rb"[A-Za-z0-9]+")
_DIGITS = re.compile(rb"[0-9]+")
_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})")
_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_MASK = (1 << 64) - 1


def fnv1a(data: bytes) -> int:
    """FNV-1a, 64 bits: stable across processes and languages, and cheap on short tokens."""
    h = _FNV_OFFSET
    for b in data:
        h = ((h ^ b) * _FNV_PRIME) & _MASK
    return h


def _unescape(data: bytes, *, plus: bool) -> bytes:
    if plus:
        data = data.replace(b"+", b" ")
    return _ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), data)


def tokens(data: bytes) -> list[bytes]:
    """The first `MAX_TOKENS` tokens of ``data``, in order, repeats included."""
    out = []
    for m in _RUN.finditer(data):
        t = _DIGITS.sub(b"#", m.group().lower())
        if 2 <= len(t) <= 32:
            out.append(t)
            if len(out) == MAX_TOKENS:
                break
    return out


def _tagged(tag: bytes, items: Iterable[bytes]) -> list[bytes]:
    return [tag + t for t in items]


def request_features(method: bytes, target: bytes, headers: Sequence[tuple[bytes, bytes]],
                     body: bytes) -> list[int]:
    """The request's feature ids, sorted and without repeats."""
    path, _, query = target.partition(b"?")
    template = _DIGITS.sub(b"#", _unescape(path, plus=False))
    names = [b"m:" + method, b"p:" + template]
    names += [b"s:" + s.lower() for s in template.split(b"/") if s]
    qtokens: list[bytes] = []
    for param in query.split(b"&") if query else ():
        name, _, value = param.partition(b"=")
        names.append(b"q:" + _unescape(name, plus=True).lower())
        qtokens += tokens(_unescape(value, plus=True))
    names += _tagged(b"v:", qtokens[:MAX_TOKENS])
    for name, value in headers:
        lname = name.lower()
        if lname.startswith(b"x-endosec-"):
            continue
        names.append(b"h:" + lname)
        if lname not in _VALUELESS:
            names += _tagged(b"hv:" + lname + b"=", tokens(value))
    names += _tagged(b"b:", tokens(body[:BODY_BYTES]))
    return sorted({fnv1a(n) for n in names})


def query_features(qtype: str, name: str) -> list[int]:
    """A DNS query's feature ids: its type (``m:``), its name (lowercase, with its final dot)
    with digit runs as ``#`` (``p:``), and each label of that (``s:``)."""
    template = _DIGITS.sub(b"#", name.encode())
    names = [b"m:" + qtype.encode(), b"p:" + template]
    names += [b"s:" + label for label in template.split(b".") if label]
    return sorted({fnv1a(n) for n in names})
