"""The gateway's life as operators live it: killed, restarted, never leaving executors behind.

Real `endosec run` processes in front of the demo's stacks, on loopback.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

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
    os.kill(gw.proc.pid, signal.SIGKILL)
    gw.proc.communicate(timeout=10)
    assert gone(executors), [cmdline(p) for p in executors if pid_alive(p)]


def test_the_next_start_stops_what_a_crashed_run_left(tmp_path: Path) -> None:
    data = python_only()
    gw = Gateway(tmp_path, data)
    everything = [p for p in gw.leftovers() if p != gw.proc.pid]
    supervisors = [p for p in everything if "supervise.py" in cmdline(p)]
    servers = [p for p in everything if p not in supervisors]
    assert supervisors and servers
    # The whole tree dies at once but for the servers: a crash no supervisor sees.
    for pid in (gw.proc.pid, *supervisors):
        os.kill(pid, signal.SIGKILL)
    gw.proc.communicate(timeout=10)
    time.sleep(0.5)
    assert all(pid_alive(p) for p in servers), "the servers outlived their supervisors"
    again = Gateway(tmp_path, data)
    try:
        assert gone(servers), [cmdline(p) for p in servers if pid_alive(p)]
        [report] = [e for e in again.event_kinds() if e["event"] == "leftovers"]
        assert sorted(line.split(":")[0] for line in report["stopped"]) == ["aiohttp", "stdlib"]
        assert again.request("GET", "/notes")[0] == 200
    finally:
        again.stop()
