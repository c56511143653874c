"""A gateway in a network namespace of its own, cut from a real three-member etcd: it keeps
serving for cluster.stale_after, then fails closed, then catches up when the store is back."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.etcd_cluster import EtcdCluster, need_etcd
from tests.gatewayctl import Gateway, demo_config
from tests.netns import Host, need_root_tools

pytestmark = pytest.mark.slow


def test_cut_off_it_serves_then_fails_closed_then_catches_up(tmp_path: Path) -> None:
    need_root_tools("nft")
    need_etcd()
    host = Host()
    etcd: EtcdCluster | None = None
    gw: Gateway | None = None
    try:
        etcd = EtcdCluster(tmp_path / "etcd", also=(host.outside,))
        data = demo_config(listen=f"{host.inside}:0", admin={"listen": f"{host.inside}:0"},
                           cluster={"name": "gw-ns", "boundary": "netns", "lease_ttl": 2,
                                    "stale_after": 4, "timeout": 1})
        gw = Gateway(tmp_path / "gw", data, args=("--cluster", etcd.url_on(host.outside)),
                     prefix=("ip", "netns", "exec", host.ns))
        gw.wait_for(lambda s: s["cluster"]["role"] == "leader", "the gateway to lead")
        assert gw.request("GET", "/notes")[0] == 200

        host.cut(etcd.clients)
        cut = time.monotonic()
        served = 0
        while time.monotonic() - cut < 3:  # before stale_after: still serving
            assert gw.request("GET", "/notes")[0] == 200
            served += 1
            time.sleep(0.1)
        status = gw.wait_for(lambda s: s["cluster"]["stale"], "the gateway to fail closed",
                             timeout=20)
        closed_after = time.monotonic() - cut
        assert not status["cluster"]["store_reachable"]
        assert gw.request("GET", "/notes")[0] == 502
        print(f"served {served} requests cut off, failed closed {closed_after:.1f} s after "
              "the cut")

        host.mend()
        mended = time.monotonic()
        status = gw.wait_for(lambda s: not s["cluster"]["stale"], "the gateway to catch up",
                             timeout=30)
        print(f"serving again {time.monotonic() - mended:.1f} s after the store came back")
        assert status["cluster"]["role"] == "leader"
        assert gw.request("GET", "/notes")[0] == 200
        kinds = [e["event"] for e in gw.event_kinds()]
        assert kinds.index("cluster-store-lost") < kinds.index("cluster-stale") \
            < kinds.index("cluster-store-back")
        back = next(e for e in gw.event_kinds() if e["event"] == "cluster-store-back")
        assert back["failed_closed"] is True
    finally:
        if gw is not None:
            gw.stop()
        if etcd is not None:
            etcd.stop()
        host.close()
