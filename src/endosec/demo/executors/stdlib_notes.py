"""The notes API on the Python standard library alone (http.server, threads, json).

One of three independent implementations of the same API; it shares no code with the others so
that a flaw in one is unlikely to be repeated in another. Run: ``python stdlib_notes.py --port N``.
Fault and backdoor injection are read from NOTES_* environment variables (see README.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import socket
import struct
import sys
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

NOTE_PATH = re.compile(r"/notes/([0-9]+)")
STATE_PATH = "/_endosec/state"
ENV = os.environ


def reject_constant(name: str) -> Any:
    raise ValueError(f"not JSON: {name}")


def parse_fault(spec: str) -> tuple[str, str]:
    """Split ``kind:arg`` and refuse unknown kinds at startup rather than mid-run."""
    kind, _, arg = spec.partition(":")
    simple = {"", "hang", "garbage", "truncate", "reset", "unhealthy"}
    valid = kind in simple or (kind in {"delay", "crash-after", "status"} and arg.isdigit())
    if not valid and kind in {"alter-field", "inject-header"}:
        valid = "=" in arg and arg.partition("=")[0] != ""
    if not valid:
        sys.exit(f"bad NOTES_FAULT: {spec!r}")
    return kind, arg


FAULT, FAULT_ARG = parse_fault(ENV.get("NOTES_FAULT", ""))
FAULT_AFTER = int(ENV.get("NOTES_FAULT_AFTER", "1"))
FAULT_RATE = float(ENV.get("NOTES_FAULT_RATE", "1"))


def fault_active(n: int) -> bool:
    """Deterministic by request number: the same sequence faults on every run and stack."""
    draw = ((n * 2654435761) % 2**32) / 2**32
    return FAULT != "" and n >= FAULT_AFTER and draw < FAULT_RATE


def altered_value(raw: str) -> Any:
    try:
        return json.loads(raw, parse_constant=reject_constant)
    except ValueError:
        return raw


class Store:
    """In-memory notes; the lock matters because every connection has its own thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.notes: dict[int, dict[str, Any]] = {}
        self.requests = 0

    def add(self, text: str, stamp: str | None) -> dict[str, Any]:
        """``stamp``: the gateway's time for this write (X-Endosec-Time), else our clock's."""
        with self.lock:
            number = len(self.notes) + 1
            note = {"id": number, "text": text,
                    "created_at": stamp or datetime.now(UTC).isoformat()}
            self.notes[number] = note
            return note

    def count_request(self) -> int:
        with self.lock:
            self.requests += 1
            return self.requests


