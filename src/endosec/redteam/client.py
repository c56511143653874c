"""A small asyncio HTTP/1.1 client over the project's strict response reader.

Used by the drills for benign traffic, attack probes and status polling: one keep-alive
connection per `Client`, a timeout per exchange, and any failure reported as an exception.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from endosec.protocols.http import HttpLimits, NeedData, ProtocolError, ResponseReader

__all__ = ["Call", "Client", "ClientError", "Reply", "get_json", "raw_exchange"]

_LIMITS = HttpLimits(max_header_bytes=1 << 20, max_headers=1000, max_body_bytes=1 << 30,
                     max_target_bytes=1 << 20, max_response_bytes=1 << 30)


class ClientError(Exception):
    """No usable reply: connection refused, reset, timed out or malformed."""


@dataclass(frozen=True, slots=True)
class Call:
    """One request to make."""

    method: str
    target: str
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()

    def encode(self, host: str) -> bytes:
        lines = [f"{self.method} {self.target} HTTP/1.1", f"Host: {host}"]
        lines += [f"{n}: {v}" for n, v in self.headers]
        if self.body or self.method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(self.body)}")
            lines.append("Content-Type: application/json")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


@dataclass(frozen=True, slots=True)
class Reply:
    """One reply; ``refusal`` when it is the gateway's own fail-closed answer (HTTP 502 or 503
    with its JSON error, DNS SERVFAIL), never an executor's output."""

    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    refusal: bool = False

    def header(self, name: bytes) -> bytes | None:
        return next((v for n, v in self.headers if n == name), None)

    def contains(self, needle: bytes) -> bool:
        """Whether ``needle`` occurs anywhere in the head or body."""
        return needle in self.body or any(needle in n or needle in v for n, v in self.headers)


class Client:
    """One keep-alive connection to ``host:port``, reopened after any failure.

    ``source`` binds the client's end to a loopback address (127.0.0.0/8 is all local), so
    that one process can be many clients to the gateway.
    """

    def __init__(self, host: str, port: int, *, timeout: float,
                 source: str | None = None) -> None:
        self.host, self.port, self.timeout, self.source = host, port, timeout, source
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(self, call: Call) -> Reply:
        try:
            async with asyncio.timeout(self.timeout):
                return await self._exchange(call)
        except (OSError, TimeoutError, ProtocolError, ClientError) as exc:
            self.close()
            raise ClientError(f"{call.method} {call.target}: {type(exc).__name__}: {exc}") \
                from exc

    async def _exchange(self, call: Call) -> Reply:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(
                self.host, self.port,
                local_addr=None if self.source is None else (self.source, 0))
        assert self._reader is not None
        self._writer.write(call.encode(f"{self.host}:{self.port}"))
        parser = ResponseReader(_LIMITS, call.method.encode())
        while True:
            data = await self._reader.read(1 << 16)
            parser.receive_data(data)
            event = parser.next_event()
            if not isinstance(event, NeedData):
                if not event.keep_alive:
                    self.close()
                return Reply(event.status, event.headers, event.body,
                             refusal=_refusal(event.status, event.body))
            if not data:
                raise ClientError("connection closed")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


def _refusal(status: int, body: bytes) -> bool:
    """The gateway's 502 (no quorum) or 503 (overloaded): a JSON body naming the error."""
    if status not in (502, 503):
        return False
    try:
        data = json.loads(body)
    except ValueError:
        return False
    return isinstance(data, dict) and "error" in data


async def get_json(host: str, port: int, target: str, *, timeout: float = 10.0,
                   token: str | None = None) -> Any:
    """``GET target`` on a fresh connection (with ``token`` as the bearer) and decode the JSON
    body (status must be 200)."""
    client = Client(host, port, timeout=timeout)
    auth = () if token is None else (("Authorization", f"Bearer {token}"),)
    try:
        reply = await client.request(Call("GET", target, headers=auth))
    finally:
        client.close()
    if reply.status != 200:
        raise ClientError(f"GET {target}: status {reply.status}")
    return json.loads(reply.body)


async def raw_exchange(host: str, port: int, data: bytes | list[bytes], *,
                       timeout: float = 5.0, pause: float = 0.0) -> bytes:
    """Send raw bytes (pieces, ``pause`` seconds apart) and read until close or timeout."""
    reader, writer = await asyncio.open_connection(host, port)
    chunks: list[bytes] = []
    try:
        async with asyncio.timeout(timeout):
            for piece in [data] if isinstance(data, bytes) else data:
                writer.write(piece)
                await writer.drain()
                if pause:
                    await asyncio.sleep(pause)
            while chunk := await reader.read(1 << 16):
                chunks.append(chunk)
    except (TimeoutError, OSError):
        pass
    finally:
        writer.close()
    return b"".join(chunks)
