"""The notes API on aiohttp: asyncio, aiohttp's router and its own HTTP parser and writer.

One of three independent implementations of the same API; it shares no code with the others so
that a flaw in one is unlikely to be repeated in another. Run: ``python aiohttp_notes.py --port N``.
Fault and backdoor injection are read from NOTES_* environment variables (see README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import random
import socket
import struct
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
STATE_PATH = "/_endosec/state"
STATE_MAX_BYTES = 1 << 30
dumps = functools.partial(json.dumps, sort_keys=True, separators=(",", ":"))


def strict_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class Faults:
    """NOTES_FAULT and friends, parsed once; unknown specs stop the process at startup."""

    def __init__(self, env: dict[str, str]) -> None:
        spec = env.get("NOTES_FAULT", "")
        self.kind, _, self.arg = spec.partition(":")
        with_number = {"delay", "crash-after", "status"}
        with_pair = {"alter-field", "inject-header"}
        plain = {"", "hang", "garbage", "truncate", "reset", "unhealthy"}
        ok = (
            self.kind in plain
            or (self.kind in with_number and self.arg.isdigit())
            or (self.kind in with_pair and not self.arg.startswith("=") and "=" in self.arg)
        )
        if not ok:
            sys.exit(f"bad NOTES_FAULT: {spec!r}")
        self.after = int(env.get("NOTES_FAULT_AFTER", "1"))
        self.rate = float(env.get("NOTES_FAULT_RATE", "1"))
        self.pair = self.arg.partition("=")[::2]

    def pick(self, n: int) -> str:
        """The fault for the nth non-health request: a multiplicative hash keeps runs repeatable."""
        draw = (n * 2654435761 & 0xFFFFFFFF) / 4294967296
        return self.kind if self.kind and n >= self.after and draw < self.rate else ""

    def field_value(self) -> Any:
        try:
            return json.loads(self.pair[1], parse_constant=strict_constant)
        except ValueError:
            return self.pair[1]


class NotesApp:
    def __init__(self, faults: Faults, secret: str | None) -> None:
        self.faults = faults
        self.secret = Path(secret) if secret else None
        self.notes: list[dict[str, Any]] = []
        self.seen = 0

    def show(self, request: web.Request, note: dict[str, Any]) -> dict[str, Any]:
        if request.get("fault") == "alter-field":
            return note | {self.faults.pair[0]: self.faults.field_value()}
        return note

    async def create(self, request: web.Request) -> web.Response:
        try:
            data = json.loads((await request.read()).decode(), parse_constant=strict_constant)
        except (ValueError, RecursionError):
            return web.json_response({"error": "invalid JSON"}, status=400, dumps=dumps)
        if not isinstance(data, dict) or not isinstance(data.get("text"), str):
            return web.json_response({"error": "text must be a string"}, status=400, dumps=dumps)
        stamp = request.headers.get("X-Endosec-Time") \
            or datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        note = {"id": len(self.notes) + 1, "text": data["text"], "created_at": stamp}
        self.notes.append(note)
        return web.json_response(self.show(request, note), status=201, dumps=dumps)

    async def list_all(self, request: web.Request) -> web.Response:
        body = {"notes": [self.show(request, note) for note in self.notes]}
        return web.json_response(body, dumps=dumps)

    async def get_one(self, request: web.Request) -> web.Response:
        index = int(request.match_info["id"])
        if not 1 <= index <= len(self.notes):
            raise web.HTTPNotFound()
        return web.json_response(self.show(request, self.notes[index - 1]), dumps=dumps)

    async def health(self, request: web.Request) -> web.Response:
        if self.faults.kind == "unhealthy":
            return web.json_response({"status": "unhealthy"}, status=503, dumps=dumps)
        return web.json_response({"status": "ok"}, dumps=dumps)

    async def export_state(self, request: web.Request) -> web.Response:
        """The checkpoint contract (docs/state.md): every note, in id order."""
        notes = list(self.notes)
        if os.environ.get("NOTES_STATE_TAMPER"):
            notes.append({"id": len(notes) + 1, "text": "planted", "created_at": ""})
        return web.json_response({"notes": notes}, dumps=dumps)

    async def import_state(self, request: web.Request) -> web.Response:
        """Replace every note with the checkpoint's."""
        try:
            notes = json.loads(await request.read(), parse_constant=strict_constant)["notes"]
            restored = sorted((dict(n) for n in notes), key=lambda n: int(n["id"]))
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": 'expected {"notes": [...]}'}, status=400,
                                     dumps=dumps)
        self.notes = restored
        return web.json_response({"restored": len(restored)}, dumps=dumps)

    @web.middleware
    async def guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Backdoor, then faults, then the route; router errors become JSON bodies."""
        if request.path == STATE_PATH:
            return await handler(request)
        if request.path != "/health":
            self.seen += 1
        if self.secret and request.headers.get("X-Debug") == "letmein" and self.secret.is_file():
            return web.Response(body=self.secret.read_bytes(), content_type="text/plain")
        fault = "" if request.path == "/health" else self.faults.pick(self.seen)
        request["fault"] = fault
        if fault == "crash-after" and self.seen >= int(self.faults.arg):
            os._exit(3)
        if fault == "hang":
            await asyncio.Event().wait()
        if fault == "delay":
            await asyncio.sleep(int(self.faults.arg) / 1000)
        transport = request.transport
        if fault in ("reset", "garbage") and transport is not None:
            if fault == "reset":
                sock = transport.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                transport.abort()
            else:
                transport.write(b"\x00\xff" + random.randbytes(62))
                transport.close()
            raise asyncio.CancelledError
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            reason = {404: "not found", 405: "method not allowed"}.get(exc.status, exc.reason)
            # aiohttp lists the methods as "GET,HEAD"; the API spells them "GET, HEAD".
            allow = ({"Allow": ", ".join(exc.headers["Allow"].split(","))}
                     if "Allow" in exc.headers else {})
            response = web.json_response(
                {"error": reason}, status=exc.status, headers=allow, dumps=dumps
            )
        return await self.apply(request, fault, response)

    async def apply(
        self, request: web.Request, fault: str, response: web.StreamResponse
    ) -> web.StreamResponse:
        if fault == "status":
            response.set_status(int(self.faults.arg))
        if fault == "inject-header":
            response.headers[self.faults.pair[0]] = self.faults.pair[1]
        if fault != "truncate" or not isinstance(response, web.Response) or not response.body:
            return response
        body = bytes(response.body)  # type: ignore[arg-type]
        partial = web.StreamResponse(status=response.status, headers=response.headers)
        partial.content_length = len(body)
        await partial.prepare(request)
        await partial.write(body[: len(body) // 2])
        if request.transport is not None:
            request.transport.close()
        raise asyncio.CancelledError


def build_app() -> web.Application:
    notes = NotesApp(Faults(dict(os.environ)), os.environ.get("NOTES_BACKDOOR_SECRET"))
    # The checkpoint a cleansed instance imports holds every note: far more than aiohttp's
    # 1 MiB default once the service has run a while. Client requests are bounded by the
    # gateway (limits.max_request_body) before they get here.
    app = web.Application(middlewares=[notes.guard], client_max_size=STATE_MAX_BYTES)
    app.router.add_post("/notes", notes.create)
    app.router.add_get("/notes", notes.list_all)
    app.router.add_get(r"/notes/{id:[0-9]+}", notes.get_one)
    app.router.add_get("/health", notes.health)
    app.router.add_get(STATE_PATH, notes.export_state)
    app.router.add_put(STATE_PATH, notes.import_state)
    return app


async def serve(host: str, port: int) -> None:
    runner = web.AppRunner(build_app(), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    print(f"notes-aiohttp listening on http://{host}:{runner.addresses[0][1]}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description="notes API on aiohttp")
    parser.add_argument("--port", type=int, required=True, help="TCP port (0: pick a free one)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
