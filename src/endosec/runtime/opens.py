"""The files executors open, seen by the kernel: fanotify.

One `Opens` per driver process (the gateway, or an agent) marks every real filesystem of the
host for ``FAN_OPEN`` and reads the events on the event loop. Each event names the process
that opened a file and hands over a descriptor to it; the event is kept only when that
process belongs to a watched executor's process group, as the file's path, and only when the
path is not one the driver was told to skip: the executor's own directories (its scratch
directory, working directory, and the installation its program lives in) and what every
executor may read (`endosec.core.behaviour.ALLOWED_PATHS`). The behaviour judge decides the
rest (`endosec.core.behaviour`).

Why fanotify: it sees every successful ``open`` of every process, children and sandboxed ones
included (bubblewrap's read-only view of ``/`` is the same filesystem), without tracing the
executor or changing how it runs; the cost lands on the opener as one queued event and on the
driver as one read, one ``getpgid`` and, for watched groups, one ``readlink`` per open. It
needs ``CAP_SYS_ADMIN`` (root); elsewhere nothing is watched and the rule does not apply.
A private ``/tmp`` (the sandbox's) is a filesystem of its own, unmarked: it is the executor's.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from endosec.core.behaviour import PathSet

__all__ = ["Opens", "opens_possible", "watch_opens"]

_FAN_CLASS_NOTIF, _FAN_CLOEXEC, _FAN_NONBLOCK = 0x0, 0x1, 0x2
_FAN_MARK_ADD, _FAN_MARK_FILESYSTEM = 0x1, 0x100
_FAN_OPEN, _FAN_Q_OVERFLOW = 0x20, 0x4000
_AT_FDCWD = -100
_EVENT = struct.Struct("IBBHQii")  # struct fanotify_event_metadata
_READ = 1 << 14  # about 680 events: one read per turn of the loop, so that a host busy
# opening files cannot starve it (what the queue cannot hold is dropped and counted: `lost`)
#: Distinct paths kept per executor between two samples; more are counted, not kept.
MAX_PATHS = 256
#: Filesystems with no files of anyone's (kernel views and the like): not marked.
_PSEUDO = frozenset({
    "autofs", "binfmt_misc", "bpf", "cgroup", "cgroup2", "configfs", "debugfs", "devpts",
    "devtmpfs", "efivarfs", "fusectl", "hugetlbfs", "mqueue", "nsfs", "proc", "pstore",
    "rpc_pipefs", "securityfs", "sysfs", "tracefs",
})


def opens_possible() -> str | None:
    """Why the files executors open cannot be watched here (None: they can)."""
    if os.geteuid() != 0:
        return "watching the files executors open (fanotify) needs root"
    if not hasattr(ctypes.CDLL(None), "fanotify_init"):
        return "this C library has no fanotify"
    return None


def watch_opens() -> tuple[Opens | None, str | None]:
    """An `Opens` if one can be had here, else None and why not."""
    reason = opens_possible()
    if reason is not None:
        return None, reason
    try:
        return Opens(), None
    except OSError as exc:
        return None, f"cannot watch the files executors open: {exc}"


@dataclass(slots=True)
class _Group:
    skip: PathSet
    paths: set[str] = field(default_factory=set)
    more: int = 0  # distinct paths beyond MAX_PATHS since the last take


class Opens:
    """A fanotify group reporting ``open`` on every real filesystem, read on the loop.

    Creating one raises `OSError` when the kernel refuses (see `opens_possible`)."""

    __slots__ = ("_fd", "_groups", "_loop", "lost")

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64,
                                       ctypes.c_int, ctypes.c_char_p]
        fd = libc.fanotify_init(_FAN_CLASS_NOTIF | _FAN_CLOEXEC | _FAN_NONBLOCK,
                                os.O_RDONLY | os.O_LARGEFILE | os.O_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"fanotify_init: {os.strerror(err)}")
        marked = 0
        for mount in _filesystems():
            if libc.fanotify_mark(fd, _FAN_MARK_ADD | _FAN_MARK_FILESYSTEM, _FAN_OPEN,
                                  _AT_FDCWD, mount.encode()) == 0:
                marked += 1
        if not marked:
            os.close(fd)
            raise OSError("fanotify: no filesystem could be marked")
        self._fd = fd
        self._loop: asyncio.AbstractEventLoop | None = None  # reading on it once watching
        self._groups: dict[int, _Group] = {}
        self.lost = 0  # times the kernel's queue overflowed (events were dropped)

    def watch(self, pgid: int, skip: Iterable[str]) -> None:
        """Keep what process group ``pgid`` opens, but not what ``skip`` holds (paths ending
        in "/" hold a tree). Called on the event loop that is to read the events."""
        if self._loop is None and self._fd >= 0:
            self._loop = asyncio.get_running_loop()
            self._loop.add_reader(self._fd, self._drain)
        self._groups[pgid] = _Group(PathSet(skip))

    def forget(self, pgid: int) -> None:
        self._groups.pop(pgid, None)

    def take(self, pgid: int) -> tuple[frozenset[str], int]:
        """The paths group ``pgid`` opened since the last take, and how many more there were."""
        self._drain()  # what the kernel queued so far belongs to this sample
        group = self._groups.get(pgid)
        if group is None:
            return frozenset(), 0
        out, more = frozenset(group.paths), group.more
        group.paths, group.more = set(), 0
        return out, more

    def close(self) -> None:
        if self._fd >= 0:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1

    def _drain(self) -> None:
        """Read one batch of what the kernel queued (the loop calls again while more waits)."""
        if self._fd < 0:
            return
        try:
            data = os.read(self._fd, _READ)
        except BlockingIOError:
            return
        except OSError:
            self.close()
            return
        offset = 0
        while offset + _EVENT.size <= len(data):
            length, _, _, _, mask, fd, pid = _EVENT.unpack_from(data, offset)
            offset += max(length, _EVENT.size)
            if mask & _FAN_Q_OVERFLOW:
                self.lost += 1
            if fd >= 0:
                self._note(fd, pid)

    def _note(self, fd: int, pid: int) -> None:
        try:
            group = self._groups.get(os.getpgid(pid)) if self._groups else None
            if group is not None:
                path = os.readlink(f"/proc/self/fd/{fd}")
                if path not in group.paths and path not in group.skip:
                    if len(group.paths) < MAX_PATHS:
                        group.paths.add(path)
                    else:
                        group.more += 1
        except OSError:
            pass  # the opener is gone already: its group no longer runs it
        finally:
            os.close(fd)


def _filesystems() -> list[str]:
    """A mount point of each real filesystem (one per device)."""
    seen: set[int] = set()
    out = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            fields = line.split()
            dash = fields.index("-")
            mount = fields[4].replace("\\040", " ")
            if fields[dash + 1] in _PSEUDO:
                continue
            with contextlib.suppress(OSError):
                dev = os.stat(mount).st_dev
                if dev not in seen:
                    seen.add(dev)
                    out.append(mount)
    return out
