"""The gateway's life as operators live it: killed, restarted, never leaving executors behind.

Real `endosec run` processes in front of the demo's stacks, on loopback.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from endosec.runtime.segment import segment_possible
from tests.gatewayctl import Gateway, demo_config, pid_alive

pytestmark = pytest.mark.slow


def python_only() -> dict:
    data = demo_config()
    data["executors"] = [e for e in data["executors"] if e["name"] != "node"]
    data["controller"] = {**data["controller"], "active": 2, "floor": 2}
    return data


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def gone(pids: list[int], within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not any(pid_alive(p) for p in pids)


def test_a_killed_gateway_leaves_no_executor_behind(tmp_path: Path) -> None:
    gw = Gateway(tmp_path, python_only())
    executors = [p for p in gw.leftovers() if p != gw.proc.pid]
    assert len(executors) >= 4, executors  # a supervisor and a server per executor
    namespaces = _namespaces(executors)
    os.kill(gw.proc.pid, signal.SIGKILL)
    gw.proc.communicate(timeout=10)
    assert gone(executors), [cmdline(p) for p in executors if pid_alive(p)]
    # Nor a network segment: each supervisor removed its executor's.
    assert len(namespaces) == (2 if segment_possible() is None else 0), namespaces
    assert not any(Path("/run/netns", n).exists() for n in namespaces)


def _namespaces(pids: list[int]) -> set[str]:
    """The segments these processes run in (none on the host's network)."""
    names = set()
    for pid in pids:
        out = subprocess.run(["ip", "netns", "identify", str(pid)], capture_output=True,
                             text=True, check=False).stdout.strip()
        if out:
            names.add(out)
    return names


def test_the_next_start_stops_what_a_crashed_run_left(tmp_path: Path) -> None:
    data = python_only()
    gw = Gateway(tmp_path, data)
    everything = [p for p in gw.leftovers() if p != gw.proc.pid]
    supervisors = [p for p in everything if "supervise.py" in cmdline(p)]
    servers = [p for p in everything if p not in supervisors]
    assert supervisors and servers
    # The whole tree dies at once but for the servers: a crash no supervisor sees. (The
    # gateway is frozen first, so no supervisor sees it die before being killed itself.)
    os.kill(gw.proc.pid, signal.SIGSTOP)
    for pid in (*supervisors, gw.proc.pid):
        os.kill(pid, signal.SIGKILL)
    gw.proc.communicate(timeout=10)
    time.sleep(0.5)
    assert all(pid_alive(p) for p in servers), "the servers outlived their supervisors"
    again = Gateway(tmp_path, data)
    try:
        assert gone(servers), [cmdline(p) for p in servers if pid_alive(p)]
        [report] = [e for e in again.event_kinds() if e["event"] == "leftovers"]
        groups = [line.split(":")[0] for line in report["stopped"] if "process group" in line]
        assert sorted(groups) == ["aiohttp", "stdlib"], report
        # The supervisors died at once, so the segments were left too (as root).
        segments = [line for line in report["stopped"] if "network namespace" in line]
        assert len(segments) == (2 if segment_possible() is None else 0), report
        assert again.request("GET", "/notes")[0] == 200
    finally:
        again.stop()


def test_probes_are_detail_free_and_readiness_follows_the_floor(tmp_path: Path) -> None:
    gw = Gateway(tmp_path, python_only())
    try:
        assert gw.request("GET", "/healthz", admin=True)[::2] == (200, b"ok\n")
        assert gw.request("GET", "/readyz", admin=True)[::2] == (200, b"ready\n")
        code, _, _ = gw.request("POST", "/executors/aiohttp/quarantine", admin=True,
                                headers={"Authorization": "Bearer test-token"})
        assert code == 202
        assert gw.request("GET", "/readyz", admin=True)[::2] == (503, b"not ready\n")
        assert gw.request("GET", "/healthz", admin=True)[0] == 200
    finally:
        gw.stop()


def test_a_failed_admin_login_is_logged_with_the_client(tmp_path: Path) -> None:
    gw = Gateway(tmp_path, python_only())
    try:
        code, _, _ = gw.request("POST", "/executors/stdlib/cleanse", admin=True,
                                headers={"Authorization": "Bearer guess"})
        assert code == 401
        [denied] = [e for e in gw.event_kinds() if e["event"] == "admin-denied"]
        assert denied["client"].startswith("127.0.0.1:") and denied["method"] == "POST"
        assert "guess" not in json.dumps(denied)
    finally:
        gw.stop()


def test_the_access_log_has_one_line_per_request_and_no_body(tmp_path: Path) -> None:
    log = tmp_path / "access.jsonl"
    data = python_only()
    data["gateway"] = {**data.get("gateway", {}), "access_log": str(log)}
    gw = Gateway(tmp_path, data)
    try:
        assert gw.request("POST", "/notes", {"text": "secret-body"})[0] == 201
        assert gw.request("GET", "/notes/1")[0] == 200
        assert gw.raw(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n").startswith(b"HTTP/1.1 400")
    finally:
        gw.stop()
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["method"], r["path"], r["status"], r["outcome"]) for r in lines] == [
        ("POST", "/notes", 201, "accepted"), ("GET", "/notes/1", 200, "accepted"),
        ("", "", 400, "refused")]
    assert all({"ts", "client", "bytes", "latency"} <= r.keys() for r in lines)
    assert "secret-body" not in log.read_text()


