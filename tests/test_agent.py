"""Executors on other hosts: `endosec agent` in network namespaces joined by veth pairs.

Three hosts and the test's own: the gateway runs in one namespace with two local executors,
each agent in its own namespace with one executor. The DHR loop runs across them (dissent,
quarantine, remote cleanse, journal replay, agreement again), and a cut link gets its executor
replaced from the spares, then readmitted when the link returns. Needs root and iproute2.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from endosec.runtime.certs import self_signed
from endosec.runtime.process import free_port
from tests.gatewayctl import DEMO, Gateway

pytestmark = pytest.mark.slow

EXECUTORS = DEMO.parent / "executors"
SECRET = DEMO.parent / "secret.txt"
TOKEN = "agent-" + secrets.token_hex(8)


def need_namespaces() -> None:
    if os.geteuid() == 0 and shutil.which("ip") is not None:
        return
    why = "network namespaces need root and iproute2 (ip)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why}: CI runs as root")
    pytest.skip(why)


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


class Hosts:
    """The gateway's namespace ``gw`` and one per agent, each joined to ``gw`` by a veth pair;
    the test reaches the gateway over a pair of its own."""

    def __init__(self, agents: int) -> None:
        tag = secrets.token_hex(2)
        self.net = f"10.{100 + int(tag[:2], 16) % 100}"
        self.gw = f"esgw{tag}"
        self.agents = [f"esa{i}{tag}" for i in range(1, agents + 1)]
        self.links = {ns: f"v{i}{tag}" for i, ns in enumerate(self.agents, 1)}
        ip("netns", "add", self.gw)
        ip("-n", self.gw, "link", "set", "lo", "up")
        ip("link", "add", f"vt{tag}", "type", "veth", "peer", "name", f"vg{tag}")
        ip("link", "set", f"vg{tag}", "netns", self.gw)
        ip("addr", "add", f"{self.net}.0.1/24", "dev", f"vt{tag}")
        ip("-n", self.gw, "addr", "add", f"{self.net}.0.2/24", "dev", f"vg{tag}")
        ip("link", "set", f"vt{tag}", "up")
        ip("-n", self.gw, "link", "set", f"vg{tag}", "up")
        self.test_link = f"vt{tag}"
        for i, ns in enumerate(self.agents, 1):
            ip("netns", "add", ns)
            ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", self.gw, "link", "add", self.links[ns], "type", "veth", "peer", "name",
               f"p{i}{tag}", "netns", ns)
            ip("-n", self.gw, "addr", "add", f"{self.net}.{i}.1/24", "dev", self.links[ns])
            ip("-n", ns, "addr", "add", f"{self.net}.{i}.2/24", "dev", f"p{i}{tag}")
            ip("-n", self.gw, "link", "set", self.links[ns], "up")
            ip("-n", ns, "link", "set", f"p{i}{tag}", "up")

    def address(self, ns: str) -> str:
        return f"{self.net}.{self.agents.index(ns) + 1}.2"

    def cut(self, ns: str, up: bool = False) -> None:
        ip("-n", self.gw, "link", "set", self.links[ns], "up" if up else "down")

    def close(self) -> None:
        for ns in (self.gw, *self.agents):
            with contextlib.suppress(subprocess.CalledProcessError):
                ip("netns", "del", ns)
        with contextlib.suppress(subprocess.CalledProcessError):
            ip("link", "del", self.test_link)


class Agent:
    def __init__(self, tmp: Path, ns: str, address: str, executor: dict[str, Any]) -> None:
        self.tls = tmp / "tls"
        self_signed(self.tls, (address,))
        config = {"listen": f"{address}:0", "tls": {"cert": "tls/cert.pem", "key": "tls/key.pem"},
                  "executors": [{**executor, "host": address, "cwd": str(EXECUTORS)}]}
        (tmp / "agent.yaml").write_text(yaml.safe_dump(config))
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "endosec.cli", "agent", "--config",
             str(tmp / "agent.yaml"), "--state-dir", str(tmp / "state")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
            env={**os.environ, "ENDOSEC_AGENT_TOKEN": TOKEN})
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "serving" not in line:
            self.proc.kill()
            raise RuntimeError(f"agent did not start: {line!r} {self.proc.communicate()[1]}")
        self.url = line.split()[3]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.communicate(timeout=20)


def notes_executor(name: str, script: str, profile: list[str], **env: str) -> dict[str, Any]:
    return {"name": name, "argv": ["{python}" if script.endswith(".py") else "node",
                                   str(EXECUTORS / script), "--port", "{port}", "--host",
                                   "{host}"],
            "profile": profile, "state": {"http": "/_endosec/state"},
            "health": {"interval": 0.5}, **({"env": env} if env else {})}


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    need_namespaces()
    h = Hosts(2)
    try:
        yield h
    finally:
        h.close()


def state_of(gw: Gateway, name: str) -> str:
    return str(gw.executor(name)["state"])


def test_the_dhr_loop_runs_across_hosts_and_survives_a_cut_link(
        tmp_path: Path, hosts: Hosts) -> None:
    a1, a2 = hosts.agents
    backdoored = notes_executor("stdlib", "stdlib_notes.py", ["http:stdlib-http.server"],
                                NOTES_BACKDOOR_SECRET=str(SECRET))
    agents = [Agent(tmp_path / "a1", a1, hosts.address(a1), backdoored),
              Agent(tmp_path / "a2", a2, hosts.address(a2),
                    notes_executor("aiohttp", "aiohttp_notes.py", ["http:aiohttp"]))]
    data = yaml.safe_load(DEMO.read_text())
    remote = {"health": {"interval": 0.5}, "state": {"http": "/_endosec/state"},
              "connect_timeout": 0.5}
    data["executors"] = [
        {"name": "stdlib", "agent": {"url": agents[0].url, "ca": str(agents[0].tls / "cert.pem")},
         "profile": ["http:stdlib-http.server", "runtime:cpython-3"], **remote},
        {"name": "aiohttp", "agent": {"url": agents[1].url,
                                      "ca": str(agents[1].tls / "cert.pem")},
         "profile": ["http:aiohttp", "runtime:cpython-3"], **remote},
        {**notes_executor("node", "notes.js", ["http:node-http", "runtime:nodejs"]),
         "connect_timeout": 0.5},
        {**notes_executor("node-b", "notes.js", ["http:node-http", "runtime:nodejs", "build:b"]),
         "connect_timeout": 0.5},
    ]
    data["controller"] = {**data["controller"], "active": 3, "floor": 2}
    data["scheduler"] = {"policy": "max-dissimilarity", "seed": 3}
    listen = f"{hosts.net}.0.2:0"
    gw = Gateway(tmp_path / "gw", data, args=("--listen", listen, "--admin", listen),
                 env={"ENDOSEC_AGENT_TOKEN": TOKEN}, prefix=("ip", "netns", "exec", hosts.gw))
    try:
        gw.wait_for(lambda s: {"stdlib", "aiohttp"} <= set(s["active"]),
                    what="both remote executors voting")
        for i in range(3):
            assert gw.request("POST", "/notes", {"text": f"across {i}"})[0] == 201
        # A backdoor on the first agent's host is outvoted, quarantined and cleansed remotely.
        code, _, body = gw.request("GET", "/notes/1", headers={"X-Debug": "letmein"})
        assert code == 200 and SECRET.read_text().strip().encode() not in body
        gw.wait_for(lambda s: any(e["event"] == "cleansed" and e["executor"] == "stdlib"
                                  for e in gw.event_kinds()), what="stdlib cleansed remotely")
        status = gw.wait_for(lambda s: gw.executor("stdlib")["synced"] == s["journal"]["head"]
                             and state_of(gw, "stdlib") in ("active", "spare"),
                             what="stdlib level with the journal again")
        assert status["journal"]["head"] >= 3
        # Every voter, remote ones included, agrees on the replayed state.
        assert gw.request("GET", "/notes")[0] == 200
        # Cut the second agent's link: its executor is replaced from the spares.
        hosts.cut(a2)
        deadline = time.monotonic() + 30
        while state_of(gw, "aiohttp") == "active" and time.monotonic() < deadline:
            assert gw.request("GET", "/notes", timeout=10)[0] == 200  # the floor holds
            time.sleep(0.2)
        status = gw.wait_for(lambda s: "aiohttp" not in s["active"] and len(s["active"]) == 3,
                             what="aiohttp replaced from the spares")
        assert gw.request("GET", "/notes")[0] == 200
        hosts.cut(a2, up=True)
        gw.wait_for(lambda s: state_of(gw, "aiohttp") in ("spare", "active"), timeout=90,
                    what="aiohttp readmitted after the link returned")
        kinds = [(e["event"], e.get("executor")) for e in gw.event_kinds()]
        assert ("cleanse-failed", "aiohttp") in kinds, "the cut link was noticed"
        assert kinds.index(("quarantine", "stdlib")) < kinds.index(("cleansed", "stdlib"))
    finally:
        gw.stop()
        for agent in agents:
            agent.stop()


def start_service(port: int, **env: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, str(EXECUTORS / "stdlib_notes.py"), "--port",
                             str(port)], env={**os.environ, **env}, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return proc
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the unmanaged service did not start")


def test_an_unmanaged_executor_that_dissents_needs_a_human(tmp_path: Path) -> None:
    port = free_port()
    service = start_service(port, NOTES_BACKDOOR_SECRET=str(SECRET))
    data = yaml.safe_load(DEMO.read_text())
    data["executors"] = [e for e in data["executors"] if e["name"] != "stdlib"] + [
        {"name": "legacy", "url": f"http://127.0.0.1:{port}",
         "profile": ["http:stdlib-http.server", "runtime:cpython-3"],
         "state": {"http": "/_endosec/state"}}]
    gw = Gateway(tmp_path, data)
    try:
        assert gw.request("POST", "/notes", {"text": "kept"})[0] == 201
        code, _, body = gw.request("GET", "/notes/1", headers={"X-Debug": "letmein"})
        assert code == 200 and SECRET.read_text().strip().encode() not in body
        gw.wait_for(lambda s: any(e["event"] == "alert" and e.get("executor") == "legacy"
                                  and "a human must restore it" in e["message"]
                                  for e in gw.event_kinds()), what="the human-needed alert")
        assert state_of(gw, "legacy") in ("quarantined", "cleansing")
        time.sleep(2)  # automatic retries do not readmit it
        assert state_of(gw, "legacy") in ("quarantined", "cleansing")
        # The operator restores it (a fresh instance) and says so.
        service.terminate()
        service.wait(timeout=10)
        service = start_service(port)
        code, _, _ = gw.request("POST", "/executors/legacy/cleanse", admin=True,
                                headers={"Authorization": "Bearer test-token"})
        assert code == 202
        gw.wait_for(lambda s: state_of(gw, "legacy") in ("spare", "active"),
                    what="legacy readmitted once restored")
        alerts = [e for e in gw.event_kinds() if e["event"] == "alert"
                  and e.get("executor") == "legacy"]
        assert len(alerts) == 1, "one alert, not one per retry"
    finally:
        gw.stop()
        service.kill()
        service.wait(timeout=10)
