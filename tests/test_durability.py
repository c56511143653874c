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

from endosec.observe.ledger_verify import read_records, verify
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


def test_the_journal_wraps_while_executors_are_killed_and_rejoin(tmp_path: Path) -> None:
    """Thousands of writes through an 8-entry memory window and 4 KiB segments, a checkpoint
    every 40 writes, and each executor SIGKILLed in turn: every one is quarantined, cleansed,
    restored from a checkpoint, fed the journal after it, and votes again; no read fails while
    two executors can vote; at the end every voter holds every acknowledged write."""
    data = demo_config(journal={"max_entries": 8, "segment_bytes": 4096},
                       checkpoint={"every_writes": 40})
    gw = Gateway(tmp_path, data)
    acknowledged: list[str] = []
    failures: list[tuple[int, bytes]] = []
    reads = [0]
    stop = threading.Event()

    def writer(worker: int) -> None:
        i = 0
        while not stop.is_set():
            text = f"w{worker}-{i}"
            i += 1
            code, _, body = gw.request("POST", "/notes", {"text": text}, timeout=30)
            if code == 201:
                acknowledged.append(text)
            else:
                failures.append((code, body))  # every write must be acknowledged

    def reader() -> None:
        while not stop.is_set():
            path = f"/notes/{len(acknowledged) // 2 + 1}" if acknowledged else "/notes"
            code, _, body = gw.request("GET", path, timeout=30)
            reads[0] += 1
            if code != 200:
                failures.append((code, body))

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    threads += [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    killed: list[str] = []
    try:
        deadline = time.monotonic() + 240
        gw.wait_for(lambda s: s["journal"]["oldest"] > 1, what="a checkpoint")
        for victim in ["stdlib", "aiohttp", "node"] * 2:
            before = gw.executor(victim)
            os.killpg(before["pid"], signal.SIGKILL)
            killed.append(victim)
            gw.wait_for(lambda s, v=victim, b=before: next(
                e for e in s["executors"] if e["name"] == v)["counters"]["cleanses"]
                > b["counters"]["cleanses"] and v in s["active"],
                what=f"{victim} cleansed and voting again", timeout=90)
            assert time.monotonic() < deadline
        while len(acknowledged) < 3000 and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    try:
        assert len(acknowledged) >= 3000, f"only {len(acknowledged)} writes in time"
        assert reads[0] >= 200, f"only {reads[0]} reads"
        assert not failures, f"{len(failures)} failures, e.g. {failures[:3]}"
        events = gw.event_kinds()
        assert not [e for e in events if e["event"] in ("cleanse-failed", "activate-failed")]
        restored = [e for e in events if e["event"] == "restored"]
        for victim in set(killed):
            mine = [e for e in restored if e["executor"] == victim]
            assert len(mine) >= killed.count(victim), (victim, mine)
            assert all(e["seq"] > 0 for e in mine)
        assert sum(e["event"] == "checkpoint" for e in events) >= 5
        status = gw.status()
        assert status["journal"]["oldest"] > 1 and status["journal"]["kept"] <= 8
        assert len(list((gw.state / "journal").glob("*"))) < status["journal"]["head"] // 40
        present = texts(gw)
        assert sorted(present) == sorted(acknowledged)
        verdict = last_verdict(gw, "/notes")
        assert sorted(verdict["agreed"]) == ["aiohttp", "node", "stdlib"], verdict
    finally:
        gw.stop()


def wait_event(gw: Gateway, predicate: Any, what: str, timeout: float = 60.0
               ) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for e in gw.event_kinds() if predicate(e)]
        if found:
            return found[-1]
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_an_executor_that_cannot_be_brought_level_is_held_with_an_alert(tmp_path: Path
                                                                        ) -> None:
    """stdlib dies at its fifth request, so replaying write #5 into a cleansed stdlib fails
    every time: after the second attempt fails at the same write the gateway alerts, naming
    why, and holds it quarantined instead of cleansing it again and again; the other two
    executors go on serving; an operator's cleanse tries once more."""
    gw = Gateway(tmp_path, with_env(demo_config(), "stdlib", NOTES_FAULT="crash-after:5"))
    try:
        written = [f"p{i}" for i in range(8)]
        for text in written:
            assert gw.request("POST", "/notes", {"text": text})[0] == 201

        def held(e: dict[str, Any]) -> bool:
            return e["event"] == "alert" and "stdlib cannot be brought back" in e["message"]

        alert = wait_event(gw, held, "the alert that stdlib is held")
        assert "replaying write #5 failed" in alert["message"], alert
        assert "at the same write as the attempt before" in alert["message"], alert
        failed = [e for e in gw.event_kinds()
                  if e["event"] == "cleanse-failed" and e["executor"] == "stdlib"]
        assert len(failed) == 2, failed
        status = gw.status()
        assert gw.executor("stdlib")["state"] == "quarantined"
        assert sorted(status["active"]) == ["aiohttp", "node"]
        for i in range(10):  # nobody waits on stdlib
            assert gw.request("POST", "/notes", {"text": f"q{i}"})[0] == 201
            assert gw.request("GET", f"/notes/{i + 1}")[0] == 200
        written += [f"q{i}" for i in range(10)]
        time.sleep(3.0)  # a retry with backoff would have come by now (1 s, then 2 s)
        cleanses = [e for e in gw.event_kinds()
                    if e["event"] == "cleanse" and e["executor"] == "stdlib"]
        assert len(cleanses) == 2, cleanses
        code, _, _ = gw.request("POST", "/executors/stdlib/cleanse", admin=True,
                                headers={"Authorization": "Bearer test-token"})
        assert code == 202
        wait_event(gw, lambda e: e["event"] == "cleanse-failed" and e["executor"] == "stdlib"
                   and e["ts"] > alert["ts"], "the operator's cleanse")
        assert gw.executor("stdlib")["state"] == "quarantined"
        assert texts(gw) == written
    finally:
        gw.stop()


