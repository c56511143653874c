"""Moving an executor's state in and out: the two halves of a checkpoint (see docs/state.md).

An executor declares one of two ways in its config (`executors[].state`):

* ``http: PATH`` - ``GET PATH`` returns the whole state, ``PUT PATH`` with such a body replaces
  it (a 2xx status means done);
* ``export: [argv]`` and ``import: [argv]`` - a command that prints the state on standard output,
  and one that reads it on standard input (exit status 0 means done). ``{host}`` and ``{port}``
  in the arguments are the executor's address.

Failures come back as `StateError`, in the runtime drivers' exception tree.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from endosec.config import StateConfig
from endosec.protocols.http import HttpLimits, NeedData, ProtocolError, Response, ResponseReader
from endosec.runtime.base import RuntimeDriverError

__all__ = ["CommandState", "HttpState", "StateError", "StateTransfer", "state_transfer"]

_LIMITS = HttpLimits(max_response_bytes=1 << 30, max_body_bytes=1 << 30)


class StateError(RuntimeDriverError):
    """An export or import failed; the message says how."""


class StateTransfer(Protocol):
    """Export or import one executor's whole state."""

    async def export(self, host: str, port: int) -> bytes: ...

    async def restore(self, host: str, port: int, state: bytes) -> None: ...


@dataclass(frozen=True, slots=True)
class HttpState:
    path: str
    timeout: float = 30.0

    async def export(self, host: str, port: int) -> bytes:
        response = await self._exchange(host, port, b"GET", b"")
        return response.body

    async def restore(self, host: str, port: int, state: bytes) -> None:
        await self._exchange(host, port, b"PUT", state)

    async def _exchange(self, host: str, port: int, method: bytes, body: bytes) -> Response:
        try:
            async with asyncio.timeout(self.timeout):
                return await _request(host, port, method, self.path.encode(), body)
        except (OSError, TimeoutError, ProtocolError) as exc:
            what = "export" if method == b"GET" else "import"
            raise StateError(f"state {what} from {host}:{port}{self.path} failed: "
                             f"{exc or type(exc).__name__}") from exc


async def _request(host: str, port: int, method: bytes, path: bytes, body: bytes) -> Response:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        authority = (f"[{host}]:{port}" if ":" in host else f"{host}:{port}").encode()
        writer.write(b"%s %s HTTP/1.1\r\nhost: %s\r\ncontent-type: application/json\r\n"
                     b"content-length: %d\r\nconnection: close\r\n\r\n%s"
                     % (method, path, authority, len(body), body))
        await writer.drain()
        parser = ResponseReader(_LIMITS, method)
        while True:
            data = await reader.read(1 << 16)
            parser.receive_data(data)
            event = parser.next_event()
            if not isinstance(event, NeedData):
                break
        if not 200 <= event.status < 300:
            raise StateError(f"status {event.status}: {event.body[:200]!r}")
        return event
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


@dataclass(frozen=True, slots=True)
class CommandState:
    export_argv: Sequence[str]
    import_argv: Sequence[str]
    timeout: float = 60.0

    async def export(self, host: str, port: int) -> bytes:
        return await self._run(self.export_argv, host, port, b"")

    async def restore(self, host: str, port: int, state: bytes) -> None:
        await self._run(self.import_argv, host, port, state)

    async def _run(self, argv: Sequence[str], host: str, port: int, stdin: bytes) -> bytes:
        args = [a.replace("{host}", host).replace("{port}", str(port)) for a in argv]
        try:
            proc = await asyncio.create_subprocess_exec(
                *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE)
        except OSError as exc:
            raise StateError(f"state command {args[0]}: {exc.strerror or exc}") from exc
        try:
            async with asyncio.timeout(self.timeout):
                out, err = await proc.communicate(stdin)
        except TimeoutError as exc:
            proc.kill()
            await proc.wait()
            raise StateError(f"state command {args[0]} took longer than {self.timeout:g} s"
                             ) from exc
        if proc.returncode != 0:
            raise StateError(f"state command {args[0]} exited {proc.returncode}: "
                             f"{err.decode(errors='replace')[-300:]}")
        return out


def state_transfer(config: StateConfig) -> StateTransfer:
    if config.http is not None:
        return HttpState(config.http)
    assert config.export is not None and config.import_ is not None
    return CommandState(config.export, config.import_)