def test_run_takes_its_listeners_from_the_command_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        data = python_only()
        data["listen"] = f"127.0.0.1:{busy.getsockname()[1]}"  # taken: the file alone fails
        gw = Gateway(tmp_path, data, args=("--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"))
        try:
            assert gw.address[1] != busy.getsockname()[1]
            assert gw.request("GET", "/notes")[0] == 200
        finally:
            gw.stop()


def reloaded(gw: Gateway, count: int) -> list[dict]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done = [e for e in gw.event_kinds()
                if (e["event"] == "config-loaded" and e.get("reload"))
                or e["event"] == "reload-failed"]
        if len(done) >= count:
            return done
        time.sleep(0.1)
    raise AssertionError("no reload happened")


def test_sighup_applies_a_new_configuration_under_load(tmp_path: Path) -> None:
    gw = Gateway(tmp_path, python_only())
    failures: list[object] = []
    served = 0
    stop = threading.Event()

    def client() -> None:
        nonlocal served
        while not stop.is_set():
            try:
                code, _, _ = gw.request("GET", "/notes", timeout=10)
            except OSError as exc:
                failures.append(exc)
                continue
            if code != 200:
                failures.append(code)
            served += 1

    threads = [threading.Thread(target=client) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        assert gw.request("POST", "/notes", {"text": "before"})[0] == 201
        cfg = tmp_path / "endosec.yaml"
        data = yaml.safe_load(cfg.read_text())
        stdlib = next(e for e in data["executors"] if e["name"] == "stdlib")
        data["executors"].append({**stdlib, "name": "stdlib-b",
                                  "profile": [*stdlib["profile"], "build:b"]})
        data["controller"]["active"] = 3
        cfg.write_text(yaml.safe_dump(data))
        os.kill(gw.proc.pid, signal.SIGHUP)
        [event] = reloaded(gw, 1)
        assert event["event"] == "config-loaded" and "stdlib-b" in event["executors"]
        gw.wait_for(lambda s: len(s["active"]) == 3 and "stdlib-b" in s["active"],
                    what="the new executor voting")
        data["executors"] = [e for e in data["executors"] if e["name"] != "aiohttp"]
        data["controller"]["active"] = 2
        cfg.write_text(yaml.safe_dump(data))
        os.kill(gw.proc.pid, signal.SIGHUP)
        reloaded(gw, 2)
        status = gw.wait_for(lambda s: "aiohttp" not in [e["name"] for e in s["executors"]],
                             what="aiohttp gone")
        assert sorted(status["active"]) == ["stdlib", "stdlib-b"]
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=15)
    try:
        assert served > 20 and not failures, (served, failures[:5])
        code, _, body = gw.request("GET", "/notes")
        assert code == 200 and b"before" in body  # the newcomer was brought level
    finally:
        gw.stop()


def test_sighup_with_a_broken_configuration_keeps_the_running_one(tmp_path: Path) -> None:
    gw = Gateway(tmp_path, python_only())
    try:
        cfg = tmp_path / "endosec.yaml"
        cfg.write_text(cfg.read_text() + "\nlisten: [unclosed\n")
        os.kill(gw.proc.pid, signal.SIGHUP)
        [failed] = reloaded(gw, 1)
        assert failed["event"] == "reload-failed" and "not valid YAML" in failed["message"]
        assert gw.request("GET", "/notes")[0] == 200
        assert len(gw.status()["active"]) == 2
    finally:
        gw.stop()
