"""Bytes out: the one request every executor receives, and the answer the client receives.

Both directions drop hop-by-hop headers and recompute framing, so nothing a client or an
executor says about its own connection can leak through the gateway. The writers are the data
plane's own (``rust/dataplane/src/http/write.rs``); `response_output` builds the reference
arbiter's view of a response.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from endosec import _native
from endosec.core.canonicalise import RuleSet
from endosec.core.model import Output
from endosec.protocols.http._errors import LocalProtocolError
from endosec.protocols.http._events import Request, Response

__all__ = ["encode_response", "error_response", "response_output",
           "upstream_request_bytes"]

def upstream_request_bytes(request: Request, *, host: bytes = b"") -> bytes:
    """The single byte string sent, identically, to every executor.

    HTTP/1.1 with the client's end-to-end headers in order, a recomputed Content-Length and
    ``connection: keep-alive``. ``host`` fills in Host for HTTP/1.0 clients that sent none.
    """
    try:
        return _native.upstream_request_bytes(
            request.method, request.target, list(request.headers), request.body,
            request.keep_alive, request.http_version == b"1.1", host)
    except ValueError as exc:
        raise LocalProtocolError(str(exc)) from None


def encode_response(response: Response, *, keep_alive: bool, head_only: bool,
                    extra_headers: Sequence[tuple[bytes, bytes]] = ()) -> bytes:
    """The chosen response as sent to the client.

    The reason phrase is the standard one for the status (executors' phrases are not voted on).
    For a HEAD request (``head_only``) the body is omitted and the executor's own
    Content-Length, which describes the GET body, is kept.
    """
    try:
        return _native.encode_response(response.status, list(response.headers), response.body,
                                       keep_alive, head_only, list(extra_headers))
    except ValueError as exc:
        raise LocalProtocolError(str(exc)) from None


def error_response(status: int, payload: Mapping[str, str], *,
                   keep_alive: bool = False) -> bytes:
    """A JSON error answered by the gateway itself (400, 413, 431, 502, ...).

    ``connection: close`` by default: after a protocol error the stream cannot be trusted.
    """
    try:
        return _native.error_response(status, list(payload.items()), keep_alive)
    except ValueError as exc:
        raise LocalProtocolError(str(exc)) from None


def response_output(executor: str, response: Response, rules: RuleSet, path: str,
                    latency: float) -> Output:
    """The arbiter's view of one executor's response.

    ``head`` is the status with the canonical headers; the body is compared raw first and
    canonicalised by the rule ``rules`` picks for ``path``, the Content-Type and the status.
    """
    content_type = response.header(b"content-type") or b""
    return Output(
        executor,
        response.body,
        rules.for_response(path, content_type.decode("latin-1"), response.status),
        head=(response.status,
              rules.headers.canonical_headers(response.headers, response.status)),
        latency=latency,
    )
