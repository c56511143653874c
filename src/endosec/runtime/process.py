"""Run an executor as a local server process, optionally inside bubblewrap.

Every executor runs under a small supervisor (`endosec.runtime.supervise`) that leads its
process group and holds a lifeline to this process: whatever ends the gateway (or the agent),
a SIGKILL included, the supervisor stops the executor's whole group, so no executor outlives
what drives it. Each start is also recorded under ``scratch_root/run/``, so that a run killed
together with its supervisors leaves a trace: `reap_leftovers` finds and stops such groups.

Each executor gets a scratch directory (``scratch_root/name``) that is wiped and refilled
from its pristine template at every start, so a cleanse leaves nothing an attacker wrote.
The process runs in its own session and process group; stopping signals the whole group,
so helpers and grandchildren it spawned go with it. Output goes to
``scratch_root/logs/<name>.log``, outside the scratch directory, so it survives a cleanse
for forensics.

The address the gateway connects to must belong to the process group started here: a process
that grabbed the port (the executor's crashed server freed it, or never bound it) answers
health checks as well as the executor would. So a health check that passes is followed by an
owner check: the sockets listening where a connection to ``(host, port)`` lands (bound to that
address, else to the wildcard) are looked up in ``/proc/PID/net/tcp`` and ``tcp6`` through a
process of the executor, which reads the table of its own network namespace (a segment's
forwards the segment's address to ``host``), and each must be among the descriptors
(``socket:[INODE]``) of some process of the group. Usually the first process looked at holds
it, so the check reads a few small files. `health` is False otherwise; a start whose port
answers from a socket held elsewhere fails with a `StartError` naming the holder. Where
``/proc`` cannot tell, the check fails closed.

`ProcessExecutor.measure` measures what the executor runs (`endosec.attest.measure`): the
processes of its group but the supervisor and bubblewrap, which are endosec's machinery around
the executor, the same for every executor, and not what the executor is built from.

Example::

    spec = ExecutorSpec(name="nginx-a", argv=["nginx", "-p", "{scratch}", "-g", "..."],
                        scratch_root=Path("/var/lib/endosec"), template=Path("images/nginx"))
    executor = ProcessExecutor(spec)
    await executor.start()      # returns once GET /health answers 2xx
    host, port = executor.address
    await executor.cleanse()    # stop, wipe, restore the template, start
    await executor.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from endosec.attest.measure import Measurement, take
from endosec.core.behaviour import ALLOWED_PATHS, Sample
from endosec.runtime.base import (
    CleanseError,
    HealthError,
    HealthProbe,
    RuntimeDriverError,
    StartError,
)
from endosec.runtime.opens import Opens
from endosec.runtime.sandbox import bwrap_argv, find_bwrap, needed_paths
from endosec.runtime.segment import Segment, SegmentError, remove_namespace, sweep
from endosec.runtime.wire import WireError, exchange

__all__ = ["ExecutorSpec", "ProcessExecutor", "free_port", "reap_leftovers"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_LOG_DIR = "logs"
_RUN_DIR = "run"
_SUPERVISE = Path(__file__).with_name("supervise.py")
_BIND_RETRIES = 3  # spawns tried when an allocated port turns out to be taken
_IN_USE = re.compile(rb"address already in use|EADDRINUSE", re.IGNORECASE)
_POLL = 0.05  # seconds between health and exit polls
_KILL_GRACE = 2.0  # seconds allowed for SIGKILL to take effect
_TAIL_BYTES = 2000


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutorSpec:
    """How to run one executor as a local process.

    **Parameters:**

    * **name** - unique within the pool; also the scratch directory's name, so letters,
      digits, ``_ . -`` only, not starting with ``.``, and not ``logs``.
    * **argv** - the command line. ``{port}``, ``{host}``, ``{scratch}`` and ``{name}`` are replaced
      (plain text replacement, so other braces, as in ``python -c`` code, are left alone).
    * **scratch_root** - the directory holding every executor's scratch directory and logs.
    * **cwd** - working directory; None means the scratch directory.
    * **env** - merged over the parent's environment; values get the same placeholders.
    * **port** - fixed port, or None to allocate a free loopback port at each start.
    * **host** - the address the executor listens on and the gateway connects to.
    * **health_path** - ``GET`` target of the health check; healthy means a 2xx status.
    * **health_probe** - a protocol's own check, used instead of the ``GET`` when set.
    * **health_timeout** - seconds allowed for one health check.
    * **start_timeout** - seconds from spawn to healthy before the start fails.
    * **stop_timeout** - seconds between SIGTERM and SIGKILL when stopping.
    * **template** - pristine directory copied into the scratch directory at every start.
    * **sandbox** - run under bubblewrap (see `endosec.runtime.sandbox`); requires ``bwrap``.
    * **segmented** - run in a network namespace of its own, reached at the segment's address
      and with no way out (see `endosec.runtime.segment`); needs root, ``ip`` and ``nft``,
      and an IPv4 loopback ``host``.
    """

    name: str
    argv: Sequence[str]
    scratch_root: Path
    cwd: Path | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    port: int | None = None
    host: str = "127.0.0.1"
    health_path: str = "/health"
    health_probe: HealthProbe | None = None
    health_timeout: float = 2.0
    start_timeout: float = 15.0
    stop_timeout: float = 3.0
    template: Path | None = None
    sandbox: bool = False
    segmented: bool = False

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name) or self.name == _LOG_DIR:
            raise ValueError(
                f"executor name {self.name!r} must match {_NAME.pattern} and not be {_LOG_DIR!r}"
            )
        if self.name == _RUN_DIR:
            raise ValueError(f"executor name {self.name!r} is reserved")
        object.__setattr__(self, "argv", tuple(self.argv))
        object.__setattr__(self, "env", dict(self.env))
        if not self.argv:
            raise ValueError(f"executor {self.name!r}: argv must not be empty")
        if self.port is not None and not 0 < self.port < 65536:
            raise ValueError(f"executor {self.name!r}: port {self.port} is not in 1..65535")
        if not self.health_path.startswith("/"):
            raise ValueError(f"executor {self.name!r}: health_path must start with '/'")
        if self.segmented and not self.host.startswith("127."):
            raise ValueError(f"executor {self.name!r}: a segmented executor listens on an IPv4 "
                             f"loopback address, not {self.host!r}")
        for key in ("health_timeout", "start_timeout", "stop_timeout"):
            if not getattr(self, key) > 0:
                raise ValueError(f"executor {self.name!r}: {key} must be positive")


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free on ``host`` a moment ago (bind to port 0, read it, close)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class ProcessExecutor:
    """A `RuntimeDriver` for one executor running as a local process group."""

    def __init__(self, spec: ExecutorSpec, opens: Opens | None = None) -> None:
        self.spec = spec
        self._opens = opens  # what sees the files it opens (None: nothing does)
        root = spec.scratch_root.resolve()
        self.scratch = root / spec.name
        self.log_path = root / _LOG_DIR / f"{spec.name}.log"
        self.record_path = root / _RUN_DIR / f"{spec.name}.json"
        self._port = spec.port
        self._proc: subprocess.Popen[bytes] | None = None
        self._pgid: int | None = None  # set while the group may still hold processes
        self._segment: Segment | None = None  # its network namespace, while it runs
        self._started_at: float | None = None  # when the current run was spawned
        self._run: tuple[tuple[str, ...], Path] | None = None  # its argv and cwd, expanded

    def __repr__(self) -> str:
        return f"ProcessExecutor({self.spec.name!r}, pid={self.pid}, running={self.running})"

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)``: the segment's address when segmented. An allocated port (and a
        segment's address) changes at every start; the port is 0 (nothing listens there) until
        the first start, so the property never raises."""
        host = self._segment.address if self._segment is not None else self.spec.host
        return (host, self._port or 0)

    @property
    def segment(self) -> Segment | None:
        """Its network namespace while it runs segmented."""
        return self._segment

    @property
    def running(self) -> bool:
        """Whether the group leader is alive. False after a stop or a crash."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The group leader's pid (``bwrap``'s when sandboxed), None before the first start."""
        return None if self._proc is None else self._proc.pid

    @property
    def returncode(self) -> int | None:
        """The leader's exit status (negative: killed by that signal); None while running."""
        return None if self._proc is None else self._proc.poll()

    async def start(self) -> None:
        """Wipe the scratch directory, restore the template, spawn, and wait until healthy.

        When the port was allocated here and the executor's log says the address was in
        use, the start is retried on a fresh port. Raises `StartError` with the log's tail.
        """
        if self.running:
            raise StartError(f"{self.name}: already running (pid {self.pid})")
        await self.stop()  # reap leftovers of a crashed run before reusing the scratch dir
        bwrap = find_bwrap() if self.spec.sandbox else None
        if self.spec.sandbox and bwrap is None:
            raise StartError(f"{self.name}: sandbox requested but bwrap is not on PATH")
        for attempt in range(1, _BIND_RETRIES + 1):
            allocated = self.spec.port is None
            port = free_port(self.spec.host) if self.spec.port is None else self.spec.port
            self._port = port
            if self.spec.segmented:
                try:
                    self._segment = await asyncio.to_thread(Segment.create, self.spec.host,
                                                            port)
                except SegmentError as exc:
                    raise StartError(f"{self.name}: cannot make its network segment: "
                                     f"{exc}") from exc
            self._prepare_scratch()
            offset = self._spawn(bwrap)
            try:
                await self.wait_healthy(self.spec.start_timeout)
            except HealthError as exc:
                await self.stop()
                tail = self._log_tail(offset)
                if allocated and attempt < _BIND_RETRIES and _IN_USE.search(tail):
                    continue
                text = tail.decode(errors="replace")
                raise StartError(f"{exc}; log tail ({self.log_path}):\n{text}") from exc
            except BaseException:
                self._kill_now()  # cancelled mid-start: leave nothing behind
                raise
            self._started_at = time.monotonic()
            return

    async def stop(self) -> None:
        """SIGTERM the whole group, wait up to ``stop_timeout``, then SIGKILL it.

        Also reaps what a crashed leader left behind. Idempotent.
        """
        proc, pgid = self._proc, self._pgid
        if proc is None or pgid is None:
            await self._unsegment()
            return
        _signal_group(pgid, signal.SIGTERM)
        if not await _wait_gone(proc, pgid, self.spec.stop_timeout):
            _signal_group(pgid, signal.SIGKILL)
            if not await _wait_gone(proc, pgid, _KILL_GRACE):
                raise RuntimeDriverError(f"{self.name}: process group {pgid} survived SIGKILL")
        self._forget(pgid)
        await self._unsegment()
        self.record_path.unlink(missing_ok=True)
        _cut(proc)

    async def _unsegment(self) -> None:
        segment, self._segment = self._segment, None
        if segment is not None:
            await asyncio.to_thread(segment.remove)

    def _forget(self, pgid: int) -> None:
        self._pgid = None
        if self._opens is not None:
            self._opens.forget(pgid)

    async def sample(self) -> Sample | None:
        """What its process group does now (None when it does not run): the programs its
        processes run, their CPU time, memory and open descriptors, how many they are, the
        files they opened since the last sample
        (watched: `endosec.runtime.opens`) and, segmented, the packets refused on their way
        out since this start."""
        pgid, segment, started = self._pgid, self._segment, self._started_at
        if pgid is None or started is None or not self.running:
            return None
        refused = None
        if segment is not None:
            try:
                refused = await segment.refused()
            except SegmentError:
                return None  # removed under our feet by a stop
        programs, cpu, rss, fds, processes = _usage(pgid)
        opened, unlisted = self._opens.take(pgid) if self._opens is not None else (None, 0)
        return Sample(self.name, started, refused, programs, time.monotonic(), cpu, rss,
                      opened, unlisted, fds=fds, processes=processes)

    async def measure(self) -> Measurement | None:
        """What its processes run and what it is started from (`endosec.attest.measure`);
        None when it does not run (or stopped while it was measured)."""
        pgid, run = self._pgid, self._run
        if pgid is None or run is None or not self.running:
            return None
        argv, cwd = run

        def measured() -> Measurement:
            pids = _executor_pids(pgid, self.spec.sandbox)
            return take(self.spec, pids, argv=argv, cwd=cwd, scratch=self.scratch)

        try:
            measurement = await asyncio.to_thread(measured)
        except OSError:
            return None
        return measurement if self.running and self._pgid == pgid else None

    async def health(self) -> bool:
        """True when the executor answers its health check (`_answers`) from a listening
        socket a process of its group holds (see the module's docstring)."""
        return await self._answers() and self._foreign() == set()

    def impostor(self) -> str | None:
        foreign = self._foreign() if self.running else None
        return _holder(foreign) if foreign else None

    def _foreign(self) -> set[str] | None:
        """`_unheld` where connections land: ``(host, port)`` in its network namespace (a
        segment forwards its own address there)."""
        pgid, port = self._pgid, self._port
        return None if pgid is None or port is None else _unheld(pgid, self.spec.host, port)

    async def _answers(self) -> bool:
        """One ``GET health_path`` over a fresh HTTP/1.1 connection; True on a 2xx status.

        With a ``health_probe``, its verdict instead, within the same timeout."""
        if not self.running or self._port is None:
            return False
        try:
            async with asyncio.timeout(self.spec.health_timeout):
                host, port = self.address
                if self.spec.health_probe is not None:
                    return await self.spec.health_probe(host, port)
                reply = await exchange(host, port, "GET", self.spec.health_path)
        except (WireError, TimeoutError):
            return False
        return 200 <= reply.status < 300

    async def wait_healthy(self, timeout: float) -> None:
        """Poll the health check until it passes; `HealthError` on timeout, if the process
        exits, or if what answers is not the executor (a socket its group does not hold)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not await self._answers():
            if not self.running:
                raise HealthError(
                    f"{self.name}: exited with status {self.returncode} before becoming healthy"
                )
            if loop.time() >= deadline:
                raise HealthError(
                    f"{self.name}: not healthy at {self.spec.health_path} within {timeout} s"
                )
            await asyncio.sleep(_POLL)
        foreign = self._foreign()
        if foreign != set():
            host, port = self.address
            raise HealthError(f"{self.name}: {host}:{port} answers, but not from this "
                              f"executor: {_holder(foreign)}")

    async def cleanse(self) -> None:
        """Stop, wipe the scratch directory, restore the template, start and wait healthy."""
        try:
            await self.stop()
            await self.start()
        except RuntimeDriverError as exc:
            raise CleanseError(f"{self.name}: cleanse failed: {exc}") from exc

    def _prepare_scratch(self) -> None:
        """Replace the scratch directory with a fresh copy of the template."""
        try:
            if self.scratch.is_symlink() or self.scratch.is_file():
                self.scratch.unlink()  # never follow a link the executor may have planted
            elif self.scratch.exists():
                shutil.rmtree(self.scratch)
            if self.spec.template is None:
                self.scratch.mkdir(parents=True)
            else:
                shutil.copytree(self.spec.template, self.scratch, symlinks=True)
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StartError(f"{self.name}: cannot prepare {self.scratch}: {exc}") from exc

    def _spawn(self, bwrap: str | None) -> int:
        """Start the process group; return the log offset where this run's output begins."""
        argv = [self._expand(arg) for arg in self.spec.argv]
        cwd = self.spec.cwd.resolve() if self.spec.cwd is not None else self.scratch
        own = self._own(argv, cwd)
        self._run = (tuple(argv), cwd)
        if bwrap is not None:
            argv = bwrap_argv(bwrap, argv, self.scratch, cwd)
        if self._segment is not None:
            argv = [*self._segment.enter(), *argv]
        env = {**os.environ, **{k: self._expand(v) for k, v in self.spec.env.items()}}
        program = argv[0] if os.sep not in argv[0] else str(cwd / argv[0])
        if shutil.which(program, path=env.get("PATH", os.defpath)) is None:
            missing = FileNotFoundError(errno.ENOENT, "not found or not executable", argv[0])
            raise StartError(f"{self.name}: cannot run {argv[0]!r}: {missing}") from missing
        try:
            with self.log_path.open("ab") as log:
                log.write(f"--- endosec: starting {self.name}: {argv}\n".encode())
                log.flush()
                offset = log.tell()
                self._proc = subprocess.Popen(
                    [sys.executable, "-I", str(_SUPERVISE), *argv], cwd=cwd, env=env,
                    stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        except (OSError, subprocess.SubprocessError) as exc:
            raise StartError(f"{self.name}: cannot run {argv[0]!r}: {exc}") from exc
        self._pgid = self._proc.pid  # a new session's leader leads its own process group
        if self._opens is not None:
            self._opens.watch(self._pgid, (*own, *ALLOWED_PATHS))
        self._started_at = None  # until it is healthy: programs may still be exec'ing
        _record(self.record_path, self._proc.pid,
                self._segment.namespace if self._segment is not None else None)
        return offset

    def _own(self, argv: Sequence[str], cwd: Path) -> list[str]:
        """The trees the executor may read at will: its scratch directory, its template, and
        the directories of what its command needs (`needed_paths`)."""
        trees = [self.scratch, *([self.spec.template.resolve()] if self.spec.template else [])]
        trees += [p if p.is_dir() else p.parent for p in needed_paths(argv, cwd)]
        return [f"{str(t).rstrip('/')}/" for t in trees if t.is_absolute() and t != t.parent]

    def _expand(self, text: str) -> str:
        for key, value in (("{port}", str(self._port)), ("{host}", self.spec.host),
                           ("{scratch}", str(self.scratch)), ("{name}", self.name)):
            text = text.replace(key, value)
        return text

    def _log_tail(self, offset: int) -> bytes:
        try:
            with self.log_path.open("rb") as log:
                log.seek(max(offset, log.seek(0, os.SEEK_END) - _TAIL_BYTES))
                return log.read()
        except OSError as exc:
            return f"(log unreadable: {exc})".encode()

    def _kill_now(self) -> None:
        if self._pgid is not None:
            _signal_group(self._pgid, signal.SIGKILL)
        if self._proc is not None:
            self._proc.wait()
            _cut(self._proc)
        if self._segment is not None:
            self._segment.remove()
            self._segment = None


def _cut(proc: subprocess.Popen[bytes]) -> None:
    """Close the supervisor's lifeline once it is gone (it was never written to)."""
    if proc.stdin is not None:
        proc.stdin.close()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass  # the group is already empty
    except PermissionError as exc:
        raise RuntimeDriverError(f"cannot signal process group {pgid}: {exc}") from exc


async def _wait_gone(proc: subprocess.Popen[bytes], pgid: int, timeout: float) -> bool:
    """Wait until the leader is reaped and no live process remains in the group."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while proc.poll() is None or _group_alive(pgid):
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(_POLL / 2)
    return True


def _group_alive(pgid: int) -> bool:
    """Whether a non-zombie process is in the group.

    Orphaned grandchildren are reaped by init, which may be slow or absent in a container;
    a zombie holds nothing but its pid, so it does not count. Uses ``/proc`` when present.
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited while we looked
        # After the command name's closing paren: state, ppid, pgrp, ...
        state, _ppid, pgrp = stat[stat.rfind(")") + 2 :].split()[:3]
        if int(pgrp) == pgid and state != "Z":
            return True
    return False


# -- what a run leaves behind ---------------------------------------------------------------

def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _stat(pid: int) -> list[str] | None:
    """``/proc/PID/stat`` after the command name: state, ppid, pgrp, session, ..., or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2:].split()


def _started(pid: int) -> str | None:
    fields = _stat(pid)
    return None if fields is None else fields[19]  # starttime, in clock ticks since boot


def _record(path: Path, pid: int, namespace: str | None) -> None:
    """Note a started supervisor: its pid, when it started, in which boot, and its network
    namespace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": pid, "started": _started(pid), "boot": _boot_id(),
                                **({"namespace": namespace} if namespace else {})}))


