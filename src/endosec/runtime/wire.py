"""One HTTP/1.1 exchange from the control plane: health checks, agent calls, cleanse webhooks.

The bytes are written and read by the data plane's own writer and reader
(`endosec.protocols.http`), so a hostile peer meets the same strict parser as an executor's
reply on the request path. TLS, when given, is the caller's `ssl.SSLContext` (an agent's
certificate pinned by the driver).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass

from endosec.protocols.http import (
    HttpLimits,
    ProtocolError,
    Request,
    Response,
    ResponseReader,
    upstream_request_bytes,
)

__all__ = ["WireError", "exchange"]

_LIMITS = HttpLimits(max_response_bytes=4 << 20)


class WireError(Exception):
    """No valid reply: the peer is unreachable, closed early, or answered invalid HTTP."""


@dataclass(frozen=True, slots=True)
class _Target:
    host: str
    port: int

    @property
    def authority(self) -> bytes:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}".encode()


async def exchange(host: str, port: int, method: str, path: str, *, body: bytes = b"",
                   headers: tuple[tuple[bytes, bytes], ...] = (),
                   tls: ssl.SSLContext | None = None) -> Response:
    """Send one request on a fresh connection and read the reply (callers bound the time)."""
    target = _Target(host, port)
    request = Request(method.encode(), path.encode(),
                      ((b"host", target.authority), (b"user-agent", b"endosec"), *headers),
                      body, keep_alive=False)
    try:
        reader, writer = await asyncio.open_connection(host, port, ssl=tls)
    except (OSError, ssl.SSLError) as exc:
        raise WireError(f"cannot connect to {host}:{port}: {exc}") from exc
    try:
        writer.write(upstream_request_bytes(request))
        await writer.drain()
        parser = ResponseReader(_LIMITS, request.method)
        while True:
            data = await reader.read(65536)
            parser.receive_data(data)
            event = parser.next_event()
            if isinstance(event, Response):
                return event
    except (OSError, ssl.SSLError, ProtocolError) as exc:
        raise WireError(f"{host}:{port}: {exc}") from exc
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
