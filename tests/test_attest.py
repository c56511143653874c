"""Attested launch against real processes: measurements, the signed manifest, the CLI, and the
check that the socket the gateway reaches belongs to the executor."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from endosec.attest import (
    AttestError,
    Manifest,
    Measurement,
    differences,
    load_manifest,
    sign_manifest,
)
from endosec.attest.cli import attest
from endosec.attest.manifest import write_manifest
from endosec.attest.measure import REPLACED, entry
from endosec.config import AttestConfig
from endosec.observe.ledger_format import load_public_key
from endosec.runtime.base import RuntimeDriver, StartError
from endosec.runtime.process import ExecutorSpec, ProcessExecutor, free_port
from endosec.runtime.segment import segment_possible
from endosec.runtime.wire import WireError, exchange

pytestmark = pytest.mark.slow

# Serves 200 on GET /health after an optional delay; reads the file named by its third argument
# (a configuration file outside the template).
SERVER = r"""
import http.server, pathlib, sys, time

port, delay, config = int(sys.argv[1]), float(sys.argv[2]), pathlib.Path(sys.argv[3])
config.read_text()
time.sleep(delay)

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass

http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""


def need(condition: bool, why: str) -> None:
    """Skip where the host cannot run the test; in CI, which can, fail instead."""
    if condition:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why}: CI provides it")
    pytest.skip(why)


def system_python() -> Path:
    """A Python that still runs when copied elsewhere (its standard library found by its
    compiled-in prefix)."""
    found = Path("/usr/bin/python3").resolve()
    need(found.is_file(), "no /usr/bin/python3 to copy")
    return found


def libz() -> Path:
    """The zlib shared library this process maps once it loads it."""
    name = ctypes.util.find_library("z")
    need(name is not None, "no zlib shared library")
    ctypes.CDLL(name)
    maps = Path("/proc/self/maps").read_text().splitlines()
    return Path(next(line.split()[-1] for line in maps if "/libz.so" in line))


def swap(path: Path, extra: bytes = b"\0endosec-test") -> None:
    """Give ``path`` different bytes the way an installer does: write a new file, rename it
    over the old one (a running program's file cannot be written in place)."""
    fresh = path.with_name(path.name + ".new")
    shutil.copy2(path, fresh)
    with fresh.open("ab") as f:
        f.write(extra)
    os.replace(fresh, path)