def test_a_restart_that_cannot_bring_anyone_level_fails_at_once_naming_why(tmp_path: Path
                                                                           ) -> None:
    """The checkpoints are lost while the journal before them is gone: no executor can be
    brought level, so the gateway alerts and stops at once, saying why, instead of waiting
    out the start timeout (60 s here)."""
    data = demo_config(checkpoint={"every_writes": 50}, journal={"segment_bytes": 4096})
    for e in data["executors"]:
        e["health"] = {"start_timeout": 60}
    gw = Gateway(tmp_path, data)
    journal = tmp_path / "state" / "journal"
    try:
        for i in range(200):
            assert gw.request("POST", "/notes", {"text": f"g{i}"})[0] == 201
        first = journal / f"{1:020d}.journal"
        gw.wait_for(lambda s: not first.exists(), what="the oldest journal file deleted")
    finally:
        gw.stop()
    shutil.rmtree(tmp_path / "state" / "checkpoints")
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="no checkpoint covers") as failed:
        Gateway(tmp_path, data)
    assert time.monotonic() - started < 40, "it waited for executors that cannot come"
    assert "only 0 executors became active" in str(failed.value)
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    alerts = [e["message"] for e in events if e["event"] == "alert"]
    assert sum("cannot be brought back" in m for m in alerts) == 3, alerts


def test_a_write_without_a_quorum_is_in_doubt_in_the_reply_the_journal_and_the_ledger(
        tmp_path: Path) -> None:
    data = with_env(with_env(demo_config(), "stdlib", NOTES_FAULT="status:500",
                             NOTES_FAULT_AFTER="2"),
                    "aiohttp", NOTES_FAULT="status:503", NOTES_FAULT_AFTER="2")
    gw = Gateway(tmp_path, data)
    try:
        assert gw.request("POST", "/notes", {"text": "agreed"})[0] == 201
        code, _, body = gw.request("POST", "/notes", {"text": "disputed"})
        assert code == 502 and json.loads(body)["write"] == "in doubt", body
        gw.wait_for(lambda s: s["journal"]["in_doubt"] == [2], what="write #2 in doubt")
        wait_event(gw, lambda e: e["event"] == "in-doubt", "the in-doubt event")
    finally:
        gw.stop()
    ledger = tmp_path / "state" / "ledger"
    assert verify(ledger).ok
    records = [e.record for e in read_records(ledger) if e.record is not None]
    doubts = [r.payload for r in records if r.payload.get("event") == "in-doubt"]
    assert [(d["seq"], d["method"], d["path"], d["status"]) for d in doubts] == \
        [(2, "POST", "/notes", 502)], doubts
    assert all(r.kind == "verdict" for r in records if r.payload.get("event") == "in-doubt")
