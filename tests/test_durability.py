"""Nothing acknowledged is lost: the durable journal, checkpoints by vote, idempotent retries.

Real `endosec run` processes in front of the demo's three stacks, on loopback.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.gatewayctl import Gateway, demo_config, pid_alive, with_env

pytestmark = pytest.mark.slow

if shutil.which("node") is None:  # pragma: no cover - Node ships with the test machines
    pytest.skip("node is needed for the three-stack demo (install nodejs)",
                allow_module_level=True)


def kill9(gw: Gateway) -> None:
    """SIGKILL the gateway alone, then its executors (they must not outlive a test)."""
    os.kill(gw.proc.pid, signal.SIGKILL)
    gw.proc.wait(timeout=10)
    gw.proc.communicate()
    for pid in gw.leftovers():
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while gw.leftovers() and time.monotonic() < deadline:
        time.sleep(0.1)


def texts(gw: Gateway) -> list[str]:
    code, _, body = gw.request("GET", "/notes")
    assert code == 200, body
    return [n["text"] for n in json.loads(body)["notes"]]


def last_verdict(gw: Gateway, path: str) -> dict[str, Any]:
    status = gw.wait_for(lambda s: any(v["path"] == path and v["method"] == "GET"
                                       for v in s["recent_verdicts"]), what=f"GET {path}")
    return [v for v in status["recent_verdicts"] if v["path"] == path][-1]


def test_acknowledged_writes_survive_a_gateway_kill(tmp_path: Path) -> None:
    data = demo_config()
    gw = Gateway(tmp_path, data)
    acknowledged: list[str] = []
    stop = threading.Event()

    def writer(worker: int) -> None:
        i = 0
        while not stop.is_set():
            text = f"w{worker}-{i}"
            i += 1
            try:
                code, _, _ = gw.request("POST", "/notes", {"text": text}, timeout=5)
            except OSError:
                return  # the gateway died under us: this write was never acknowledged
            if code == 201:
                acknowledged.append(text)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    kill9(gw)
    stop.set()
    for t in threads:
        t.join(timeout=10)
    assert len(acknowledged) > 20, "too few writes to test anything"
    again = Gateway(tmp_path, data)
    try:
        again.wait_for(lambda s: len(s["active"]) == 3, what="three voters after the restart")
        present = texts(again)
        missing = [t for t in acknowledged if t not in present]
        assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:5]}"
        verdict = last_verdict(again, "/notes")
        assert len(verdict["agreed"]) == 3, verdict  # every voter holds them all
        opened = [e for e in again.event_kinds() if e["event"] == "journal-opened"]
        assert opened[-1]["head"] >= len(acknowledged)
    finally:
        again.stop()


def test_a_tampered_export_is_outvoted_and_its_executor_quarantined(tmp_path: Path) -> None:
    data = with_env(demo_config(checkpoint={"every_writes": 5}), "stdlib",
                    NOTES_STATE_TAMPER="1")
    gw = Gateway(tmp_path, data)
    try:
        for i in range(6):
            assert gw.request("POST", "/notes", {"text": f"n{i}"})[0] == 201
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            cps = [e for e in gw.event_kinds() if e["event"] == "checkpoint"]
            if cps:
                break
            time.sleep(0.1)
        assert cps, "no checkpoint was taken"
        cp = cps[0]
        assert cp["dissented"] == ["stdlib"] and sorted(cp["agreed"]) == ["aiohttp", "node"]
        assert cp["sha256"], "the agreed export was kept"
        gw.wait_for(lambda s: next(e for e in s["executors"] if e["name"] == "stdlib")
                    ["counters"]["quarantines"] >= 1, what="stdlib quarantined")
        stored = sorted((tmp_path / "state" / "checkpoints").glob("*.state"))
        assert stored and b"planted" not in stored[-1].read_bytes()
    finally:
        gw.stop()


def test_a_cleansed_executor_is_restored_from_the_checkpoint(tmp_path: Path) -> None:
    gw = Gateway(tmp_path, demo_config(checkpoint={"every_writes": 10}))
    try:
        for i in range(25):
            assert gw.request("POST", "/notes", {"text": f"c{i}"})[0] == 201
        gw.wait_for(lambda s: s["journal"]["oldest"] > 1, what="the journal truncated")
        code, _, _ = gw.request("POST", "/executors/node/cleanse", admin=True,
                                headers={"Authorization": "Bearer test-token"})
        assert code == 202
        gw.wait_for(lambda s: "node" in s["active"] and any(
            e["event"] == "restored" and e["executor"] == "node" for e in gw.event_kinds()),
            what="node restored and voting")
        assert texts(gw) == [f"c{i}" for i in range(25)]
        verdict = last_verdict(gw, "/notes")
        assert "node" in verdict["agreed"] and not verdict["dissented"], verdict
    finally:
        gw.stop()


def test_the_same_keyed_write_is_applied_once(tmp_path: Path) -> None:
    gw = Gateway(tmp_path, demo_config())
    try:
        key = {"Idempotency-Key": uuid.uuid4().hex}
        first = gw.request("POST", "/notes", {"text": "once"}, headers=key)
        second = gw.request("POST", "/notes", {"text": "once"}, headers=key)
        assert first[0] == second[0] == 201
        assert json.loads(first[2]) == json.loads(second[2])
        assert texts(gw) == ["once"]
    finally:
        gw.stop()
