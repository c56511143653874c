"""Three gateways on a real three-member etcd in front of the same three executors: one
boundary. The executors run outside every gateway (url executors, restored by a command), so
whatever a gateway decides about them, it decides for all."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.etcd_cluster import EtcdCluster
from tests.gatewayctl import DEMO, Gateway, demo_config

pytestmark = pytest.mark.slow

SECRET = DEMO.parent / "secret.txt"
HERE = DEMO.parent / "executors"
EXECUTORS = {"stdlib": ["{python}", str(HERE / "stdlib_notes.py")],
             "aiohttp": ["{python}", str(HERE / "aiohttp_notes.py")],
             "node": ["node", str(HERE / "notes.js")]}

# Restores one executor: stop the running process, start a pristine one (no implant) on the
# same port, and count the restoration. It is the service's, not a gateway's: it outlives them.
RESTORE = textwrap.dedent("""\
    import json, os, signal, socket, subprocess, sys, time
    from pathlib import Path
    name, root = sys.argv[1], Path(sys.argv[2])
    spec = json.loads((root / f"{name}.json").read_text())
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
            spec = {"port": self.ports[name],
                    "argv": [sys.executable if a == "{python}" else a for a in argv]
                    + ["--port", str(self.ports[name])]}
            (root / f"{name}.json").write_text(json.dumps(spec))
            env = {**os.environ, **({"NOTES_BACKDOOR_SECRET": str(SECRET)}
                                    if name == "stdlib" else {})}
            proc = subprocess.Popen(spec["argv"], env=env, start_new_session=True,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            (root / f"{name}.pid").write_text(str(proc.pid))
            self.procs.append(proc)

    def config(self, demo: dict[str, Any]) -> list[dict[str, Any]]:
        profiles = {e["name"]: e["profile"] for e in demo["executors"]}
        return [{"name": name, "url": f"http://127.0.0.1:{port}", "profile": profiles[name],
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


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[Shared]:
    executors = Shared(tmp_path / "executors")
    yield executors
    executors.stop()


def events(gw: Gateway, kind: str, executor: str | None = None) -> list[dict[str, Any]]:
    found = [json.loads(line) for line in gw.events.read_text().splitlines()]
    return [e for e in found if e["event"] == kind
            and (executor is None or e.get("executor") == executor)]


def out_at(gw: Gateway, name: str, timeout: float = 10.0) -> float:
    """The wall-clock time ``gw`` is first seen serving without ``name`` as a voter."""
    deadline = time.monotonic() + timeout
    while name in gw.status()["active"]:
        assert time.monotonic() < deadline, f"{name} still votes on {gw.url}"
        time.sleep(0.02)
    return time.time()


def test_three_gateways_quarantine_once_cleanse_once_and_fail_over_with_the_same_state(
        shared: Shared, tmp_path: Path) -> None:
    etcd = EtcdCluster(tmp_path / "etcd")
    demo = demo_config()
    gateways: dict[str, Gateway] = {}
    try:
        for name in ("a", "b", "c"):
            data = demo_config(executors=shared.config(demo),
                               cluster={"name": f"gw-{name}", "boundary": "shared"})
            gateways[name] = Gateway(tmp_path / name, data, args=("--cluster", etcd.url))
        a, b, c = gateways["a"], gateways["b"], gateways["c"]
        assert a.status()["cluster"]["role"] == "leader"
        for follower in (b, c):
            follower.wait_for(lambda s: s["cluster"]["role"] == "follower", "a follower")
            assert follower.status()["active"] == a.status()["active"]
        # Only the leader takes orders.
        code, _, body = b.request("POST", "/executors/node/quarantine", admin=True)
        assert code == 409 and json.loads(body)["leader"] == "gw-a"

        assert a.request("POST", "/notes", {"text": "kept"})[0] == 201
        # The implant, triggered through a follower: its verdict reaches the leader.
        code, _, body = c.request("GET", "/notes/1", headers={"X-Debug": "letmein"})
        assert code == 200 and SECRET.read_text().strip().encode() not in body
        out_at(a, "stdlib")
        [quarantined] = events(a, "quarantine", "stdlib")
        lags = [out_at(gw, "stdlib") - quarantined["ts"] for gw in (b, c)]
        print(f"new active set applied by the followers after {lags[0]:.3f} s and "
              f"{lags[1]:.3f} s")
        assert max(lags) < 1.0

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
        killed = time.monotonic()
        leader = None
        while leader is None:
            assert time.monotonic() - killed < 10, "no gateway took over within 10 s"
            for gw in (b, c):
                if gw.status()["cluster"]["role"] == "leader":
                    leader = gw
            time.sleep(0.1)
        print(f"{leader.url} leads {time.monotonic() - killed:.2f} s after kill -9 of the leader")
        resumed = events(leader, "cluster-resumed")
        assert resumed and resumed[-1]["previous"] == "gw-a"
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
        etcd.stop()
