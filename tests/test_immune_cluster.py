"""Immune memory and learning across a boundary of two real gateways on a real etcd: an antigen
one gateway sees is met at the other; detectors learned together reach both."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.etcd_cluster import EtcdCluster
from tests.gatewayctl import DEMO, Gateway, demo_config, with_env

pytestmark = pytest.mark.slow

SECRET = DEMO.parent / "secret.txt"


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    cluster = EtcdCluster(tmp_path_factory.mktemp("etcd"))
    yield cluster
    cluster.stop()


def _pair(tmp: Path, etcd: EtcdCluster, **immune: Any) -> tuple[Gateway, Gateway]:
    boundary = f"i{os.getpid()}{tmp.name[-6:]}".replace("_", "")
    gateways = []
    for name in ("gw-a", "gw-b"):
        data = with_env(demo_config(cluster={"name": name, "boundary": boundary},
                                    immune={"min_self": 10, **immune}),
                        "stdlib", NOTES_BACKDOOR_SECRET=str(SECRET))
        gateways.append(Gateway(tmp / name, data, args=("--cluster", etcd.url)))
        gateways[0].wait_for(lambda s: s["cluster"]["role"] == "leader", "gw-a to lead")
    a, b = gateways
    b.wait_for(lambda s: s["cluster"]["role"] == "follower", "gw-b to follow")
    return a, b


def _self_traffic(gw: Gateway, n: int = 30) -> None:
    for i in range(n):
        assert gw.request("GET", ("/notes", "/health", "/notes/7")[i % 3])[0] in (200, 404)


def _matches(gw: Gateway) -> list[dict[str, Any]]:
    return [e for e in gw.event_kinds() if e["event"] == "immune-match"]


def test_an_antigen_seen_by_a_follower_is_met_at_the_leader(etcd: EtcdCluster,
                                                             tmp_path: Path) -> None:
    a, b = _pair(tmp_path, etcd, response="refuse")
    try:
        _self_traffic(b)
        status, _, body = b.request("GET", "/notes", headers={"X-Debug": "letmein"})
        assert status == 200 and SECRET.read_bytes().strip() not in body
        # The follower sent the antigen to the leader, whose memory both now apply.
        for gw in (a, b):
            gw.wait_for(lambda s: len(s["immune"]["memories"]) == 1, "the shared memory")
        [memory] = a.status()["immune"]["memories"]
        assert memory["implicated"] == ["stdlib"]
        assert not [e for e in b.event_kinds() if e["event"] == "immune-memory"], \
            "the follower decides nothing"
        for gw in (a, b):
            status, _, _ = gw.request("GET", "/notes/1?x=2",
                                      headers={"X-Debug": "letmein", "Accept": "text/plain"})
            assert status == 403
        # The follower's match reached the leader: the memory was seen there again.
        a.wait_for(lambda s: s["immune"]["memories"][0]["matches"] == 2, "both matches")
        assert sum(m["count"] for m in _matches(a)) == 1
        assert sum(m["count"] for m in _matches(b)) == 1
    finally:
        b.stop()
        a.stop()


def test_gateways_learn_one_detector_together(etcd: EtcdCluster, tmp_path: Path) -> None:
    a, b = _pair(tmp_path, etcd, learn={"enabled": True, "every": 4.0, "min_antigens": 1,
                                        "min_self": 10})
    try:
        for gw in (a, b):
            _self_traffic(gw, 40)
        a.request("GET", "/notes", headers={"X-Debug": "letmein"})
        for gw in (a, b):
            gw.wait_for(lambda s: s["immune"]["detector"] is not None, "a detector",
                        timeout=20.0)
        rounds = [e for e in a.event_kinds() if e["event"] == "immune-round"]
        assert rounds and "gw-a" in rounds[0]["accepted"], rounds
        # Both hold the same round's aggregate once the next round ends.
        b.wait_for(lambda s: s["immune"]["detector"]["id"]
                   == a.status()["immune"]["detector"]["id"], "the same detector", timeout=10.0)
    finally:
        b.stop()
        a.stop()
    records = [line for path in sorted((a.state / "ledger").glob("ledger-*.jsonl"))
               for line in path.read_text().splitlines() if '"immune-round"' in line]
    assert records, "the aggregate is on the leader's ledger"
