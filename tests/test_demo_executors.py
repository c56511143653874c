"""The three demo executors: one notes API, three independent stacks, injectable faults.

Integration tests: every case starts real processes on 127.0.0.1 and talks HTTP/1.1 to them.
"""

from __future__ import annotations

import http.client
import json
import os
import selectors
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

EXECUTORS = Path(__file__).resolve().parent.parent / "src" / "endosec" / "demo" / "executors"
NODE = shutil.which("node")
COMMANDS = {
    "stdlib": [sys.executable, str(EXECUTORS / "stdlib_notes.py")],
    "aiohttp": [sys.executable, str(EXECUTORS / "aiohttp_notes.py")],
    "node": [NODE or "node", str(EXECUTORS / "notes.js")],
}
NO_NODE = pytest.mark.skipif(NODE is None, reason="node is not installed: notes.js not tested")
STACKS = ["stdlib", "aiohttp", pytest.param("node", marks=NO_NODE)]
AVAILABLE = [name for name in COMMANDS if name != "node" or NODE]


@dataclass(slots=True)
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(slots=True)
class Executor:
    """One running demo executor and a keep-alive connection to it."""

    proc: subprocess.Popen[str]
    port: int
    conns: list[http.client.HTTPConnection] = field(default_factory=list)
    conn: http.client.HTTPConnection = field(init=False)

    def __post_init__(self) -> None:
        self.conn = self.connect()

    def connect(self, timeout: float = 5.0) -> http.client.HTTPConnection:
        """A new connection, closed when the test ends."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        self.conns.append(conn)
        return conn

    def call(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        conn: http.client.HTTPConnection | None = None,
    ) -> Reply:
        conn = conn or self.conn
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return Reply(response.status, response.headers, response.read())

    def post(self, doc: Any) -> Reply:
        return self.call(
            "POST", "/notes", json.dumps(doc).encode(), {"Content-Type": "application/json"}
        )


Launch = Callable[..., Executor]


@pytest.fixture
def launch() -> Iterator[Launch]:
    started: list[Executor] = []

    def start(stack: str, **env: str) -> Executor:
        proc = subprocess.Popen(
            [*COMMANDS[stack], "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, **env},
        )
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)  # type: ignore[arg-type]
            ready = sel.select(timeout=10)
        line = proc.stdout.readline() if ready else ""  # type: ignore[union-attr]
        if "listening on" not in line:
            proc.kill()
            pytest.fail(f"{stack} executor did not start: {line!r}")
        executor = Executor(proc, int(line.rsplit(":", 1)[1]))
        started.append(executor)
        return executor

    yield start
    for executor in started:
        for conn in executor.conns:
            conn.close()
        executor.proc.kill()
        executor.proc.wait(timeout=5)
        if executor.proc.stdout:
            executor.proc.stdout.close()


def without_stamp(note: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in note.items() if k != "created_at"}


BAD_BODIES = {
    b"{not json": "invalid JSON",
    b"": "invalid JSON",
    b"NaN": "invalid JSON",
    b'\xef\xbb\xbf{"text": "bom"}': "invalid JSON",
    b'{"text": "\xff"}': "invalid JSON",
    b'["text"]': "text must be a string",
    b'"text"': "text must be a string",
    b"{}": "text must be a string",
    b'{"text": 5}': "text must be a string",
    b'{"text": null}': "text must be a string",
}


@pytest.mark.parametrize("stack", STACKS)
def test_notes_api_on_one_keep_alive_connection(launch: Launch, stack: str) -> None:
    ex = launch(stack)
    first, second = ex.post({"text": "first"}), ex.post({"text": "second ✓"})
    assert (first.status, second.status) == (201, 201)
    assert first.headers["Content-Type"].startswith("application/json")
    one, two = first.json(), second.json()
    assert without_stamp(one) == {"id": 1, "text": "first"}
    assert without_stamp(two) == {"id": 2, "text": "second ✓"}
    stamp = datetime.fromisoformat(one["created_at"])
    assert stamp.utcoffset() == timedelta(0)
    sock = ex.conn.sock
    assert ex.call("GET", "/notes/1").json() == one
    assert ex.call("GET", "/notes?limit=5").json() == {"notes": [one, two]}
    head = ex.call("HEAD", "/notes/2")
    assert (head.status, head.body) == (200, b"")
    assert int(head.headers["Content-Length"]) == len(second.body)
    assert ex.call("GET", "/health").json() == {"status": "ok"}
    assert ex.call("GET", "/notes", headers={"X-Debug": "letmein"}).json()["notes"] == [one, two]
    assert ex.conn.sock is sock, "the connection should have been kept alive"
    for path in ("/notes/3", "/notes/abc", "/notes/1/x", "/notes/", "/nope"):
        missing = ex.call("GET", path)
        assert (missing.status, missing.json()) == (404, {"error": "not found"}), path
    for method, path in (
        ("DELETE", "/notes"),
        ("PUT", "/notes/1"),
        ("POST", "/notes/1"),
        ("POST", "/health"),
    ):
        wrong = ex.call(method, path, b"{}")
        assert (wrong.status, wrong.json()) == (405, {"error": "method not allowed"}), path
        assert "GET" in wrong.headers["Allow"]
    for body, message in BAD_BODIES.items():
        bad = ex.call("POST", "/notes", body)
        assert (bad.status, bad.json()) == (400, {"error": message}), body
    assert ex.post({"text": "third"}).json()["id"] == 3


@pytest.mark.parametrize("stack", STACKS)
def test_a_checkpoint_larger_than_a_client_request_is_imported(launch: Launch,
                                                               stack: str) -> None:
    """A cleansed instance imports every note at once: after 100,000 writes that is megabytes
    (aiohttp's own limit was 1 MiB, and a soak left its instance quarantined for good)."""
    ex = launch(stack)
    notes = [{"id": i, "text": "x" * 40, "created_at": "2026-01-01T00:00:00+00:00"}
             for i in range(1, 40_001)]
    body = json.dumps({"notes": notes}).encode()
    assert len(body) > 3 << 20
    reply = ex.call("PUT", "/_endosec/state", body)
    assert reply.status == 200 and reply.json() == {"restored": 40_000}, reply.body[:200]
    assert ex.call("GET", "/notes/40000").json()["id"] == 40_000


def test_stacks_agree_on_meaning_but_differ_in_bytes(launch: Launch) -> None:
    if len(AVAILABLE) < 3:
        print("node is not installed: comparing the Python stacks only")
    executors = [launch(stack) for stack in AVAILABLE]
    posts = [ex.post({"text": 'héllo ✓ "quoted"'}) for ex in executors]
    assert len({reply.body for reply in posts}) > 1, "stacks should differ in raw bytes"
    assert len({reply.headers["Server"] for reply in posts}) == len(executors)
    assert all(reply.headers["Date"] for reply in posts)
    meanings = [without_stamp(reply.json()) for reply in posts]
    assert meanings == [{"id": 1, "text": 'héllo ✓ "quoted"'}] * len(executors)
    for body in BAD_BODIES:
        replies = [ex.call("POST", "/notes", body) for ex in executors]
        assert len({(r.status, json.dumps(r.json())) for r in replies}) == 1, body
    for method, path in (("GET", "/nope"), ("GET", "/notes/9"), ("PATCH", "/notes")):
        replies = [ex.call(method, path) for ex in executors]
        assert len({(r.status, json.dumps(r.json())) for r in replies}) == 1, path
    # A method a resource does not offer: the same 405, Allow spelled alike.
    for method, path in (("OPTIONS", "/notes"), ("PROPFIND", "/notes"), ("POST", "/notes/1"),
                         ("DELETE", "/health")):
        replies = [ex.call(method, path) for ex in executors]
        assert {(r.status, r.headers["Allow"], json.dumps(r.json())) for r in replies} == {
            (405, "GET, HEAD" if path != "/notes" else "GET, HEAD, POST",
             '{"error": "method not allowed"}')}, (method, path)


@pytest.mark.parametrize("stack", STACKS)
def test_backdoor_answers_only_to_its_header(launch: Launch, stack: str, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"root:hunter2\n")
    ex = launch(stack, NOTES_BACKDOOR_SECRET=str(secret))
    honest = ex.call("GET", "/notes")
    assert (honest.status, honest.json()) == (200, {"notes": []})
    assert ex.call("GET", "/notes", headers={"X-Debug": "please"}).json() == {"notes": []}
    leaked = ex.call("GET", "/notes/7", headers={"X-Debug": "letmein"})
    assert (leaked.status, leaked.body) == (200, b"root:hunter2\n")
    assert leaked.headers["Content-Type"].startswith("text/plain")
    assert ex.call("GET", "/health", headers={"X-Debug": "letmein"}).body == b"root:hunter2\n"


@pytest.mark.parametrize("stack", STACKS)
def test_hang_never_answers_but_health_does(launch: Launch, stack: str) -> None:
    ex = launch(stack, NOTES_FAULT="hang")
    with pytest.raises(TimeoutError):
        ex.call("GET", "/notes", conn=ex.connect(timeout=0.5))
    assert ex.call("GET", "/health").json() == {"status": "ok"}


@pytest.mark.parametrize("stack", STACKS)
def test_crash_after_exits_on_the_nth_request(launch: Launch, stack: str) -> None:
    ex = launch(stack, NOTES_FAULT="crash-after:2")
    assert ex.call("GET", "/health").status == 200
    assert ex.post({"text": "kept"}).status == 201
    with pytest.raises((ConnectionError, http.client.RemoteDisconnected)):
        ex.call("GET", "/notes")
    assert ex.proc.wait(timeout=5) == 3


@pytest.mark.parametrize("stack", STACKS)
def test_status_fault_keeps_the_body(launch: Launch, stack: str) -> None:
    ex = launch(stack, NOTES_FAULT="status:503")
    reply = ex.call("GET", "/notes")
    assert (reply.status, reply.json()) == (503, {"notes": []})
    assert ex.call("GET", "/health").status == 200


@pytest.mark.parametrize("stack", STACKS)
def test_inject_header_spares_health(launch: Launch, stack: str) -> None:
    ex = launch(stack, NOTES_FAULT="inject-header:X-Injected=evil=1")
    assert ex.call("GET", "/notes/1").headers["X-Injected"] == "evil=1"
    assert ex.call("GET", "/health").headers["X-Injected"] is None


@pytest.mark.parametrize("stack", STACKS)
def test_alter_field_rewrites_every_note(launch: Launch, stack: str) -> None:
    ex = launch(stack, NOTES_FAULT="alter-field:text=pwned", NOTES_FAULT_AFTER="2")
    assert ex.post({"text": "a"}).json()["text"] == "a"
    assert ex.post({"text": "b"}).json()["text"] == "pwned"
    listed = ex.call("GET", "/notes").json()["notes"]
    assert [without_stamp(n) for n in listed] == [
        {"id": 1, "text": "pwned"},
        {"id": 2, "text": "pwned"},
    ]
    assert ex.call("GET", "/notes/9").json() == {"error": "not found"}
    other = launch(stack, NOTES_FAULT="alter-field:id=99")
    assert other.post({"text": "x"}).json()["id"] == 99


@pytest.mark.parametrize("stack", STACKS)
def test_fault_rate_is_repeatable(launch: Launch, stack: str) -> None:
    ex = launch(stack, NOTES_FAULT="status:500", NOTES_FAULT_RATE="0.5", NOTES_FAULT_AFTER="3")
    statuses = [ex.call("GET", "/notes").status for _ in range(12)]
    expected = [
        500 if n >= 3 and (n * 2654435761 % 2**32) / 2**32 < 0.5 else 200 for n in range(1, 13)
    ]
    assert statuses == expected
    assert 200 in statuses[2:] and 500 in statuses


@pytest.mark.parametrize("stack", STACKS)
def test_wire_faults(launch: Launch, stack: str) -> None:
    truncated = launch(stack, NOTES_FAULT="truncate", NOTES_FAULT_AFTER="2")
    truncated.post({"text": "long enough to cut in half"})
    with pytest.raises(http.client.IncompleteRead):
        truncated.call("GET", "/notes")
    reset = launch(stack, NOTES_FAULT="reset")
    with pytest.raises((ConnectionError, http.client.RemoteDisconnected)):
        reset.call("GET", "/notes")
    garbage = launch(stack, NOTES_FAULT="garbage")
    with socket.create_connection(("127.0.0.1", garbage.port), timeout=5) as sock:
        sock.sendall(b"GET /notes HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b"".join(iter(lambda: sock.recv(4096), b""))
    assert data and not data.startswith(b"HTTP/")
    unhealthy = launch(stack, NOTES_FAULT="unhealthy")
    assert unhealthy.call("GET", "/health").status == 503
    assert unhealthy.call("GET", "/notes").status == 200
    delayed = launch(stack, NOTES_FAULT="delay:400")
    with pytest.raises(TimeoutError):
        delayed.call("GET", "/notes", conn=delayed.connect(timeout=0.05))
    assert delayed.call("GET", "/notes").status == 200


@pytest.mark.parametrize("stack", STACKS)
def test_unknown_fault_refuses_to_start(stack: str) -> None:
    env = {**os.environ, "NOTES_FAULT": "explode"}
    done = subprocess.run(
        [*COMMANDS[stack], "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert done.returncode != 0
    assert "NOTES_FAULT" in done.stderr
