"""Bytes out: the one request every executor receives, and the answer the client receives.

Both directions drop hop-by-hop headers and recompute framing, so nothing a client or an
executor says about its own connection can leak through the gateway.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from http import HTTPStatus

from endosec.core.canonicalise import RuleSet
from endosec.core.model import Output
from endosec.protocols.http._errors import LocalProtocolError
from endosec.protocols.http._events import Request, Response
from endosec.protocols.http._syntax import DIGITS, check_headers, end_to_end

__all__ = ["encode_response", "error_response", "response_output",
           "upstream_request_bytes"]

# Methods whose requests carry a body by convention: always send a Content-Length for them.
_BODY_METHODS = frozenset({b"POST", b"PUT", b"PATCH"})
# Framing is recomputed; Expect is answered by the gateway, which always sends whole bodies.
_REQUEST_RECOMPUTED = frozenset({b"content-length", b"expect"})
_RESPONSE_RECOMPUTED = frozenset({b"content-length"})
_CRLF = b"\r\n"


def upstream_request_bytes(request: Request, *, host: bytes = b"") -> bytes:
    """The single byte string sent, identically, to every executor.

    HTTP/1.1 with the client's end-to-end headers in order, a recomputed Content-Length and
    ``connection: keep-alive``. ``host`` fills in Host for HTTP/1.0 clients that sent none.
    """
    lines = [request.method + b" " + request.target + b" HTTP/1.1"]
    has_host = False
    for name, value in end_to_end(request.headers, _REQUEST_RECOMPUTED):
        has_host = has_host or name == b"host"
        lines.append(name + b": " + value)
    if not has_host:
        check_headers(((b"host", host),))
        lines.append(b"host: " + host)
    body = request.body
    if body or request.method in _BODY_METHODS:
        lines.append(b"content-length: %d" % len(body))
    lines.append(b"connection: keep-alive")
    lines.append(b"")
    lines.append(body)
    return _CRLF.join(lines)


def _status_line(status: int) -> bytes:
    try:
        phrase = HTTPStatus(status).phrase.encode()
    except ValueError:
        phrase = b""
    return b"HTTP/1.1 %d %s" % (status, phrase)


def encode_response(response: Response, *, keep_alive: bool, head_only: bool,
                    extra_headers: Sequence[tuple[bytes, bytes]] = ()) -> bytes:
    """The chosen response as sent to the client.

    The reason phrase is the standard one for the status (executors' phrases are not voted on).
    For a HEAD request (``head_only``) the body is omitted and the executor's own
    Content-Length, which describes the GET body, is kept.
    """
    status = response.status
    if status < 200:
        raise LocalProtocolError(f"cannot forward interim status {status}")
    lowered = tuple((n.lower(), v) for n, v in response.headers)
    headers = end_to_end(lowered, _RESPONSE_RECOMPUTED)
    headers.extend(extra_headers)
    check_headers(headers)
    lines = [_status_line(status)]
    lines.extend(n + b": " + v for n, v in headers)
    bodyless = status in (204, 304)
    if head_only:
        length = response.header(b"content-length")
        if length is not None and DIGITS.fullmatch(length) and not bodyless:
            lines.append(b"content-length: " + length)
        elif response.body and not bodyless:
            lines.append(b"content-length: %d" % len(response.body))
    elif not bodyless:
        lines.append(b"content-length: %d" % len(response.body))
    lines.append(b"connection: keep-alive" if keep_alive else b"connection: close")
    lines.append(b"")
    lines.append(b"" if head_only or bodyless else response.body)
    return _CRLF.join(lines)


def error_response(status: int, payload: Mapping[str, object], *,
                   keep_alive: bool = False) -> bytes:
    """A JSON error answered by the gateway itself (400, 413, 431, 502, ...).

    ``connection: close`` by default: after a protocol error the stream cannot be trusted.
    """
    if not 400 <= status <= 599:
        raise LocalProtocolError(f"error status must be 4xx or 5xx, got {status}")
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True, default=str).encode()
    return _CRLF.join([
        _status_line(status),
        b"content-type: application/json",
        b"cache-control: no-store",
        b"content-length: %d" % len(body),
        b"connection: keep-alive" if keep_alive else b"connection: close",
        b"",
        body,
    ])


def response_output(executor: str, response: Response, rules: RuleSet, path: str,
                    latency: float) -> Output:
    """The arbiter's view of one executor's response.

    ``head`` is the status with the canonical headers; the body is compared raw first and
    canonicalised by the rule ``rules`` picks for ``path`` and the Content-Type.
    """
    content_type = response.header(b"content-type") or b""
    return Output(
        executor,
        response.body,
        rules.for_response(path, content_type.decode("latin-1")),
        head=(response.status,
              rules.headers.canonical_headers(response.headers, response.status)),
        latency=latency,
    )
