"""Executors on other hosts: `endosec agent`, admitted by proof of its identity key.

On loopback, a real agent and the gateway's driver admit each other (and refuse a key they do
not know, a replayed proof, a session that expired), and the agent measures its executor for
the gateway as the gateway would measure it (a malformed measurement is not trusted). In
network namespaces joined by veth pairs, three hosts and the test's own: the gateway runs in
one namespace with two local executors, each agent in its own namespace with one executor. The
DHR loop runs across them (dissent, quarantine, remote cleanse, journal replay, agreement
again), and a cut link gets its executor replaced from the spares, then readmitted when the
link returns. The namespaces need root and iproute2.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
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
from click.testing import CliRunner

from endosec.attest.cli import attest
from endosec.attest.measure import Measurement, differences
from endosec.config import AgentRef, ExecutorConfig
from endosec.configfile import expand
from endosec.identity import Initiator, Trust, Verifier, load_identity, new_key, public_key
from endosec.protocols.http import Response
from endosec.runtime.base import RuntimeDriverError, StartError
from endosec.runtime.certs import self_signed
from endosec.runtime.drivers import local_spec
from endosec.runtime.process import ProcessExecutor, free_port
from endosec.runtime.remote import AgentExecutor, pinned
from endosec.runtime.wire import exchange
from tests.gatewayctl import DEMO, Gateway
from tests.netns import need_root_tools

pytestmark = pytest.mark.slow

EXECUTORS = DEMO.parent / "executors"
SECRET = DEMO.parent / "secret.txt"


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


def identity(path: Path) -> str:
    """A new identity key in ``path``; its public key, hex."""
    return public_key(new_key(path)).hex()


class Agent:
    """A running ``endosec agent`` with a key of its own, admitting the given gateway keys."""

    def __init__(self, tmp: Path, address: str, executor: dict[str, Any], *,
                 gateways: list[str], ns: str | None = None, admit_for: float = 3600) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.tls = tmp / "tls"
        self_signed(self.tls, (address,))
        self.key = identity(tmp / "agent-id.pem")
        config = {"listen": f"{address}:0", "tls": {"cert": "tls/cert.pem", "key": "tls/key.pem"},
                  "identity": "agent-id.pem", "keys": gateways, "admit_for": admit_for,
                  "executors": [{**executor, "host": address, "cwd": str(EXECUTORS)}]}
        (tmp / "agent.yaml").write_text(yaml.safe_dump(config))
        self.log = tmp / "agent.stderr"
        prefix = ["ip", "netns", "exec", ns] if ns is not None else []
        with self.log.open("w") as err:
            self.proc = subprocess.Popen(
                [*prefix, sys.executable, "-m", "endosec.cli", "agent", "--config",
                 str(tmp / "agent.yaml"), "--state-dir", str(tmp / "state")],
                stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "serving" not in line:
            self.proc.kill()
            raise RuntimeError(f"agent did not start: {line!r} {self.log.read_text()}")
        self.url = line.split()[3]

    def ref(self, gateway_key: Path, **more: Any) -> dict[str, Any]:
        """How a gateway holding ``gateway_key`` finds and recognises this agent."""
        return {"url": self.url, "ca": str(self.tls / "cert.pem"), "identity": str(gateway_key),
                "keys": [self.key], **more}

    def events(self, kind: str) -> list[dict[str, Any]]:
        lines = self.log.read_text().splitlines()
        return [e for e in map(json.loads, filter(lambda x: x.startswith("{"), lines))
                if e["event"] == kind]

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
    need_root_tools()
    h = Hosts(2)
    try:
        yield h
    finally:
        h.close()


def state_of(gw: Gateway, name: str) -> str:
    return str(gw.executor(name)["state"])


NOTES = notes_executor("stdlib", "stdlib_notes.py", ["http:stdlib-http.server"])


@pytest.fixture(scope="module")
def loopback(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Agent, Path]]:
    """An agent on loopback, and the key of the one gateway it admits."""
    tmp = tmp_path_factory.mktemp("loopback")
    gateway_key = tmp / "gateway-id.pem"
    agent = Agent(tmp / "agent", "127.0.0.1", NOTES, gateways=[identity(gateway_key)])
    try:
        yield agent, gateway_key
    finally:
        agent.stop()


def driver(agent: Agent, gateway_key: Path, **more: Any) -> AgentExecutor:
    clock = more.pop("clock", time.time)
    rng = more.pop("rng", None)
    return AgentExecutor("stdlib", AgentRef(**agent.ref(gateway_key, **more)),
                         start_timeout=20, health_timeout=5, clock=clock, rng=rng)


def where(agent: Agent) -> tuple[str, int]:
    host, _, port = agent.url.removeprefix("https://").rpartition(":")
    return host, int(port)


async def test_a_gateway_admitted_by_proof_drives_the_agents_executor(
        loopback: tuple[Agent, Path]) -> None:
    agent, gateway_key = loopback
    remote = driver(agent, gateway_key)
    await remote.start()
    try:
        assert remote.running and remote.pid is not None and await remote.health()
        reply = await exchange(*remote.address, "GET", "/notes")  # the data plane: direct
        assert reply.status == 200
        assert await remote.sample() is not None
    finally:
        await remote.stop()
    assert not remote.running
    gateway = load_identity(gateway_key, None).public.hex()
    assert [e["key"] for e in agent.events("admitted")][-1:] == [gateway]


async def test_the_gateway_proves_again_at_random_times_before_its_admission_ends(
        loopback: tuple[Agent, Path]) -> None:
    agent, gateway_key = loopback
    now = [1_000.0]  # the driver's clock; the agent keeps its own
    remote = driver(agent, gateway_key, reprove_every=30.0, clock=lambda: now[0],
                    rng=random.Random(7))
    delays = random.Random(7)
    admitted = len(agent.events("admitted"))
    await remote.stop()  # any call: admission first
    await remote.stop()
    assert len(agent.events("admitted")) == admitted + 1, "one admission serves both calls"
    first = delays.expovariate(1 / 30.0)
    now[0] += first - 0.01
    await remote.stop()
    assert len(agent.events("admitted")) == admitted + 1
    now[0] += 0.02
    await remote.stop()
    assert len(agent.events("admitted")) == admitted + 2, "proved again when due"
    second = delays.expovariate(1 / 30.0)
    assert abs(first - second) > 0.02, "irregular intervals"
    now[0] += second
    await remote.stop()
    assert len(agent.events("admitted")) == admitted + 3


async def test_a_gateway_with_an_unknown_key_is_refused(
        loopback: tuple[Agent, Path], tmp_path: Path) -> None:
    agent, _ = loopback
    intruder = identity(tmp_path / "intruder.pem")
    remote = driver(agent, tmp_path / "intruder.pem")
    with pytest.raises(StartError, match="the agent refused admission: refused: unknown-key"):
        await remote.start()
    assert not await remote.health()
    host, port = where(agent)
    reply = await exchange(host, port, "GET", "/executors", tls=pinned(str(agent.tls /
                                                                           "cert.pem")))
    assert reply.status == 401 and b"no-session" in reply.body
    refused = agent.events("admission-refused")
    assert any(e["reason"] == "unknown-key" and e["key"] == intruder for e in refused)
    assert any(e["reason"] == "no-session" for e in refused)


async def test_an_agent_that_does_not_prove_the_expected_key_is_not_driven(
        loopback: tuple[Agent, Path], tmp_path: Path) -> None:
    agent, gateway_key = loopback
    remote = driver(agent, gateway_key, keys=[identity(tmp_path / "someone-else.pem")])
    with pytest.raises(RuntimeDriverError,
                       match="the agent did not prove its identity: unknown-key"):
        await remote.stop()


async def test_a_replayed_proof_is_refused(loopback: tuple[Agent, Path]) -> None:
    agent, gateway_key = loopback
    me = load_identity(gateway_key, None)
    gateway = Initiator(me, Verifier(me.public, Trust(frozenset({bytes.fromhex(agent.key)})),
                                     role="agent"))
    host, port = where(agent)
    tls = pinned(str(agent.tls / "cert.pem"))

    async def post(path: str, message: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        reply = await exchange(host, port, "POST", path, body=json.dumps(message).encode(),
                               tls=tls)
        return reply.status, json.loads(reply.body)

    status, answer = await post("/admission/nonce", gateway.hello(time.time()))
    assert status == 200
    message = gateway.proof(answer, time.time())
    assert isinstance(message, dict)
    status, welcome = await post("/admission/proof", message)
    assert status == 200 and 3500 < welcome["for"] <= 3600
    status, again = await post("/admission/proof", message)
    assert status == 401 and again["error"].startswith("refused: replayed-nonce")
    session = ((b"authorization", b"Session " + welcome["session"].encode()),)
    assert (await exchange(host, port, "GET", "/executors", headers=session, tls=tls)).status \
        == 200
    status, _ = await post("/admission/proof", {"proof": "forged"})
    assert status == 400


async def test_an_expired_session_is_refused_and_the_gateway_proves_again(
        tmp_path: Path) -> None:
    gateway_key = tmp_path / "gateway-id.pem"
    agent = Agent(tmp_path / "agent", "127.0.0.1", NOTES, gateways=[identity(gateway_key)],
                  admit_for=0.5)
    try:
        frozen = time.time()  # the driver never renews by itself: the agent must ask
        remote = driver(agent, gateway_key, clock=lambda: frozen)
        await remote.stop()
        await asyncio.sleep(0.55)
        await remote.stop()  # 401, admitted again, the call repeated
        assert [e["reason"] for e in agent.events("admission-refused")] == ["no-session"]
        assert len(agent.events("admitted")) == 2
    finally:
        agent.stop()


async def test_the_agent_measures_its_executor_and_a_changed_script_shows(
        tmp_path: Path) -> None:
    here = Path(os.path.realpath(tmp_path))
    script = here / "notes.py"
    shutil.copy(EXECUTORS / "stdlib_notes.py", script)
    executor = {**NOTES, "argv": ["{python}", str(script), "--port", "{port}", "--host",
                                  "{host}"]}
    gateway_key = here / "gateway-id.pem"
    agent = Agent(here / "agent", "127.0.0.1", executor, gateways=[identity(gateway_key)])
    as_agent_reads_it = expand({**executor, "host": "127.0.0.1", "cwd": str(EXECUTORS)}, here)
    local = ProcessExecutor(local_spec(ExecutorConfig(**as_agent_reads_it),
                                       scratch_root=here / "local", health_probe=None))
    remote = driver(agent, gateway_key)
    try:
        assert await remote.measure() is None, "nothing runs: nothing measured"
        await remote.start()
        await local.start()
        first, mine = await remote.measure(), await local.measure()
        assert first is not None and mine is not None and first.executor == "stdlib"
        label = f"config:{script}"
        assert label in first.digests and "entry" in first.digests
        assert any(x.startswith("exe:") for x in first.digests)
        assert any(x.startswith("lib:") for x in first.digests)

        def shape(m: Measurement) -> dict[str, str]:  # lib: labels depend on what was imported
            return {x: d for x, d in m.digests.items() if not x.startswith("lib:")}

        assert shape(first) == shape(mine), "the same spec measured here and on the agent"
        again = await remote.measure()
        assert again is not None and again.digests == first.digests

        with script.open("a") as f:
            f.write("# edited while it runs\n")
        changed = await remote.measure()
        assert changed is not None
        assert differences(first.digests, changed.digests) == (label,)
    finally:
        await local.stop()
        await remote.stop()
        agent.stop()


GOOD = {"executor": "stdlib", "digests": {"entry": "ab" * 32, "exe:/usr/bin/x": "0" * 64}}


@pytest.mark.parametrize(("status", "measurement"), [
    (404, GOOD),
    (200, [GOOD]),
    (200, {**GOOD, "executor": "another"}),
    (200, {**GOOD, "executor": "here"}),
    (200, {"executor": "stdlib"}),
    (200, {**GOOD, "digests": [["entry", "ab" * 32]]}),
    (200, {**GOOD, "digests": {"entry": "AB" * 32}}),
    (200, {**GOOD, "digests": {"entry": "ab" * 31}}),
    (200, {**GOOD, "digests": {"entry": "ab" * 32 + "\n"}}),
    (200, {**GOOD, "digests": {"entry": int("ab" * 32, 16)}}),
    (200, {**GOOD, "digests": {"entry": None}}),
], ids=["refused", "not-an-object", "another-executor", "the-gateways-name", "no-digests",
        "digests-not-a-mapping", "upper-case", "short", "trailing-newline", "a-number", "null"])
async def test_a_malformed_measurement_from_the_agent_is_not_trusted(
        loopback: tuple[Agent, Path], monkeypatch: pytest.MonkeyPatch, status: int,
        measurement: Any) -> None:
    agent, gateway_key = loopback
    remote = AgentExecutor("here", AgentRef(**agent.ref(gateway_key, executor="stdlib")),
                           start_timeout=5, health_timeout=5)

    def answering(payload: Any, status: int = 200) -> Any:
        async def answer(method: str, path: str) -> Response:
            assert (method, path) == ("GET", "/executors/stdlib/measure")
            return Response(status, b"", (), json.dumps(
                {"host": "127.0.0.1", "port": 1, "running": True, "pid": 2,
                 "measurement": payload}).encode())
        return answer

    monkeypatch.setattr(remote, "_exchange", answering(GOOD))
    good = await remote.measure()
    assert good == Measurement("here", GOOD["digests"]), "under the gateway's name"
    monkeypatch.setattr(remote, "_exchange", answering(measurement, status))
    assert await remote.measure() is None


def test_the_dhr_loop_runs_across_hosts_and_survives_a_cut_link(
        tmp_path: Path, hosts: Hosts) -> None:
    a1, a2 = hosts.agents
    gateway_key = tmp_path / "gateway-id.pem"
    gateways = [identity(gateway_key)]
    backdoored = notes_executor("stdlib", "stdlib_notes.py", ["http:stdlib-http.server"],
                                NOTES_BACKDOOR_SECRET=str(SECRET))
    agents = [Agent(tmp_path / "a1", hosts.address(a1), backdoored, gateways=gateways, ns=a1),
              Agent(tmp_path / "a2", hosts.address(a2),
                    notes_executor("aiohttp", "aiohttp_notes.py", ["http:aiohttp"]),
                    gateways=gateways, ns=a2)]
    data = yaml.safe_load(DEMO.read_text())
    remote = {"health": {"interval": 0.5}, "state": {"http": "/_endosec/state"},
              "connect_timeout": 0.5}
    data["executors"] = [
        {"name": "stdlib", "agent": agents[0].ref(gateway_key),
         "profile": ["http:stdlib-http.server", "runtime:cpython-3"], **remote},
        {"name": "aiohttp", "agent": agents[1].ref(gateway_key),
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
                 prefix=("ip", "netns", "exec", hosts.gw))
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


def test_the_manifest_asks_the_agent_to_measure_its_executor(
        loopback: tuple[Agent, Path], tmp_path: Path) -> None:
    """`endosec attest manifest` starts, measures and stops a remote executor through its
    agent, as it does a local one here."""
    agent, gateway_key = loopback
    config = tmp_path / "endosec.yaml"
    config.write_text(yaml.safe_dump({"controller": {"active": 1}, "executors": [
        {"name": "far", "agent": agent.ref(gateway_key, executor="stdlib"),
         "profile": ["http:stdlib-http.server"]}]}))
    result = CliRunner().invoke(attest, ["manifest", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "far: " in result.output and "measured by its agent" in result.output
    manifest = json.loads((tmp_path / "attest.json").read_text())
    far = manifest["executors"]["far"]
    assert any(label.startswith("exe:") for label in far) and "entry" in far, far
    assert any(label.endswith("/stdlib_notes.py") for label in far), far


def test_what_an_agent_sweeps_at_start_is_said_on_stderr_not_before_its_address(
        tmp_path: Path) -> None:
    """Standard output carries one line, the address: what an earlier run left (here a
    segment whose maker is gone) is reported on standard error, and removed."""
    need_root_tools()
    gone = subprocess.Popen(["true"])
    gone.wait()
    namespace = f"endosec-{gone.pid}-left"
    ip("netns", "add", namespace)
    try:
        agent = Agent(tmp_path, "127.0.0.1", NOTES, gateways=[identity(tmp_path / "gw.pem")])
        try:
            assert agent.url.startswith("https://127.0.0.1:")
            assert not Path(f"/run/netns/{namespace}").exists()
            assert f"network namespace {namespace} (its maker is gone)" in agent.log.read_text()
        finally:
            agent.stop()
    finally:
        if Path(f"/run/netns/{namespace}").exists():
            ip("netns", "del", namespace)