_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _usage(pgid: int) -> tuple[frozenset[str], float, int, int, int]:
    """What the live processes of group ``pgid`` run, the CPU seconds they used, their
    resident bytes and open descriptors, and how many they are."""
    programs, ticks, pages, fds = set(), 0, 0, 0
    members = _members(pgid)
    for pid, fields in members.items():
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
        pages += int(fields[21])  # rss
        with contextlib.suppress(OSError):
            programs.add(os.readlink(f"/proc/{pid}/exe"))
            fds += len(os.listdir(f"/proc/{pid}/fd"))
    return frozenset(programs), ticks / _TICK, pages * _PAGE, fds, len(members)


def _members(pgid: int) -> dict[int, list[str]]:
    """The live processes of group ``pgid``, with their `_stat` fields."""
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and fields[0] != "Z" and int(fields[2]) == pgid:
                out[int(entry.name)] = fields
    return out


def _executor_pids(pgid: int, sandboxed: bool) -> list[int]:
    """The executor's own live processes in group ``pgid``: not the supervisor (the leader)
    nor, sandboxed, bubblewrap's (they run its program)."""
    bwrap = find_bwrap() if sandboxed else None
    skip = os.path.realpath(bwrap) if bwrap is not None else None
    return [pid for pid in _members(pgid) if pid != pgid
            and (skip is None or _program(pid) != skip)]


