"""Three gateways on a real three-member etcd in front of the same three executors: one
boundary. Each gateway runs in a network namespace of its own (root only), reaching the store,
the executors and the other gateways through this host. The executors run outside every
gateway (url executors, restored by a command), so whatever a gateway decides about them, it
decides for all."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.etcd_cluster import EtcdCluster, need_etcd
from tests.gatewayctl import DEMO, Gateway, demo_config
from tests.netns import Host, forwarding, need_root_tools
from tests.test_cluster_gateway import cut_tail, endosec, status

pytestmark = pytest.mark.slow

SECRET = DEMO.parent / "secret.txt"
HERE = DEMO.parent / "executors"
EXECUTORS = {"stdlib": ["{python}", str(HERE / "stdlib_notes.py")],
             "aiohttp": ["{python}", str(HERE / "aiohttp_notes.py")],
             "node": ["node", str(HERE / "notes.js")]}

# Restores one executor: stop the running process, start a pristine one (no implant) on the
# same port, on the host, and count the restoration. It is the service's, not a gateway's: it
# outlives them.
RESTORE = textwrap.dedent("""\
    import json, os, signal, socket, subprocess, sys, time
    from pathlib import Path
    name, root = sys.argv[1], Path(sys.argv[2])
    spec = json.loads((root / f"{name}.json").read_text())
    host = str(spec["host_pid"])  # a process in the host's network namespace
    if os.readlink("/proc/self/ns/net") != os.readlink(f"/proc/{host}/ns/net"):
        # run by a gateway in its namespace: the service lives on the host
        os.execvp("nsenter", ["nsenter", "-t", host, "-n", sys.executable, *sys.argv])
    try:
        os.kill(int((root / f"{name}.pid").read_text()), signal.SIGKILL)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", spec["port"]), 0.2).close()
            time.sleep(0.05)
        except OSError:
            break
    env = {k: v for k, v in os.environ.items() if k != "ENDOSEC_TEST_RUN"}  # not the gateway's
    proc = subprocess.Popen(spec["argv"], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    (root / f"{name}.pid").write_text(str(proc.pid))
    with (root / "restored.log").open("a") as log:
        log.write(name + "\\n")
""")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Shared:
    """The executors every gateway shares, with the implant in ``stdlib``."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True)
        self.root = root
        (root / "restore.py").write_text(RESTORE)
        self.ports = {name: free_port() for name in EXECUTORS}
        self.procs: list[subprocess.Popen[bytes]] = []
        for name, argv in EXECUTORS.items():
            spec = {"port": self.ports[name], "host_pid": os.getpid(),
                    "argv": [sys.executable if a == "{python}" else a for a in argv]
                    + ["--port", str(self.ports[name]), "--host", "0.0.0.0"]}
            (root / f"{name}.json").write_text(json.dumps(spec))
            env = {**os.environ, **({"NOTES_BACKDOOR_SECRET": str(SECRET)}
                                    if name == "stdlib" else {})}
            proc = subprocess.Popen(spec["argv"], env=env, start_new_session=True,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            (root / f"{name}.pid").write_text(str(proc.pid))
            self.procs.append(proc)

    def config(self, demo: dict[str, Any], host: str) -> list[dict[str, Any]]:
        """The executors as a gateway reaches them at ``host``."""
        profiles = {e["name"]: e["profile"] for e in demo["executors"]}
        return [{"name": name, "url": f"http://{host}:{port}", "profile": profiles[name],
                 "state": {"http": "/_endosec/state"},
                 "cleanse": {"command": [sys.executable, str(self.root / "restore.py"), name,
                                         str(self.root)]}}
                for name, port in self.ports.items()]

    @property
    def restored(self) -> list[str]:
        log = self.root / "restored.log"
        return log.read_text().split() if log.exists() else []

    def stop(self) -> None:
        for name in EXECUTORS:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.killpg(int((self.root / f"{name}.pid").read_text()), signal.SIGKILL)
        for proc in self.procs:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def hosts() -> Iterator[tuple[Host, ...]]:
    need_root_tools()
    need_etcd()
    made: list[Host] = []
    try:
        with forwarding():
            made.extend(Host(routed=True) for _ in range(3))
            yield tuple(made)
    finally:
        for host in made:
            host.close()


@pytest.fixture(scope="module")
def etcd(hosts: tuple[Host, ...],
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    cluster = EtcdCluster(tmp_path_factory.mktemp("etcd"), also=tuple(h.outside for h in hosts))
    yield cluster
    cluster.stop()


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[Shared]:
    executors = Shared(tmp_path / "executors")
    yield executors
    executors.stop()


def events(gw: Gateway, kind: str, executor: str | None = None) -> list[dict[str, Any]]:
    found = [json.loads(line) for line in gw.events.read_text().splitlines()]
    return [e for e in found if e["event"] == kind
            and (executor is None or e.get("executor") == executor)]


def applied_after(gw: Gateway, ts: float, timeout: float = 10.0) -> float:
    """The wall-clock time ``gw`` applied a control view published after ``ts``: the
    leader's decisions at ``ts`` or later ones (a quarantine and cleanse quicker than a poll
    may leave a follower nothing between the view before and the one after)."""
    deadline = time.monotonic() + timeout
    while True:
        now = gw.status()["cluster"]
        control = now["control"] or {}
        if control.get("applied_at") is not None and control["applied_at"] >= ts:
            return float(control["applied_at"])
        if time.monotonic() >= deadline:
            told = [e for e in map(json.loads, gw.events.read_text().splitlines())
                    if e["event"].startswith("cluster") or e["event"] == "alert"]
            raise AssertionError(f"{gw.url} applied no view published after {ts}: {now}; "
                                 f"its cluster events and alerts: {told[-12:]}")
        time.sleep(0.02)


def wait_event(gw: Gateway, kind: str, executor: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not events(gw, kind, executor):
        assert time.monotonic() < deadline, f"no {kind} of {executor} on {gw.url}"
        time.sleep(0.02)


def boundary(hosts: tuple[Host, ...], etcd: EtcdCluster, shared: Shared, tmp_path: Path,
             name: str) -> dict[str, Gateway]:
    """Gateways gw-a (the leader: it starts first), gw-b and gw-c, in boundary ``name``, each
    in its own namespace."""
    gateways: dict[str, Gateway] = {}
    try:
        for gw, host in zip("abc", hosts, strict=True):
            data = demo_config(executors=shared.config(demo_config(), host.outside),
                               listen=f"{host.inside}:0", admin={"listen": f"{host.inside}:0"},
                               cluster={"name": f"gw-{gw}", "boundary": name})
            gateways[gw] = Gateway(tmp_path / gw, data,
                                   args=("--cluster", etcd.url_on(host.outside)),
                                   prefix=("ip", "netns", "exec", host.ns))
    except BaseException:
        for started in gateways.values():
            started.stop()
        raise
    return gateways


def leader_after_kill(followers: tuple[Gateway, ...]) -> Gateway:
    killed = time.monotonic()
    while True:
        assert time.monotonic() - killed < 10, "no gateway took over within 10 s"
        for gw in followers:  # leads, and has resumed control
            if gw.status()["cluster"]["role"] == "leader" and events(gw, "cluster-resumed"):
                print(f"{gw.url} leads {time.monotonic() - killed:.2f} s after kill -9 of the "
                      "leader")
                return gw
        time.sleep(0.1)


def points(gw: Gateway, executor: str) -> float:
    return float(gw.executor(executor)["points"])


def notes(port: int) -> list[str]:
    """The texts of the notes an executor holds, in its order, asked directly."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/notes", timeout=5) as reply:
        return [n["text"] for n in json.loads(reply.read())["notes"]]


def test_three_gateways_quarantine_once_cleanse_once_and_fail_over_with_the_same_state(
        hosts: tuple[Host, ...], etcd: EtcdCluster, shared: Shared, tmp_path: Path) -> None:
    gateways = boundary(hosts, etcd, shared, tmp_path, "shared")
    try:
        a, b, c = gateways["a"], gateways["b"], gateways["c"]
        assert a.status()["cluster"]["role"] == "leader"
        for follower in (b, c):
            follower.wait_for(lambda s: s["cluster"]["role"] == "follower", "a follower")
            assert follower.status()["active"] == a.status()["active"]
        report = status(etcd.url, "shared")
        assert report["control"]["leader"] == "gw-a" and len(report["members"]) == 3
        assert sorted(report["control"]["voters"]) == sorted(a.status()["active"])
        # Only the leader takes orders.
        code, _, body = b.request("POST", "/executors/node/quarantine", admin=True)
        assert code == 409 and json.loads(body)["leader"] == "gw-a"

        # The etcd member the gateways talk to (gRPC picks the first) dies: serving and
        # control go on, on the two left.
        etcd.kill(0)
        killed = time.monotonic()
        while not status(etcd.url, "shared", healthy=False)["store"]["ok"]:
            assert time.monotonic() - killed < 15, "the store did not recover its quorum"
            time.sleep(0.2)
        assert a.request("POST", "/notes", {"text": "kept"})[0] == 201
        # What a follower's voters agree on earns them trust at the leader, which decides.
        before = points(a, "node")
        for _ in range(30):
            assert c.request("GET", "/notes")[0] == 200
        a.wait_for(lambda s: points(a, "node") >= before + 30, "the follower's agreements",
                   timeout=5)
        # The implant, triggered through a follower: its verdict reaches the leader.
        code, _, body = c.request("GET", "/notes/1", headers={"X-Debug": "letmein"})
        assert code == 200 and SECRET.read_text().strip().encode() not in body
        wait_event(a, "quarantine", "stdlib")
        [quarantined] = events(a, "quarantine", "stdlib")
        lags = [applied_after(gw, quarantined["ts"]) - quarantined["ts"] for gw in (b, c)]
        print(f"the leader's decisions applied by the followers after {lags[0]:.3f} s and "
              f"{lags[1]:.3f} s")
        # Typically 0.1-0.3 s; a gateway whose call was on the dead member first waits out
        # the store's call timeout (2 s) before it moves to the next.
        assert max(lags) < 3.0

        a.wait_for(lambda s: "stdlib" in s["active"] or any(
            e["name"] == "stdlib" and e["state"] == "spare" for e in s["executors"]),
            "stdlib cleansed and back")
        assert shared.restored == ["stdlib"]
        assert len(events(a, "cleanse", "stdlib")) == 1
        for follower in (b, c):  # they decided nothing: no orders of their own
            assert not events(follower, "quarantine") and not events(follower, "cleanse")
            assert follower.status()["cluster"]["reports_waiting"] == 0
        assert c.request("GET", "/notes/1")[0] == 200  # the restored executor was caught up

        # The leader dies: another resumes from the state it published, redoing nothing.
        before = a.status()
        os.kill(a.proc.pid, signal.SIGKILL)
        leader = leader_after_kill((b, c))
        resumed = events(leader, "cluster-resumed")
        assert resumed and resumed[-1]["previous"] == "gw-a"
        # ... and its trust book: the old leader's, which counted what every gateway saw
        # (the 30 reads through gw-c among them), within the agreements of the last seconds.
        carried = {e["name"]: e["points"] for e in leader.status()["executors"]}
        for e in before["executors"]:
            assert abs(carried[e["name"]] - e["points"]) <= 5, (carried, before["executors"])
        time.sleep(2)
        after = leader.status()
        assert sorted(after["active"]) == sorted(before["active"])
        assert {e["name"]: e["state"] for e in after["executors"]} == {
            e["name"]: e["state"] for e in before["executors"]}
        assert shared.restored == ["stdlib"], "nothing is cleansed twice"
        assert leader.request("POST", "/notes", {"text": "after"})[0] == 201
    finally:
        for gw in gateways.values():
            gw.stop()
        if etcd.procs[0].poll() is not None:
            etcd.restart(0)
    # One chain for the three ledgers, each holding what it linked; a cut tail shows.
    ledgers = [str(gw.state / "ledger") for gw in gateways.values()]
    args = ["cluster", "chain", "--cluster", etcd.url, "--boundary", "shared", "--json"]
    for ledger in ledgers:
        args += ["--ledger", ledger]
    chain = endosec(*args)
    assert chain.returncode == 0, chain.stdout + chain.stderr
    report = json.loads(chain.stdout)
    assert report["gateways"] == ["gw-a", "gw-b", "gw-c"] and not report["problems"]
    assert all(found["ok"] for found in report["ledgers"].values())
    cut_tail(Path(ledgers[1]), 3)
    cut = endosec(*args)
    assert cut.returncode == 1 and ledgers[1] in "".join(json.loads(cut.stdout)["problems"])


def test_writes_through_every_gateway_take_one_order_through_a_leaders_kill(
        hosts: tuple[Host, ...], etcd: EtcdCluster, shared: Shared, tmp_path: Path) -> None:
    gateways = boundary(hosts, etcd, shared, tmp_path, "writes")
    a, b, c = gateways["a"], gateways["b"], gateways["c"]
    acked: dict[str, list[str]] = {name: [] for name in gateways}
    stop = threading.Event()

    def write(name: str, gw: Gateway) -> None:
        for i in range(10_000):
            if stop.wait(0.01):
                return
            try:
                code = gw.request("POST", "/notes", {"text": f"{name}-{i}"}, timeout=5)[0]
            except OSError:
                code = 0
            if code == 201:
                acked[name].append(f"{name}-{i}")

    writers = [threading.Thread(target=write, args=item) for item in gateways.items()]
    try:
        for thread in writers:
            thread.start()
        deadline = time.monotonic() + 15
        while sum(map(len, acked.values())) < 30:
            assert time.monotonic() < deadline, f"writes did not go through: {acked}"
            time.sleep(0.02)
        os.kill(a.proc.pid, signal.SIGKILL)  # while the writes go on
        leader = leader_after_kill((b, c))
        name = leader.status()["cluster"]["gateway"]
        for gw in (b, c):  # the followers send their writes to the new leader
            gw.wait_for(lambda s: s["cluster"]["control"]["leader"] == name, "the new view",
                        timeout=2)
        since = {n: len(acked[n]) for n in "bc"}
        time.sleep(1.5)
        stop.set()
        for thread in writers:
            thread.join()
        assert all(len(acked[n]) > since[n] for n in "bc"), "writes go on after the failover"
        assert events(leader, "checkpoint"), "the new leader adopted what the voters hold"
        held = {name: notes(shared.ports[name]) for name in leader.status()["active"]}
        assert len(held) == 3
        first = next(iter(held.values()))
        assert all(texts == first for texts in held.values()), "one order on every executor"
        missing = {t for texts in acked.values() for t in texts} - set(first)
        assert not missing, f"acknowledged writes lost: {sorted(missing)}"
        print(f"{len(first)} notes on every executor; acknowledged through a, b, c: "
              f"{[len(acked[n]) for n in 'abc']}")
        # An executor cleansed now is restored from what the new leader adopted.
        code, _, _ = leader.request("POST", "/executors/node/cleanse", admin=True)
        assert code == 202
        leader.wait_for(lambda s: any(e["event"] == "cleansed" and e.get("executor") == "node"
                                      for e in leader.event_kinds()), "node cleansed")
        assert notes(shared.ports["node"]) == first
        assert shared.restored == ["node"], "nothing else was cleansed"
    finally:
        stop.set()
        for thread in writers:
            if thread.is_alive():
                thread.join()
        for gw in gateways.values():
            gw.stop()