class World:
    """An executor launched from files this test controls: a copied interpreter, a copied
    library preloaded into it, a template, and a configuration file outside the template."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "bin").mkdir()
        (root / "lib").mkdir()
        self.python = root / "bin" / "python3"
        shutil.copy2(system_python(), self.python)
        self.lib = root / "lib" / "libz.so.1"
        shutil.copy2(libz(), self.lib)
        self.template = root / "template"
        self.template.mkdir()
        (self.template / "server.py").write_text(SERVER)
        (self.template / "page.html").write_text("pristine")
        self.config = root / "server.conf"
        self.config.write_text("setting = 1\n")

    def spec(self, **overrides: Any) -> ExecutorSpec:
        fields: dict[str, Any] = {
            "name": "attested",
            "argv": [str(self.python), "{scratch}/server.py", "{port}", "0", "server.conf"],
            "cwd": self.root, "env": {"LD_PRELOAD": str(self.lib)},
            "scratch_root": self.root / "scratch", "template": self.template,
            "start_timeout": 10.0}
        return ExecutorSpec(**{**fields, **overrides})

    def label(self, kind: str) -> str:
        return {"exe": f"exe:{self.python}", "lib": f"lib:{self.lib}",
                "template": "template:page.html", "config": f"config:{self.config}"}[kind]

    def tamper(self, kind: str) -> None:
        if kind == "exe":
            swap(self.python)
        elif kind == "lib":
            swap(self.lib)
        elif kind == "template":
            (self.template / "page.html").write_text("defaced")
        else:
            self.config.write_text("setting = 2\n")


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(Path(os.path.realpath(tmp_path)))


@pytest.fixture
def launch(executors: list[ProcessExecutor]) -> Callable[[ExecutorSpec], Any]:
    async def start(spec: ExecutorSpec) -> ProcessExecutor:
        executor = ProcessExecutor(spec)
        executors.append(executor)
        await executor.start()
        return executor

    return start


async def measured(executor: ProcessExecutor) -> Measurement:
    measurement = await executor.measure()
    assert measurement is not None
    return measurement


# -- the pure part ------------------------------------------------------------------------------

def test_differences_name_changed_appeared_and_disappeared_labels_sorted() -> None:
    expected = {"entry": "1", "exe:/a": "2", "lib:/gone": "3", "template:x": "4"}
    seen = {"entry": "1", "exe:/a": "9", "template:x": "4", "config:/new": "5"}
    assert differences(expected, seen) == ("config:/new", "exe:/a", "lib:/gone")
    assert differences(expected, dict(expected)) == ()


def test_the_entry_covers_the_command_but_not_an_allocated_port(world: World) -> None:
    spec = world.spec()
    assert entry(spec) == entry(replace(spec, scratch_root=world.root / "elsewhere"))
    assert entry(spec)["port"] is None
    assert entry(spec) != entry(replace(spec, argv=[*spec.argv, "--debug"]))
    assert entry(spec) != entry(replace(spec, env={}))


# -- measurements of a running executor ---------------------------------------------------------

async def test_a_measurement_covers_the_executor_but_not_its_supervisor(
    world: World, launch: Callable[[ExecutorSpec], Any],
) -> None:
    executor = await launch(world.spec())
    digests = (await measured(executor)).digests
    assert executor.pid is not None
    assert world.label("exe") in digests and world.label("lib") in digests
    assert world.label("config") in digests
    assert {"template:server.py", "template:page.html", "entry"} <= digests.keys()
    assert any(label.startswith("lib:") and "libc.so" in label for label in digests)
    # The supervisor is the gateway's interpreter running endosec's own script.
    assert f"exe:{os.path.realpath(sys.executable)}" not in digests
    assert not any("supervise.py" in label for label in digests)
    assert not any(label.startswith("config:") and str(executor.scratch) in label
                   for label in digests)
    assert (await measured(executor)).digests == digests  # nothing changed: the same again


@pytest.mark.parametrize("kind", ["exe", "lib", "template", "config"])
async def test_a_changed_file_is_caught_running_and_at_the_next_launch(
    kind: str, world: World, launch: Callable[[ExecutorSpec], Any], tmp_path: Path,
) -> None:
    executor = await launch(world.spec())
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "attest.json"
    write_manifest(path, sign_manifest([await measured(executor)], key))
    expected = load_manifest(path, key.public_key()).expected("attested")
    label = world.label(kind)
    assert label in expected

    world.tamper(kind)
    running = await measured(executor)
    assert differences(expected, running.digests) == (label,)
    if kind in ("exe", "lib"):  # what runs is no longer what the path holds
        assert running.digests[label] == REPLACED

    await executor.stop()
    relaunched = await launch(world.spec())
    seen = await measured(relaunched)
    assert differences(expected, seen.digests) == (label,)
    assert seen.digests[label] != REPLACED


async def test_a_sandboxed_executor_is_measured_without_bubblewrap(
    world: World, launch: Callable[[ExecutorSpec], Any],
) -> None:
    bwrap = shutil.which("bwrap")
    need(bwrap is not None, "bubblewrap (bwrap) is not installed")
    assert bwrap is not None
    plain = await measured(await launch(world.spec(name="plain")))
    sandboxed = await measured(await launch(world.spec(name="boxed", sandbox=True)))
    assert f"exe:{os.path.realpath(bwrap)}" not in sandboxed.digests
    assert world.label("exe") in sandboxed.digests
    assert differences(plain.digests, sandboxed.digests) == ("entry",)


async def test_a_stopped_executor_has_no_measurement(
    world: World, launch: Callable[[ExecutorSpec], Any],
) -> None:
    executor = await launch(world.spec())
    await executor.stop()
    assert await executor.measure() is None
    assert isinstance(executor, RuntimeDriver)


# -- the manifest -------------------------------------------------------------------------------

@pytest.fixture
def signed(tmp_path: Path) -> tuple[Path, Ed25519PrivateKey]:
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "attest.json"
    write_manifest(path, sign_manifest([
        Measurement("a", {"entry": "1" * 64, "exe:/usr/sbin/nginx": "2" * 64}),
        Measurement("b", {"entry": "3" * 64})], key))
    return path, key


def test_the_manifest_round_trips(signed: tuple[Path, Ed25519PrivateKey]) -> None:
    path, key = signed
    manifest = load_manifest(path, key.public_key())
    assert isinstance(manifest, Manifest)
    assert manifest.expected("a") == {"entry": "1" * 64, "exe:/usr/sbin/nginx": "2" * 64}
    assert manifest.expected("b") == {"entry": "3" * 64}
    assert load_manifest(path, None) == manifest
    with pytest.raises(AttestError, match="no measurement of executor 'c'"):
        manifest.expected("c")


def test_a_modified_manifest_is_refused(signed: tuple[Path, Ed25519PrivateKey]) -> None:
    path, key = signed
    data = json.loads(path.read_text())
    data["executors"]["a"]["exe:/usr/sbin/nginx"] = "4" * 64
    path.write_text(json.dumps(data))
    for public_key in (key.public_key(), None):
        with pytest.raises(AttestError) as info:
            load_manifest(path, public_key)
        assert str(info.value).startswith(f"{path}: the signature does not match the content")


def test_a_manifest_signed_by_another_key_is_refused(
    signed: tuple[Path, Ed25519PrivateKey],
) -> None:
    path, _key = signed
    operator = Ed25519PrivateKey.generate().public_key()
    with pytest.raises(AttestError, match=r"signed by ed25519:\w+, not by the operator key"):
        load_manifest(path, operator)


def test_a_malformed_or_missing_manifest_is_refused(
    signed: tuple[Path, Ed25519PrivateKey], tmp_path: Path,
) -> None:
    path, key = signed
    data = json.loads(path.read_text())
    data["executors"]["a"]["entry"] = "not hex"
    path.write_text(json.dumps(data))
    with pytest.raises(AttestError, match=r"not an endosec manifest: executors\.a"):
        load_manifest(path, key.public_key())
    with pytest.raises(AttestError, match="cannot read the manifest"):
        load_manifest(tmp_path / "absent.json", key.public_key())


def test_a_manifest_in_the_configuration_needs_the_operator_key() -> None:
    with pytest.raises(ValidationError, match="manifest needs public_key"):
        AttestConfig(manifest=Path("attest.json"))
    config = AttestConfig(manifest=Path("attest.json"), public_key=Path("operator.pub"))
    assert (config.action, config.remeasure_mean) == ("quarantine", 300.0)
    with pytest.raises(ValidationError, match="greater than 0"):
        AttestConfig(remeasure_mean=0)


# -- the command --------------------------------------------------------------------------------

def test_the_command_measures_local_executors_and_signs_the_manifest(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "health").write_text("ok")
    config = tmp_path / "endosec.yaml"
    config.write_text(f"""
