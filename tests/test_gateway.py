"""End-to-end: a real `endosec run` in front of the real demo executors, on loopback."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gatewayctl import Gateway, demo_config, pid_alive, with_env

pytestmark = pytest.mark.slow

if shutil.which("node") is None:  # pragma: no cover - Node ships with the test machines
    pytest.skip("node is needed for the three-stack demo (install nodejs)",
                allow_module_level=True)

SECRET = (Path(__file__).resolve().parents[1] / "src/endosec/demo/secret.txt").read_text().strip()


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    gw = Gateway(tmp_path, demo_config())
    yield gw
    gw.stop()


def start(tmp_path: Path, data: dict) -> Gateway:
    return Gateway(tmp_path, data)


def test_three_stacks_agree_on_the_notes_api(gateway: Gateway) -> None:
    code, _, body = gateway.request("POST", "/notes", {"text": "hello"})
    assert code == 201, body
    note = json.loads(body)
    assert note["id"] == 1 and note["text"] == "hello"
    code, _, body = gateway.request("GET", "/notes/1")
    assert code == 200 and json.loads(body)["text"] == "hello"
    code, _, body = gateway.request("GET", "/notes")
    assert code == 200 and [n["id"] for n in json.loads(body)["notes"]] == [1]
    code, _, body = gateway.request("GET", "/notes/99")
    assert code == 404
    # Stragglers are judged after the reply: wait until all four verdicts are final.
    status = gateway.wait_for(lambda s: len(s["recent_verdicts"]) == 4, what="four verdicts")
    assert sorted(status["active"]) == ["aiohttp", "node", "stdlib"]
    recent = status["recent_verdicts"]
    assert all(v["outcome"] == "accepted" and len(v["agreed"]) == 3 for v in recent), recent


def test_backdoor_is_suppressed_quarantined_cleansed_and_agrees_again(tmp_path: Path) -> None:
    data = with_env(demo_config(), "stdlib",
                    NOTES_BACKDOOR_SECRET=str(Path(__file__).resolve().parents[1]
                                              / "src/endosec/demo/secret.txt"))
    gw = start(tmp_path, data)
    try:
        code, _, _ = gw.request("POST", "/notes", {"text": "before"})
        assert code == 201
        old_pid = gw.executor("stdlib")["pid"]
        code, _, body = gw.request("GET", "/notes/1", headers={"X-Debug": "letmein"})
        assert SECRET.encode() not in body
        assert code == 200 and json.loads(body)["text"] == "before"
        gw.wait_for(lambda s: next(e for e in s["executors"] if e["name"] == "stdlib")
                    ["counters"]["quarantines"] >= 1, what="quarantine")
        status = gw.wait_for(
            lambda s: "stdlib" in s["active"]
            and next(e for e in s["executors"] if e["name"] == "stdlib")["pid"] != old_pid,
            what="stdlib cleansed and voting again")
        assert next(e for e in status["executors"] if e["name"] == "stdlib")["counters"][
            "cleanses"] >= 1
        # The cleansed executor got the journal replayed: it agrees on state-dependent reads.
        code, _, body = gw.request("GET", "/notes")
        assert code == 200 and [n["text"] for n in json.loads(body)["notes"]] == ["before"]
        status = gw.wait_for(lambda s: s["recent_verdicts"][-1]["path"] == "/notes"
                             and s["recent_verdicts"][-1]["method"] == "GET",
                             what="the read's verdict")
        last = status["recent_verdicts"][-1]
        assert "stdlib" in last["agreed"] and not last["dissented"], last
        # Proof of trust: the dissent cost points, the cleanse did not restore them.
        by_name = {e["name"]: e for e in status["executors"]}
        assert by_name["stdlib"]["points"] < by_name["node"]["points"], by_name
        assert by_name["stdlib"]["level"] == "L2" and by_name["stdlib"]["identity"]
        assert set(status["levels"]) == {"L0", "L1", "L2", "L3"}
        kinds = [e["event"] for e in gw.event_kinds()]
        assert "dissent" in kinds and "quarantine" in kinds and "cleansed" in kinds
        assert SECRET not in gw.events.read_text()
    finally:
        gw.stop()
    # The signed ledger holds the dissenting verdict and the controller's response, verifiably.
    ledger_dir = tmp_path / "state" / "ledger"
    verify = subprocess.run([sys.executable, "-m", "endosec.cli", "ledger", "verify",
                             str(ledger_dir)], capture_output=True, text=True, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert verify.stdout.startswith("ok: ")
    shown = subprocess.run([sys.executable, "-m", "endosec.cli", "ledger", "show",
                            str(ledger_dir), "--executor", "stdlib", "--json"],
                           capture_output=True, text=True, check=True).stdout
    kinds = {json.loads(line)["payload"]["event"] for line in shown.splitlines()}
    assert {"dissent", "quarantine", "cleansed", "trust-level"} <= kinds, kinds
    assert SECRET not in shown


def test_executor_killed_mid_request_does_not_fail_it_and_is_restarted(tmp_path: Path) -> None:
    gw = start(tmp_path, with_env(demo_config(), "aiohttp", NOTES_FAULT="delay:1500"))
    try:
        victim = gw.executor("aiohttp")["pid"]
        result: dict = {}

        def call() -> None:
            result["reply"] = gw.request("POST", "/notes", {"text": "x"})

        t = threading.Thread(target=call)
        t.start()
        time.sleep(0.5)
        os.kill(victim, signal.SIGKILL)
        t.join(timeout=20)
        code, _, body = result["reply"]
        assert code == 201, body
        gw.wait_for(lambda s: next(e for e in s["executors"] if e["name"] == "aiohttp")["pid"]
                    not in (None, victim) and next(
                        e for e in s["executors"] if e["name"] == "aiohttp")["running"],
                    what="aiohttp restarted")
    finally:
        gw.stop()


def test_hung_executor_times_out_without_stalling_the_reply(tmp_path: Path) -> None:
    data = with_env(demo_config(limits={"read_timeout": 8.0}), "node", NOTES_FAULT="hang")
    gw = start(tmp_path, data)
    try:
        began = time.monotonic()
        code, _, _ = gw.request("GET", "/notes")
        elapsed = time.monotonic() - began
        assert code == 200
        assert elapsed < 4.0, f"the reply waited {elapsed:.1f}s for the hung executor"
        status = gw.wait_for(lambda s: any(
            v["failed"] == ["node"] for v in s["recent_verdicts"]), timeout=15,
            what="hung executor judged as failed")
        node = next(e for e in status["executors"] if e["name"] == "node")
        assert node["counters"]["quarantines"] >= 1
    finally:
        gw.stop()


def test_below_quorum_the_client_gets_a_502(tmp_path: Path) -> None:
    data = with_env(with_env(demo_config(), "aiohttp", NOTES_FAULT="reset"), "node",
                    NOTES_FAULT="reset")
    gw = start(tmp_path, data)
    try:
        code, _, body = gw.request("GET", "/notes")
        assert code == 502
        payload = json.loads(body)
        # Generic, with an id that finds the reason (which names executors) in the events.
        assert set(payload) == {"error", "request"} and payload["error"] == "no quorum"
        assert not any(n in body.decode() for n in ("stdlib", "aiohttp", "node"))
        code, _, body = gw.request("GET", "/notes")
        assert code == 502 and json.loads(body)["error"] == "no quorum"
        # the event is written once the pump drains it (four times a second)
        gw.wait_for(lambda _: any(e.get("request") == payload["request"]
                                  for e in gw.event_kinds()), what="the event", timeout=5)
        [event] = [e for e in gw.event_kinds() if e.get("request") == payload["request"]]
        assert event["event"] == "no-quorum" and "aiohttp" in event["reason"], event
    finally:
        gw.stop()


SMUGGLING = {
    "cl-and-te": b"POST /notes HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "repeated-cl": b"POST /notes HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                   b"Content-Length: 2\r\n\r\n{}",
    "non-numeric-cl": b"POST /notes HTTP/1.1\r\nHost: x\r\nContent-Length: 2a\r\n\r\n{}",
    "bad-chunk-size": b"POST /notes HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b"zz\r\n{}\r\n0\r\n\r\n",
    "obs-fold": b"GET /notes HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
    "bare-lf": b"GET /notes HTTP/1.1\nHost: x\n\n",
    "bare-cr": b"GET /notes HTTP/1.1\r\nHost: x\rX: y\r\n\r\n",
    "nul-byte": b"GET /notes HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
    "te-not-chunked": b"POST /notes HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked"
                      b"\r\n\r\n0\r\n\r\n",
}


def test_smuggling_forms_get_400_and_reach_no_executor(gateway: Gateway) -> None:
    before = len(gateway.status()["recent_verdicts"])
    for name, data in SMUGGLING.items():
        reply = gateway.raw(data)
        assert reply.startswith(b"HTTP/1.1 400"), (name, reply[:200])
    huge = b"GET /notes HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n"
    assert gateway.raw(huge).split(b" ", 2)[1] in (b"431", b"400")
    assert len(gateway.status()["recent_verdicts"]) == before, "a rejected request was forwarded"


def test_oversized_body_gets_413(gateway: Gateway) -> None:
    body = b"x" * (2 << 20)
    head = (b"POST /notes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")
    reply = gateway.raw(head)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]


def test_slow_client_is_cut_off(tmp_path: Path) -> None:
    gw = start(tmp_path, demo_config(limits={"client_header_timeout": 1.0,
                                             "client_idle_timeout": 2.0,
                                             "max_connections": 8}))
    try:
        began = time.monotonic()
        with socket.create_connection(gw.address, timeout=10) as sock:
            sock.sendall(b"GET /notes HTTP/1.1\r\nHost: x\r\n")
            received = b""
            for _ in range(20):  # one header byte every 0.2 s: a slowloris
                try:
                    sock.sendall(b"X")
                except OSError:
                    break
                time.sleep(0.2)
            sock.settimeout(5)
            with contextlib.suppress(OSError):
                received = sock.recv(4096)
        assert time.monotonic() - began < 5.0
        assert received == b"" or received.startswith(b"HTTP/1.1 408")
        # Connections beyond the cap are refused at once instead of queueing.
        socks = [socket.create_connection(gw.address, timeout=5) for _ in range(8)]
        try:
            with socket.create_connection(gw.address, timeout=5) as extra:
                extra.settimeout(5)
                assert extra.recv(4096).startswith(b"HTTP/1.1 503")
        finally:
            for s in socks:
                s.close()
        deadline = time.monotonic() + 5  # the server sees the closes asynchronously
        while (code := gw.request("GET", "/health")[0]) == 503 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert code == 200
    finally:
        gw.stop()


def test_shutdown_leaves_no_orphans(tmp_path: Path) -> None:
    gw = start(tmp_path, demo_config())
    pids = [e["pid"] for e in gw.status()["executors"]]
    assert all(pid_alive(p) for p in pids)
    gw.stop()
    assert gw.proc.returncode == 0
    deadline = time.monotonic() + 5
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(pid_alive(p) for p in pids)


def test_admin_actions_need_the_token(gateway: Gateway) -> None:
    code, _, _ = gateway.request("POST", "/executors/node/quarantine", admin=True,
                                 headers={"Authorization": ""})
    assert code == 401
    code, _, body = gateway.request("POST", "/executors/node/quarantine", admin=True,
                                    headers={"Authorization": "Bearer test-token"})
    assert code == 202, body
    gateway.wait_for(lambda s: "node" not in s["active"], what="node held in quarantine")
    code, _, body = gateway.request("POST", "/executors/node/cleanse", admin=True,
                                    headers={"Authorization": "Bearer test-token"})
    assert code == 202, body
    gateway.wait_for(lambda s: "node" in s["active"] and next(
        e for e in s["executors"] if e["name"] == "node")["counters"]["cleanses"] >= 1,
        what="node cleansed and back")
    code, _, body = gateway.request("GET", "/metrics", admin=True)
    assert code == 200 and b"endosec_requests_total" in body


def test_verdict_headers_and_per_executor_timeout(tmp_path: Path) -> None:
    data = with_env(demo_config(gateway={"verdict_headers": True, "verdict_names": True}),
                    "node", NOTES_FAULT="hang")
    for e in data["executors"]:
        if e["name"] == "node":
            e["read_timeout"] = 0.5  # the global read_timeout stays 3 s
    gw = start(tmp_path, data)
    try:
        code, headers, _ = gw.request("GET", "/notes")
        assert code == 200
        assert headers["x-endosec-verdict"] == "accepted"
        assert set(headers["x-endosec-agreed"].split(",")) == {"stdlib", "aiohttp"}
        began = time.monotonic()
        status = gw.wait_for(lambda s: any(v["failed"] == ["node"]
                                           for v in s["recent_verdicts"]), timeout=10,
                             what="node timed out")
        assert time.monotonic() - began < 2.5, "the executor's own read_timeout was not used"
        assert status["recent_verdicts"][0]["outcome"] == "accepted"
    finally:
        gw.stop()


def _quiet(gw: Gateway, forwarded: int) -> None:
    """``forwarded`` verdicts, each all three stacks agreeing; no dissent, no quarantine."""
    status = gw.wait_for(lambda s: len(s["recent_verdicts"]) == forwarded,
                         what=f"{forwarded} verdicts")
    for v in status["recent_verdicts"]:
        assert v["outcome"] == "accepted" and len(v["agreed"]) == 3, v
    assert all(e["counters"]["quarantines"] == 0 for e in status["executors"])
    assert not [e for e in gw.event_kinds() if e["event"] in ("dissent", "quarantine")]


def test_what_the_stacks_read_differently_is_refused_or_normalised(gateway: Gateway) -> None:
    """OPTIONS /notes, PROPFIND and GET //notes each used to quarantine one stack."""
    code, _, body = gateway.request("POST", "/notes", {"text": "kept"})
    assert code == 201, body
    note = json.loads(body)
    for method in ("OPTIONS", "PROPFIND", "DELETE", "PUT"):
        code, headers, body = gateway.request(method, "/notes")
        assert (code, headers["allow"]) == (405, "GET, HEAD, POST"), (method, body)
        assert json.loads(body) == {"error": "method not allowed"}
    # The stdlib stack read //notes as /notes and aiohttp %6e as n; the others did not.
    for path in ("//notes", "/%6eotes", "/x/../notes", "/./notes"):
        code, _, body = gateway.request("GET", path)
        assert code == 200 and json.loads(body)["notes"][0]["id"] == note["id"], path
    code, _, body = gateway.request("GET", "/notes//%31")
    assert code == 200 and json.loads(body)["text"] == "kept"
    code, headers, _ = gateway.request("POST", "/notes/1", {"text": "x"})  # the stacks' 405
    assert (code, headers["allow"]) == (405, "GET, HEAD")
    assert gateway.raw(b"GET /notes#top HTTP/1.1\r\nHost: x\r\n\r\n").startswith(
        b"HTTP/1.1 400")
    _quiet(gateway, forwarded=1 + 4 + 1 + 1)


