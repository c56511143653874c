"""Real gateways in a boundary: membership, leadership after a kill -9, and ledger anchors that
catch a cut tail, on the embedded store and on a real three-member etcd on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.etcd_cluster import EtcdCluster
from tests.gatewayctl import Gateway, demo_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    cluster = EtcdCluster(tmp_path_factory.mktemp("etcd"))
    yield cluster
    cluster.stop()


def endosec(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "endosec.cli", *args], capture_output=True,
                          text=True, timeout=60, check=False)


def config(name: str, boundary: str) -> dict[str, Any]:
    return demo_config(cluster={"name": name, "boundary": boundary, "anchor_every": 0.2})


def cut_tail(ledger: Path, records: int) -> None:
    path = sorted(ledger.glob("ledger-*.jsonl"))[-1]
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-records]))


def status(url: str, boundary: str, *, healthy: bool = True) -> dict[str, Any]:
    """`endosec cluster status --json`; exit status 0 required unless not ``healthy`` (a store
    without quorum exits 1 with its report)."""
    done = endosec("cluster", "status", "--cluster", url, "--boundary", boundary, "--json")
    report: dict[str, Any] = json.loads(done.stdout) if done.stdout else {}
    ok = bool(report) and report["store"]["ok"]
    assert done.returncode == (0 if ok else 1) and (ok or not healthy), (done.stdout,
                                                                         done.stderr)
    return report


def test_a_gateway_anchors_its_ledger_in_the_embedded_store(tmp_path: Path) -> None:
    gw = Gateway(tmp_path / "a", config("gw-a", "solo"))
    try:
        assert gw.status()["cluster"]["role"] == "leader"
        code, _, _ = gw.request("POST", "/notes", {"text": "kept"})
        assert code == 201
    finally:
        gw.stop()
    state = gw.state
    assert (state / "control.json").is_file()
    verified = endosec("ledger", "verify", str(state / "ledger"), "--anchor", "--boundary",
                       "solo")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    cut_tail(state / "ledger", 2)
    assert endosec("ledger", "verify", str(state / "ledger")).returncode == 0
    cut = endosec("ledger", "verify", str(state / "ledger"), "--anchor", "--boundary", "solo")
    assert cut.returncode == 1 and "are gone" in cut.stdout, cut.stdout
    with pytest.raises(RuntimeError, match="does not hold what"):
        Gateway(tmp_path / "a", config("gw-a", "solo"))


def test_gateways_on_etcd_elect_one_leader_and_fail_over_after_a_kill(
        etcd: EtcdCluster, tmp_path: Path) -> None:
    boundary = f"b{os.getpid()}"
    a = Gateway(tmp_path / "a", config("gw-a", boundary), args=("--cluster", etcd.url))
    b: Gateway | None = None
    try:
        b = Gateway(tmp_path / "b", config("gw-b", boundary), args=("--cluster", etcd.url))
        assert a.status()["cluster"]["role"] == "leader"
        b.wait_for(lambda s: s["cluster"]["role"] == "follower", "gw-b to follow")
        a.request("POST", "/notes", {"text": "anchored"})
        deadline = time.monotonic() + 10
        while True:
            report = status(etcd.url, boundary)
            cards = {m["gateway"]: m for m in report["members"]}
            if cards.get("gw-a", {}).get("anchored", 0) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert report["leader"] == "gw-a" and set(cards) == {"gw-a", "gw-b"}
        assert cards["gw-a"]["role"] == "leader" and cards["gw-b"]["role"] == "follower"
        assert cards["gw-a"]["anchored"] >= 1
        assert report["store"]["ok"] and len(report["store"]["members"]) == 3

        os.kill(a.proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        b.wait_for(lambda s: s["cluster"]["role"] == "leader", "gw-b to lead", timeout=10)
        failover = time.monotonic() - killed
        print(f"failover after kill -9 of the leader: {failover:.2f} s")
        assert failover < 10
    finally:
        a.stop()
        if b is not None:
            b.stop()
    # Nothing anchored was lost to the kill; a cut below the anchor is caught.
    ledger = a.state / "ledger"
    args = ("ledger", "verify", str(ledger), "--anchor", "--cluster", etcd.url, "--boundary",
            boundary)
    intact = endosec(*args)
    assert intact.returncode == 0, intact.stdout + intact.stderr
    cut_tail(ledger, 2)
    cut = endosec(*args)
    assert cut.returncode == 1 and "truncated" in cut.stdout, cut.stdout


def test_a_bad_store_url_is_refused_before_anything_starts(tmp_path: Path) -> None:
    (tmp_path / "endosec.yaml").write_text(json.dumps(demo_config()))
    done = endosec("run", "--config", str(tmp_path / "endosec.yaml"), "--cluster", "etcd://x")
    assert done.returncode == 2 and "HOST:PORT" in done.stderr
    unreachable = endosec("run", "--config", str(tmp_path / "endosec.yaml"), "--cluster",
                          "etcd://127.0.0.1:9", "--state-dir", str(tmp_path / "s"))
    assert unreachable.returncode == 1 and "cluster: etcd://127.0.0.1:9" in unreachable.stderr


def test_a_store_without_quorum_stops_no_serving(tmp_path: Path) -> None:
    """Two of three etcd members gone: the one left answers but cannot decide, so the gateway
    is not cut off: it serves on past stale_after, and resumes its rounds when they return."""
    etcd = EtcdCluster(tmp_path / "etcd")
    gw: Gateway | None = None
    try:
        data = demo_config(cluster={"name": "gw-q", "boundary": "quorum", "lease_ttl": 2,
                                    "stale_after": 2, "timeout": 1})
        gw = Gateway(tmp_path / "gw", data, args=("--cluster", etcd.url))
        gw.wait_for(lambda s: s["cluster"]["role"] == "leader", "the gateway to lead")
        etcd.kill(1)
        etcd.kill(2)
        gw.wait_for(lambda s: s["cluster"]["store_lost_for"] is not None, "the loss to show",
                    timeout=20)
        until = time.monotonic() + 8  # well past stale_after
        while time.monotonic() < until:
            assert gw.request("GET", "/notes")[0] == 200
            cluster = gw.status()["cluster"]
            assert cluster["store_reachable"] and not cluster["stale"], cluster
            time.sleep(0.2)
        lost = next(e for e in gw.event_kinds() if e["event"] == "cluster-store-lost")
        assert lost["reachable"] is True
        etcd.restart(1)
        etcd.restart(2)
        gw.wait_for(lambda s: s["cluster"]["store_lost_for"] is None
                    and s["cluster"]["role"] == "leader", "the rounds to resume", timeout=30)
    finally:
        if gw is not None:
            gw.stop()
        etcd.stop()