controller: {{active: 1}}
executors:
  - name: web
    argv: ["{sys.executable}", "-m", "http.server", "--bind", "{{host}}",
           "--directory", "{{scratch}}", "{{port}}"]
    template: site
    profile: [cpython]
  - name: elsewhere
    url: http://127.0.0.1:9
    profile: [other]
""")
    result = CliRunner().invoke(attest, ["manifest", "--config", str(config)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "web: " in lines[0] and lines[0].endswith(" files measured")
    assert int(lines[0].split()[1]) >= 3  # the interpreter, libc, the template's file
    assert lines[1].startswith("elsewhere: skipped: ")
    key = tmp_path / "operator.key"
    assert key.stat().st_mode & 0o777 == 0o600
    public = load_public_key(key)
    manifest = load_manifest(tmp_path / "attest.json", public)
    assert f"public key {manifest.key}" in result.output
    assert list(manifest.executors) == ["web"]
    web = manifest.expected("web")
    assert "template:health" in web and f"exe:{os.path.realpath(sys.executable)}" in web
    again = CliRunner().invoke(attest, ["manifest", "--config", str(config), "--out",
                                        str(tmp_path / "again.json")])
    assert again.exit_code == 0, again.output
    assert load_manifest(tmp_path / "again.json", public).expected("web") == web


# -- whose socket answers -----------------------------------------------------------------------

@pytest.fixture
def squatters() -> Iterator[Callable[[int], subprocess.Popen[bytes]]]:
    """Start a plain ``python3 -m http.server`` on a port, answering 200 on /health."""
    made: list[subprocess.Popen[bytes]] = []

    def squat(port: int, root: Path) -> subprocess.Popen[bytes]:
        (root / "health").write_text("ok")
        proc = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                                 "--directory", str(root), str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        made.append(proc)
        return proc

    yield squat  # type: ignore[misc]
    for proc in made:
        proc.kill()
        proc.wait()


async def answers(port: int) -> bool:
    for _ in range(200):
        try:
            if (await exchange("127.0.0.1", port, "GET", "/health")).status == 200:
                return True
        except WireError:
            pass  # not listening yet
        await asyncio.sleep(0.05)
    return False


async def test_health_fails_when_another_process_took_the_port(
    world: World, launch: Callable[[ExecutorSpec], Any], squatters: Any, tmp_path: Path,
) -> None:
    port = free_port()
    # The server runs under a shell that outlives it, as a crashed worker under a live master.
    shell = ("{python} {scratch}/server.py {port} 0 server.conf & echo $! > {scratch}/pid; "
             "wait; sleep 300").replace("{python}", str(world.python))
    executor = await launch(world.spec(argv=["/bin/sh", "-c", shell], port=port))
    assert await executor.health()
    os.kill(int((executor.scratch / "pid").read_text()), signal.SIGKILL)
    squatters(port, tmp_path)
    assert await answers(port)  # the port answers 200 on /health...
    assert executor.running
    assert not await executor.health()  # ...but not from the executor


async def test_a_start_on_a_port_someone_else_answers_fails_naming_them(
    world: World, launch: Callable[[ExecutorSpec], Any], squatters: Any, tmp_path: Path,
) -> None:
    port = free_port()
    first = await launch(world.spec(port=port))
    await first.stop()
    squatter = squatters(port, tmp_path)
    assert await answers(port)
    slow = world.spec(argv=[str(world.python), "{scratch}/server.py", "{port}", "30",
                            "server.conf"], port=port)
    with pytest.raises(StartError, match=rf"answers, but not from this executor: the listening "
                                         rf"socket is held by pid {squatter.pid}\b"):
        await launch(slow)
    squatter.kill()
    squatter.wait()
    executor = await launch(world.spec(port=port))  # the port is free again: a normal start
    assert await executor.health()


async def test_a_segmented_executor_holds_the_socket_its_segment_forwards_to(
    world: World, launch: Callable[[ExecutorSpec], Any],
) -> None:
    missing = segment_possible()
    need(missing is None, f"network segments need root, ip and nft: {missing}")
    executor = await launch(world.spec(segmented=True))
    assert executor.address[0] != "127.0.0.1"
    assert await executor.health()
    assert world.label("exe") in (await measured(executor)).digests


async def test_a_child_that_left_the_group_does_not_hold_the_port_for_it(
    world: World, launch: Callable[[ExecutorSpec], Any], tmp_path: Path,
) -> None:
    """A process the executor started in a session of its own is outside what cleansing stops
    and sampling sees: the socket it holds is not the executor's, parent or not."""
    port = free_port()
    shell = ("setsid {python} {scratch}/server.py {port} 0 server.conf & echo $! > "
             "{scratch}/pid; sleep 300").replace("{python}", str(world.python))
    with pytest.raises(StartError, match="answers, but not from this executor"):
        await launch(world.spec(argv=["/bin/sh", "-c", shell], port=port))
    with contextlib.suppress(OSError, ValueError):  # the server outlived the group it left
        os.kill(int(next(tmp_path.rglob("pid")).read_text()), signal.SIGKILL)