def test_without_an_http_section_the_stacks_still_agree_on_methods(tmp_path: Path) -> None:
    gw = start(tmp_path, demo_config(http={"methods": None, "targets": "forward"}))
    try:
        cases = [("OPTIONS", "/notes"), ("PROPFIND", "/notes"), ("POST", "/notes/1"),
                 ("DELETE", "/health"), ("MKCOL", "/nope")]
        for method, path in cases:
            code, _, body = gw.request(method, path)
            assert code in (404, 405), (method, path, code, body)
        _quiet(gw, forwarded=len(cases))
    finally:
        gw.stop()


def test_connections_closed_while_the_gateway_stalled_are_not_failures(tmp_path: Path) -> None:
    """Node closes keep-alive connections idle for 5 s. A gateway stopped that long resumes
    with requests queued, reusing pooled connections the executor closed meanwhile or is
    closing at that moment: no 502, no quarantine."""
    gw = start(tmp_path, demo_config(limits={"upstream_max_age": 60.0}))
    try:
        for _ in range(3):  # every pool holds a live connection
            assert gw.request("GET", "/notes")[0] == 200
        gw.wait_for(lambda s: len(s["recent_verdicts"]) == 3, what="three verdicts")
        replies: list[int] = []
        os.kill(gw.proc.pid, signal.SIGSTOP)
        try:
            time.sleep(5.0)
            callers = [threading.Thread(target=lambda: replies.append(
                gw.request("GET", "/notes", timeout=30)[0])) for _ in range(6)]
            for t in callers:
                t.start()
            time.sleep(0.2)
        finally:
            os.kill(gw.proc.pid, signal.SIGCONT)
        for t in callers:
            t.join(timeout=30)
        assert replies == [200] * 6
        _quiet(gw, forwarded=3 + 6)
    finally:
        gw.stop()


def test_replies_name_no_stack_and_list_headers_in_one_order(tmp_path: Path) -> None:
    """aiohttp says "Server: Python/3.x aiohttp/3.x", Node and the standard library say their
    own: the client sees none of it, and headers in one order whoever answered."""
    data = demo_config(gateway={"face": {"remove": ["server", "x-powered-by", "via"],
                                         "set": {"Via": "1.1 boundary"}}})
    gw = start(tmp_path, data)
    try:
        assert gw.request("POST", "/notes", {"text": "face"})[0] == 201
        host, port = gw.url.removeprefix("http://").rsplit(":", 1)
        orders = set()
        for _ in range(30):
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
            conn.request("GET", "/notes/1")
            resp = conn.getresponse()
            resp.read()
            names = [n.lower() for n, _ in resp.getheaders()]
            conn.close()
            assert "server" not in names and "x-powered-by" not in names, names
            assert resp.getheader("via") == "1.1 boundary"
            orders.add(tuple(names))
        [order] = orders  # the same headers in the same order, 30 times
        framing = ("content-length", "connection")  # the gateway's own, written last
        assert list(order[:-2]) == sorted(order[:-2]) and order[-2:] == framing, order
    finally:
        gw.stop()