def _program(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None


# -- who holds the listening socket --------------------------------------------------------

_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's st column
_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _unheld(pgid: int, host: str, port: int) -> set[str] | None:
    """The sockets (``socket:[INODE]``) that take connections to ``(host, port)`` and that no
    process of group ``pgid`` holds: empty when the group holds them all; None when none
    listens there in the executor's network namespace (or ``/proc`` cannot say)."""
    # The supervisor's child lives in the executor's namespace; before the child is there,
    # the supervisor (in that namespace unless segmented, and a segment answers only then).
    inside = _children(pgid)
    sockets = _listening(inside[0] if inside else pgid, host, port)
    if not sockets:
        return None
    missing = set(sockets)
    while inside and missing:  # the supervisor's descendants first: cheap, and usually enough
        pid = inside.pop(0)
        if _group_of(pid) != pgid:
            continue  # it left the group (a session of its own): cleansing would not stop it
        missing -= _holds(pid, missing)
        inside += _children(pid)
    for pid in _members(pgid) if missing else ():  # then the group's other processes
        missing -= _holds(pid, missing)
    return missing


def _group_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None  # gone


def _children(pid: int) -> list[int]:
    """The children its main thread forked (those of other threads are not listed here)."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _listening(pid: int, host: str, port: int) -> set[str]:
    """The listening sockets where a connection to ``(host, port)`` lands, as the network
    namespace of ``pid`` has them: those bound to that address, else the wildcard ones (a
    host name matches any address)."""
    try:
        wanted: _IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        wanted = None
    best, found = 0, set[str]()
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue  # gone, or no IPv6
        for line in lines:
            fields = line.split()  # sl local_address rem_address st ... uid timeout inode
            address, _, bound_port = fields[1].partition(":")
            if fields[3] != _LISTEN or int(bound_port, 16) != port:
                continue
            rank = _rank(_address(address), wanted)
            if rank > best:
                best, found = rank, set()
            if rank == best and rank:
                found.add(f"socket:[{fields[9]}]")
    return found


def _address(text: str) -> _IPAddress:
    """An address as ``/proc/net/tcp`` prints it: 32-bit words in host byte order."""
    words = [int(text[i:i + 8], 16) for i in range(0, len(text), 8)]
    return ipaddress.ip_address(struct.pack(f"={len(words)}I", *words))


def _rank(bound: _IPAddress, wanted: _IPAddress | None) -> int:
    """2: bound to the address connected to; 1: to a wildcard that takes it; 0: neither."""
    if bound.is_unspecified:
        return 1 if wanted is None or bound.version >= wanted.version else 0
    mapped = bound.ipv4_mapped if isinstance(bound, ipaddress.IPv6Address) else None
    return 2 if wanted is None or wanted in (bound, mapped) else 0


def _holds(pid: int, sockets: set[str]) -> set[str]:
    """Which of ``sockets`` process ``pid`` has among its descriptors."""
    held = set[str]()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return held
    for fd in fds:
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if link in sockets:
                held.add(link)
    return held


def _holder(sockets: set[str] | None) -> str:
    """Why what answers is not the executor, naming who holds one of ``sockets`` (looks at
    every process: only after a check failed)."""
    if not sockets:
        return "nothing listens there in its network namespace"
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _holds(int(entry.name), sockets):
            with contextlib.suppress(OSError):
                return (f"the listening socket is held by pid {entry.name} "
                        f"({(entry / 'comm').read_text().strip()})")
            return f"the listening socket is held by pid {entry.name}"
    return "the listening socket is held by a process out of sight"


def reap_leftovers(scratch_root: Path) -> list[str]:
    """Stop the executor process groups an earlier run left (it was killed with its
    supervisors); what was stopped, in words. A group is taken for ours only if its leader is
    the recorded one (same start time, same boot) or, the leader gone, if the group still
    exists: Linux does not reuse a pid while a process group of that id lives."""
    stopped = []
    for path in sorted((scratch_root / _RUN_DIR).glob("*.json")):
        try:
            record = json.loads(path.read_text())
            pid = int(record["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            path.unlink(missing_ok=True)
            continue
        started = _started(pid)
        ours = record.get("boot") == _boot_id() and (
            started == record.get("started") if started is not None else True)
        members = _members(pid) if ours else {}
        if members:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            stopped.append(f"{path.stem}: process group {pid} ({len(members)} processes)")
        namespace = record.get("namespace")
        if isinstance(namespace, str) and namespace.startswith("endosec-"):
            remove_namespace(namespace)
            stopped.append(f"{path.stem}: network namespace {namespace}")
        path.unlink(missing_ok=True)
    stopped += [f"network namespace {name} (its maker is gone)" for name in sweep()]
    return stopped
