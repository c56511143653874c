"""The local-process runtime driver against real processes on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from endosec.runtime import process as process_module
from endosec.runtime.base import (
    CleanseError,
    HealthError,
    RuntimeDriver,
    RuntimeDriverError,
    StartError,
)
from endosec.runtime.process import ExecutorSpec, ProcessExecutor, free_port
from endosec.runtime.sandbox import bwrap_argv, find_bwrap

pytestmark = pytest.mark.slow

# Serves GET /health (anything else is 404), dirties its scratch dir, records its port and
# name, and leaves a grandchild `sleep 300` in its process group.
SERVER = r"""
import http.server, pathlib, subprocess, sys

port, scratch, name = int(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
(scratch / "written.txt").write_text("dirty")
(scratch / "argv.txt").write_text(f"{port} {name}")
child = subprocess.Popen(["sleep", "300"])
(scratch / "grandchild.pid").write_text(str(child.pid))

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        status = 200 if self.path == "/health" else 404
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass

http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""

SERVER_ARGV = [sys.executable, "{scratch}/server.py", "{port}", "{scratch}", "{name}"]


def alive(pid: int) -> bool:
    """Whether pid names a live (non-zombie) process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll a condition that a signal makes true shortly after it is sent."""
    for _ in range(int(timeout / 0.02)):
        if check():
            return True
        await asyncio.sleep(0.02)
    return check()


@pytest.fixture
def template(tmp_path: Path) -> Path:
    image = tmp_path / "image"
    image.mkdir()
    (image / "server.py").write_text(SERVER)
    (image / "pristine.txt").write_text("pristine")
    return image


@pytest.fixture
def make(
    tmp_path: Path, template: Path, executors: list[ProcessExecutor]
) -> Callable[..., ProcessExecutor]:
    def factory(**overrides: Any) -> ProcessExecutor:
        fields: dict[str, Any] = {
            "name": "exe-a",
            "argv": SERVER_ARGV,
            "scratch_root": tmp_path / "scratch",
            "template": template,
            "start_timeout": 10.0,
        }
        fields.update(overrides)
        executor = ProcessExecutor(ExecutorSpec(**fields))
        executors.append(executor)
        return executor

    return factory


async def test_start_serves_health_on_the_substituted_port(
    make: Callable[..., ProcessExecutor],
) -> None:
    executor = make()
    assert isinstance(executor, RuntimeDriver)
    await executor.start()
    host, port = executor.address
    assert host == "127.0.0.1"
    assert executor.running and executor.returncode is None
    assert await executor.health()
    assert (executor.scratch / "argv.txt").read_text() == f"{port} exe-a"
    assert (executor.scratch / "pristine.txt").read_text() == "pristine"


async def test_stop_kills_the_whole_group_including_grandchildren(
    make: Callable[..., ProcessExecutor],
) -> None:
    executor = make()
    await executor.start()
    leader = executor.pid
    grandchild = int((executor.scratch / "grandchild.pid").read_text())
    assert leader is not None and alive(leader) and alive(grandchild)
    await executor.stop()
    assert not executor.running
    assert executor.returncode == -signal.SIGTERM
    assert not alive(leader)
    assert not alive(grandchild)
    assert not await executor.health()
    await executor.stop()  # idempotent


async def test_stop_escalates_to_sigkill_when_sigterm_is_ignored(
    make: Callable[..., ProcessExecutor], tmp_path: Path,
) -> None:
    code = (
        "import signal, subprocess, sys, pathlib, http.server\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])),"
        " http.server.SimpleHTTPRequestHandler).serve_forever()\n"
    )
    executor = make(argv=[sys.executable, "-c", code, "{port}"], health_path="/",
                    stop_timeout=0.3)
    await executor.start()
    await executor.stop()
    assert executor.returncode == -signal.SIGKILL


async def test_cleanse_wipes_state_restores_template_and_restarts(
    make: Callable[..., ProcessExecutor],
) -> None:
    executor = make()
    await executor.start()
    first_pid = executor.pid
    first_grandchild = int((executor.scratch / "grandchild.pid").read_text())
    (executor.scratch / "planted.sh").write_text("backdoor")
    (executor.scratch / "pristine.txt").write_text("tampered")
    await executor.cleanse()
    assert executor.pid != first_pid
    assert not alive(first_grandchild)
    assert not (executor.scratch / "planted.sh").exists()
    assert (executor.scratch / "pristine.txt").read_text() == "pristine"
    assert await executor.health()


async def test_cleanse_wraps_start_failure(
    make: Callable[..., ProcessExecutor], template: Path,
) -> None:
    executor = make()
    await executor.start()
    (template / "server.py").write_text("raise SystemExit(5)")
    with pytest.raises(CleanseError) as info:
        await executor.cleanse()
    assert isinstance(info.value.__cause__, StartError)
    assert not executor.running


async def test_cleanse_replaces_a_planted_symlink_without_following_it(
    make: Callable[..., ProcessExecutor], tmp_path: Path,
) -> None:
    executor = make()
    await executor.start()
    await executor.stop()
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("keep")
    executor.scratch.rename(tmp_path / "old-scratch")
    executor.scratch.symlink_to(victim)
    await executor.cleanse()
    assert (victim / "keep.txt").read_text() == "keep"
    assert not executor.scratch.is_symlink()


async def test_immediate_exit_raises_start_error_with_log_tail(
    make: Callable[..., ProcessExecutor],
) -> None:
    code = "import sys; print('boom-marker: config invalid', file=sys.stderr); sys.exit(3)"
    executor = make(argv=[sys.executable, "-c", code])
    with pytest.raises(StartError) as info:
        await executor.start()
    message = str(info.value)
    assert "boom-marker: config invalid" in message
    assert "status 3" in message
    assert isinstance(info.value.__cause__, HealthError)
    assert not executor.running and executor.returncode == 3


async def test_never_healthy_times_out_and_leaves_nothing_running(
    make: Callable[..., ProcessExecutor],
) -> None:
    executor = make(health_path="/never", start_timeout=0.8)
    with pytest.raises(StartError, match="not healthy at /never") as info:
        await executor.start()
    assert isinstance(info.value, RuntimeDriverError)
    grandchild = int((executor.scratch / "grandchild.pid").read_text())
    assert not executor.running
    assert not alive(grandchild)


async def test_missing_program_raises_start_error(make: Callable[..., ProcessExecutor]) -> None:
    executor = make(argv=["/nonexistent/endosec-server"])
    with pytest.raises(StartError, match="cannot run") as info:
        await executor.start()
    assert isinstance(info.value.__cause__, OSError)


async def test_port_in_use_is_retried_on_a_fresh_port(
    make: Callable[..., ProcessExecutor], tmp_path: Path,
) -> None:
    attempts = tmp_path / "attempts"
    attempts.write_text("0")
    code = (
        "import pathlib, runpy, sys\n"
        f"counter = pathlib.Path({str(attempts)!r})\n"
        "counter.write_text(str(int(counter.read_text()) + 1))\n"
        "if counter.read_text() == '1':\n"
        "    sys.exit('OSError: [Errno 98] Address already in use')\n"
        "sys.argv = sys.argv[1:]\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n"
    )
    executor = make(argv=[sys.executable, "-c", code, *SERVER_ARGV[1:]])
    await executor.start()
    assert attempts.read_text() == "2"
    assert await executor.health()


async def test_fixed_port_is_used_as_given(make: Callable[..., ProcessExecutor]) -> None:
    port = free_port()
    executor = make(port=port)
    await executor.start()
    assert executor.address == ("127.0.0.1", port)


async def test_crash_is_detected_and_orphans_are_reaped(
    make: Callable[..., ProcessExecutor],
) -> None:
    executor = make()
    await executor.start()
    grandchild = int((executor.scratch / "grandchild.pid").read_text())
    assert executor.pid is not None
    os.kill(executor.pid, signal.SIGKILL)
    assert await eventually(lambda: not executor.running)
    assert executor.returncode == -signal.SIGKILL
    assert not await executor.health()
    assert alive(grandchild)  # the crash left it behind ...
    await executor.start()  # ... and the next start reaps it first
    assert not alive(grandchild)
    assert await executor.health()


async def test_start_twice_is_refused(make: Callable[..., ProcessExecutor]) -> None:
    executor = make()
    await executor.start()
    with pytest.raises(StartError, match="already running"):
        await executor.start()


async def test_address_before_start_has_port_zero(make: Callable[..., ProcessExecutor]) -> None:
    executor = make()
    assert executor.address == ("127.0.0.1", 0)
    assert not await executor.health()


@pytest.mark.parametrize("name", ["", ".hidden", "a/b", "..", "logs"])
def test_spec_rejects_unsafe_names(name: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="name"):
        ExecutorSpec(name=name, argv=["x"], scratch_root=tmp_path)


@pytest.mark.parametrize(
    ("field", "value"),
    [("argv", []), ("port", 0), ("port", 70000), ("health_path", "health"),
     ("start_timeout", 0.0), ("health_timeout", -1.0)],
)
def test_spec_rejects_bad_fields(field: str, value: object, tmp_path: Path) -> None:
    fields: dict[str, Any] = {"name": "ok", "argv": ["x"], "scratch_root": tmp_path}
    fields[field] = value
    with pytest.raises(ValueError, match=field):
        ExecutorSpec(**fields)


def test_spec_freezes_argv_and_env(tmp_path: Path) -> None:
    argv = ["a", "{port}"]
    env = {"K": "v"}
    spec = ExecutorSpec(name="x", argv=argv, env=env, scratch_root=tmp_path)
    argv.append("b")
    env["L"] = "w"
    assert spec.argv == ("a", "{port}")
    assert spec.env == {"K": "v"}


async def test_env_placeholders_are_expanded(make: Callable[..., ProcessExecutor]) -> None:
    code = (
        "import os, pathlib, runpy, sys\n"
        "pathlib.Path(os.environ['SCRATCH'], 'env.txt').write_text(os.environ['PORT'])\n"
        "sys.argv = sys.argv[1:]\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n"
    )
    executor = make(argv=[sys.executable, "-c", code, *SERVER_ARGV[1:]],
                    env={"PORT": "{port}", "SCRATCH": "{scratch}"})
    await executor.start()
    assert (executor.scratch / "env.txt").read_text() == str(executor.address[1])


def test_bwrap_argv_binds_only_scratch_writable() -> None:
    argv = bwrap_argv("/usr/bin/bwrap", ["srv", "--flag"], Path("/s/x"), Path("/s/x"))
    assert argv[0] == "/usr/bin/bwrap"
    assert argv[-3:] == ["--", "srv", "--flag"]
    assert "--unshare-net" not in argv and "--share-net" in argv
    binds = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--bind"]
    assert binds == ["/s/x"]
    assert argv[argv.index("--ro-bind") + 1 : argv.index("--ro-bind") + 3] == ["/", "/"]


async def test_sandbox_without_bwrap_names_it(
    make: Callable[..., ProcessExecutor], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(process_module, "find_bwrap", lambda: None)
    executor = make(sandbox=True)
    with pytest.raises(StartError, match="bwrap"):
        await executor.start()
    assert executor.pid is None


SANDBOXED = r"""
import http.server, json, pathlib, sys

port, scratch, outside = int(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3:]
results = {}
for target in outside + [str(scratch / "inside.txt")]:
    try:
        pathlib.Path(target).write_text("escaped")
        results[target] = "written"
    except OSError as exc:
        results[target] = type(exc).__name__
(scratch / "results.json").write_text(json.dumps(results))

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""


@pytest.mark.skipif(find_bwrap() is None, reason="bubblewrap (bwrap) is not installed")
async def test_sandboxed_executor_cannot_write_outside_its_scratch(
    make: Callable[..., ProcessExecutor], tmp_path: Path,
) -> None:
    beside = tmp_path / "beside.txt"  # under /tmp on the host: the sandbox sees a private /tmp
    in_root = Path(sys.prefix) / "endosec-escape.txt"  # on the read-only root
    executor = make(
        name="boxed",
        argv=[sys.executable, "-c", SANDBOXED, "{port}", "{scratch}", str(beside), str(in_root)],
        sandbox=True,
    )
    try:
        await executor.start()
    except StartError as exc:
        pytest.skip(f"bwrap is installed but cannot create a sandbox here: {exc}")
    assert await executor.health()
    results = json.loads((executor.scratch / "results.json").read_text())
    assert results[str(executor.scratch / "inside.txt")] == "written"
    assert results[str(in_root)] != "written"
    assert not beside.exists()
    assert not in_root.exists()
    leader = executor.pid
    assert leader is not None
    await executor.stop()
    assert not alive(leader)
    assert not process_module._group_alive(leader)