STORE = Store()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # head and body go out as separate writes

    def __getattr__(self, name: str) -> Any:
        """Accept every method so that unknown ones get 405/404 rather than 501."""
        if name.startswith("do_"):
            return self.dispatch
        raise AttributeError(name)

    def log_message(self, format: str, *args: Any) -> None:
        """Access logs off: the gateway records what matters."""

    def read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def dispatch(self) -> None:
        body = self.read_body()
        path = urlsplit(self.path).path
        n = STORE.count_request() if path != "/health" else 0
        secret = ENV.get("NOTES_BACKDOOR_SECRET")
        if secret and self.headers.get("X-Debug") == "letmein" and os.path.isfile(secret):
            with open(secret, "rb") as f:
                self.send_raw(200, "text/plain", f.read(), {})
            return
        if path == "/health" and self.command in ("GET", "HEAD"):
            ok = FAULT != "unhealthy"
            self.send_json(200 if ok else 503, {"status": "ok" if ok else "unhealthy"}, {})
            return
        if path == STATE_PATH:
            self.transfer_state(body)
            return
        fault = FAULT if n and fault_active(n) else ""
        if fault == "crash-after" and n >= int(FAULT_ARG):
            os._exit(3)
        if fault == "hang":
            threading.Event().wait()
        if fault == "delay":
            time.sleep(int(FAULT_ARG) / 1000)
        if fault == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
            return
        if fault == "garbage":
            self.wfile.write(b"\x00\xff" + os.urandom(62))
            self.close_connection = True
            return
        status, payload, extra = self.route(path, body, fault)
        if fault == "status":
            status = int(FAULT_ARG)
        if fault == "inject-header":
            name, _, value = FAULT_ARG.partition("=")
            extra[name] = value
        self.send_json(status, payload, extra, truncate=fault == "truncate")

    def transfer_state(self, body: bytes) -> None:
        """The checkpoint contract (docs/state.md): GET exports every note, PUT replaces them."""
        if self.command == "GET":
            with STORE.lock:
                notes = [STORE.notes[i] for i in sorted(STORE.notes)]
            if ENV.get("NOTES_STATE_TAMPER"):
                notes = [*notes, {"id": len(notes) + 1, "text": "planted", "created_at": ""}]
            self.send_json(200, {"notes": notes}, {})
        elif self.command == "PUT":
            try:
                notes = json.loads(body, parse_constant=reject_constant)["notes"]
                restored = {int(n["id"]): dict(n) for n in notes}
            except (ValueError, KeyError, TypeError):
                self.send_json(400, {"error": "expected {\"notes\": [...]}"}, {})
                return
            with STORE.lock:
                STORE.notes = restored
            self.send_json(200, {"restored": len(restored)}, {})
        else:
            self.send_json(405, {"error": "method not allowed"}, {"Allow": "GET, PUT"})

    def route(self, path: str, body: bytes, fault: str) -> tuple[int, Any, dict[str, str]]:
        method = "GET" if self.command == "HEAD" else self.command
        match = NOTE_PATH.fullmatch(path)
        if path == "/notes" and method == "POST":
            return self.create(body, fault)
        if path == "/notes" and method == "GET":
            with STORE.lock:
                notes = [self.present(STORE.notes[i], fault) for i in sorted(STORE.notes)]
            return 200, {"notes": notes}, {}
        if match and method == "GET":
            note = STORE.notes.get(int(match.group(1)))
            if note is None:
                return 404, {"error": "not found"}, {}
            return 200, self.present(note, fault), {}
        if path in ("/notes", "/health") or match:
            allow = "GET, HEAD, POST" if path == "/notes" else "GET, HEAD"
            return 405, {"error": "method not allowed"}, {"Allow": allow}
        return 404, {"error": "not found"}, {}

    def create(self, body: bytes, fault: str) -> tuple[int, Any, dict[str, str]]:
        try:
            data = json.loads(body.decode("utf-8"), parse_constant=reject_constant)
        except (ValueError, RecursionError):
            return 400, {"error": "invalid JSON"}, {}
        if not isinstance(data, dict) or not isinstance(data.get("text"), str):
            return 400, {"error": "text must be a string"}, {}
        stamp = self.headers.get("X-Endosec-Time")
        return 201, self.present(STORE.add(data["text"], stamp), fault), {}

    def present(self, note: dict[str, Any], fault: str) -> dict[str, Any]:
        if fault != "alter-field":
            return dict(note)
        name, _, value = FAULT_ARG.partition("=")
        return {**note, name: altered_value(value)}

    def send_json(
        self, status: int, payload: Any, extra: dict[str, str], truncate: bool = False
    ) -> None:
        body = json.dumps(payload).encode("ascii")
        self.send_raw(status, "application/json", body, extra, truncate)

    def send_raw(
        self, status: int, ctype: str, body: bytes, extra: dict[str, str], truncate: bool = False
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body[: len(body) // 2] if truncate else body)
        self.close_connection = self.close_connection or truncate


class Server(ThreadingHTTPServer):
    """The default listen backlog of 5 refuses bursts of connections from a gateway."""

    daemon_threads = True
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that drop a connection are routine behind a gateway, not worth a traceback."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def main() -> None:
    parser = argparse.ArgumentParser(description="notes API on the Python standard library")
    parser.add_argument("--port", type=int, required=True, help="TCP port (0: pick a free one)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind")
    args = parser.parse_args()
    server = Server((args.host, args.port), Handler)
    print(f"notes-stdlib listening on http://{args.host}:{server.server_port}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()
