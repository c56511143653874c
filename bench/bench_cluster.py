"""Several gateways in one boundary: throughput with 1, 2 and 3, and the leader's failover.

    python bench/bench_cluster.py [--quick]

Three nginx backends (`http/backend.sh`, the same as `bench_http.py`) are the executors, given
to every gateway by `url:`, so all gateways vote over the very same processes. A real
three-member etcd runs on loopback, and every gateway is `endosec run --cluster etcd://...` in
one boundary, with `gateway.threads: 1`. For k = 1, 2 and 3 gateways, wrk drives all k at once
(32 connections in all, split among them) and the figure is the sum of their requests/s,
printed as a ratio to one gateway measured in the same run. On a two-core machine the
gateways, the backends and wrk share the cores, so the ratio shows what a second gateway
costs here more than what it adds on a host with cores to spare.

Failover: with three gateways up, the leader is killed (SIGKILL) and the others' admin
`/status` is polled until one of them leads and has published its own control view (it
resumed control); then once more with the two left. PASS when
every failover takes at most 10 s.

Needs wrk, nginx and etcd (Debian wrk, nginx-light, etcd-server); everything runs on
127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench_http import (
    ENDOSEC,
    HEADERS_IGNORED,
    Group,
    Result,
    Tools,
    _free_port,
    _get_json,
    _nginx,
    _tools,
    wrk,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' etcd launcher:
from tests.etcd_cluster import EtcdCluster

FAILOVER_TARGET = 10.0
CONNECTIONS = 32


class Member:
    """One ``endosec run`` in the boundary, in front of the shared backends."""

    def __init__(self, root: Path, name: str, store: str, backends: list[int]) -> None:
        self.root = root / name
        self.root.mkdir(parents=True)
        config: dict[str, Any] = {
            "listen": "127.0.0.1:0",
            "admin": {"listen": "127.0.0.1:0", "public_read": True},
            "controller": {"active": 3, "floor": 2, "rotate_every": None},
            "limits": {"max_connections": 4096},
            "gateway": {"events": str(self.root / "events.jsonl"), "threads": 1},
            "cluster": {"store": store, "boundary": "bench", "name": name},
            "canonicalise": {"headers": {"ignore": HEADERS_IGNORED},
                             "bodies": [{"content_type": "application/json", "json": {}}]},
            "executors": [{"name": f"b{i}", "url": f"http://127.0.0.1:{port}",
                           "profile": ["os:linux", "http:nginx", f"build:b{i}"],
                           "stateless": True, "health": {"path": "/health"}}
                          for i, port in enumerate(backends)],
        }
        path = self.root / "endosec.json"
        path.write_text(json.dumps(config, indent=1))
        self.name = name
        self.group = Group([str(ENDOSEC), "run", "--config", str(path), "--state-dir",
                            str(self.root / "state")], self.root / "gateway.log")
        self.url, self.admin = self._ready()

    def _ready(self) -> tuple[str, str]:
        assert self.group.proc.stdout is not None
        line = self.group.proc.stdout.readline().decode()
        if not line.startswith("endosec: serving "):
            self.group.stop()
            raise RuntimeError(f"{self.name} did not start:\n"
                               f"{Path(self.group.log.name).read_text()[-3000:]}")
        words = line.split()
        return words[2], words[4]

    def role(self) -> str | None:
        try:
            return str(_get_json(self.admin)["cluster"]["role"])
        except (OSError, ValueError, KeyError):
            return None

    def controls(self) -> bool:
        """It leads and has published its own decisions (it resumed control)."""
        try:
            cluster = _get_json(self.admin)["cluster"]
            return bool(cluster["role"] == "leader"
                        and (cluster["control"] or {}).get("leader") == self.name)
        except (OSError, ValueError, KeyError, TypeError):
            return False

    def kill(self) -> None:
        os.kill(self.group.proc.pid, signal.SIGKILL)
        self.group.proc.wait()

    def stop(self) -> None:
        self.group.stop(timeout=20.0)


def _together(tools: Tools, members: list[Member], seconds: int) -> float:
    """Requests/s summed over ``members``, driven at once."""
    share = max(1, CONNECTIONS // len(members))
    with ThreadPoolExecutor(len(members)) as pool:
        results: list[Result] = list(pool.map(
            lambda m: wrk(tools, m.url, share, seconds), members))
    bad = sum(r.errors for r in results)
    if bad:
        print(f"    ({bad} errors or non-2xx replies)")
    return sum(r.rps for r in results)


def _failover(members: list[Member]) -> float:
    """Kill the leader; seconds until another member leads and has resumed control."""
    leader = next(m for m in members if m.role() == "leader")
    others = [m for m in members if m is not leader]
    leader.kill()
    members.remove(leader)
    killed = time.monotonic()
    while time.monotonic() - killed < 60:
        if any(m.controls() for m in others):
            return time.monotonic() - killed
        time.sleep(0.05)
    return float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="2 s per wrk run")
    args = parser.parse_args()
    seconds = 2 if args.quick else 5
    tools = _tools()
    if shutil.which("etcd") is None:
        sys.exit("bench_cluster: needs etcd (Debian etcd-server; "
                 "scripts/install-system-deps.sh installs it)")
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp, \
            contextlib.ExitStack() as stack:
        root = Path(tmp)
        ports = [_free_port() for _ in range(3)]
        for i, port in enumerate(ports):
            stack.callback(_nginx(tools, root / f"backend{i}", port).stop)
        etcd = EtcdCluster(root / "etcd")
        stack.callback(etcd.stop)
        members: list[Member] = []
        stack.callback(lambda: [m.stop() for m in members])
        print(f"cluster: {len(ports)} shared nginx backends, etcd {etcd.url}")
        print(f"  {'gateways':>8}  {'requests/s':>10}  vs 1 gateway")
        rates = []
        for k in (1, 2, 3):
            while len(members) < k:
                members.append(Member(root, f"g{len(members) + 1}", etcd.url, ports))
            wrk(tools, members[0].url, 8, 1)  # warm up
            rates.append(_together(tools, members, seconds))
            print(f"  {k:>8}  {rates[-1]:>10,.0f}  {rates[-1] / rates[0]:.2f}x")
        times = [_failover(members) for _ in range(2)]
        for i, t in enumerate(times, 1):
            print(f"  failover {i} (kill -9 of the leader): {t:.2f} s")
        worst = max(times)
        print(f"  [{'PASS' if worst <= FAILOVER_TARGET else 'MISS'}] another gateway leads "
              f"within {FAILOVER_TARGET:g} s of the leader's kill: {worst:.2f} s "
              f"(median {statistics.median(times):.2f} s)")


if __name__ == "__main__":
    main()
