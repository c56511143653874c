"""Micro-segmentation: as root, each local executor runs in a network namespace of its own,
reached only by the gateway; whatever it tries to open is refused and reported."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from endosec.runtime.segment import (
    Segment,
    SegmentError,
    remove_namespace,
    segment_possible,
    sweep,
)
from tests.gatewayctl import Gateway, demo_config, server_pid

MISSING = segment_possible()
if MISSING is not None and os.environ.get("CI") != "true":
    pytestmark = pytest.mark.skip(reason=f"network segments need root, ip and nft: {MISSING}")

PROBE = """
import json, socket, sys
out = {}
for host, port in json.loads(sys.argv[1]):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(3)
    try:
        s.connect((host, port))
        out[f"{host}:{port}"] = "connected"
    except OSError as exc:
        out[f"{host}:{port}"] = type(exc).__name__
    finally:
        s.close()
print(json.dumps(out))
"""


def _connect(targets: list[tuple[str, int]], prefix: list[str] | None = None) -> dict[str, str]:
    """Try each target, from the host or through ``prefix`` (inside a namespace)."""
    done = subprocess.run([*(prefix or []), sys.executable, "-c", PROBE, json.dumps(targets)],
                          capture_output=True, text=True, timeout=60, check=True)
    result: dict[str, str] = json.loads(done.stdout)
    return result


def _netns() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines()}


def _split(address: str) -> tuple[str, int]:
    host, port = address.rsplit(":", 1)
    return host, int(port)


@pytest.mark.slow
def test_an_executor_reaches_nothing_but_its_gateway_and_is_reported(tmp_path: Path) -> None:
    gw = Gateway(tmp_path, demo_config())
    try:
        executors = {e["name"]: e for e in gw.status()["executors"]}
        assert {e["network"] for e in executors.values()} == {"isolated"}
        namespaces = {subprocess.run(["ip", "netns", "identify", str(server_pid(gw, n))],
                                     capture_output=True, text=True, check=True).stdout.strip()
                      for n in executors}
        assert len(namespaces) == 3 and namespaces <= _netns(), namespaces
        assert gw.request("POST", "/notes", {"text": "segmented"})[0] == 201
        assert gw.request("GET", "/notes/1")[0] == 200  # served through every segment
        peers = [_split(executors[n]["address"]) for n in ("aiohttp", "node")]
        own = _split(executors["stdlib"]["address"])
        assert not own[0].startswith("127.") and own[0] != peers[0][0]
        admin = _split(gw.admin_url.removeprefix("http://"))
        gateway_side = (own[0].rsplit(".", 1)[0] + "." + str(int(own[0].rsplit(".", 1)[1]) - 1))
        targets = [admin, ("127.0.0.1", admin[1]), gw.address, *peers, (gateway_side, admin[1])]
        # The host reaches every executor on its segment's address ...
        assert set(_connect(peers).values()) == {"connected"}
        # ... but from inside the stdlib executor's namespace, nothing is reachable.
        inside = _connect(targets, ["nsenter", f"--net=/proc/{server_pid(gw, 'stdlib')}/ns/net"])
        assert "connected" not in inside.values(), inside
        # Loopback targets stay inside (its own loopback, where nothing listens); the three
        # others leave and are refused, counted and reported, naming stdlib alone.
        leaving = [t for t in targets if not t[0].startswith("127.")]
        deadline = time.monotonic() + 20
        refused: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            time.sleep(0.2)
            refused = [e for e in gw.event_kinds() if e["event"] == "outbound-refused"]
            if sum(int(str(e["packets"])) for e in refused) >= len(leaving):
                break
        assert {e["executor"] for e in refused} == {"stdlib"}, refused
        assert sum(int(str(e["packets"])) for e in refused) == len(leaving) == 3
        assert any(e["event"] == "alert" and e.get("executor") == "stdlib"
                   for e in gw.event_kinds())
        assert gw.request("GET", "/notes/1")[0] == 200
    finally:
        gw.stop()
    assert not namespaces & _netns()  # every segment went with its executor


@pytest.mark.slow
def test_network_host_keeps_an_executor_on_the_hosts_loopback(tmp_path: Path) -> None:
    data = demo_config()
    for e in data["executors"]:
        e["network"] = "host"
    gw = Gateway(tmp_path, data)
    try:
        executors = gw.status()["executors"]
        assert {e["network"] for e in executors} == {"host"}
        assert all(e["address"].startswith("127.0.0.1:") for e in executors)
    finally:
        gw.stop()


def test_a_segment_serves_its_loopback_listener_and_refuses_the_way_out() -> None:
    segment = Segment.create("127.0.0.1", 18123)
    try:
        server = subprocess.Popen([*segment.enter(), sys.executable, "-m", "http.server",
                                   "18123", "--bind", "127.0.0.1"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            reached: dict[str, str] = {}
            for _ in range(100):
                reached = _connect([(segment.address, 18123)])
                if "connected" in reached.values():
                    break
                time.sleep(0.05)
            assert list(reached.values()) == ["connected"]
            inside = _connect([("1.1.1.1", 53), ("10.0.0.1", 22)], segment.enter())
            assert "connected" not in inside.values(), inside
            assert asyncio.run(segment.refused()) >= 2
        finally:
            server.kill()
            server.wait()
    finally:
        segment.remove()
    assert segment.namespace not in _netns()
    with pytest.raises(SegmentError, match="outbound counter"):
        asyncio.run(segment.refused())


def test_the_next_start_sweeps_segments_whose_maker_is_gone() -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    orphan, alive = f"endosec-{dead.pid}-0badf00d", f"endosec-{os.getpid()}-0badf00e"
    for name in (orphan, alive):
        subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        removed = sweep()
        assert orphan in removed and alive not in removed
        assert orphan not in _netns() and alive in _netns()
    finally:
        for name in (orphan, alive):
            remove_namespace(name)
    assert not {orphan, alive} & _netns()
