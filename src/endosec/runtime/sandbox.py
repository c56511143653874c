"""Wrap an executor's command line in bubblewrap (``bwrap``).

What the sandbox gives an executor:

- the whole filesystem read-only (``--ro-bind / /``), a private empty ``/tmp``, a fresh
  ``/proc`` and a minimal ``/dev``; only its scratch directory is bound read-write;
- its own user, IPC, PID, UTS and cgroup namespaces (``--unshare-all``) and no capabilities
  (``--cap-drop ALL``), so even a root executor cannot remount the filesystem writable;
- death with its parent (``--die-with-parent``): if the driver dies, the sandbox's PID
  namespace dies with it, taking every process inside, even ones that left the process group.

What it does not give: network isolation. The executor shares the host's network namespace
(``--share-net``), because a new one would hold only its own loopback, unreachable from the
gateway. "Loopback only" therefore rests on the executor binding 127.0.0.1, which the driver's
``{port}`` and host settings arrange but cannot enforce; the executor can still open outbound
connections. ``--new-session`` is not used: the driver already starts the sandbox in a new
session without a controlling terminal, and keeping the process group lets the driver signal
every process inside for a graceful stop.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

__all__ = ["bwrap_argv", "find_bwrap"]


def find_bwrap() -> str | None:
    """The path of ``bwrap`` on ``PATH``, or None when it is not installed."""
    return shutil.which("bwrap")


def bwrap_argv(bwrap: str, argv: Sequence[str], scratch: Path, cwd: Path) -> list[str]:
    """The command line that runs ``argv`` under ``bwrap`` with only ``scratch`` writable.

    ``scratch`` and ``cwd`` must be absolute. ``cwd`` must exist inside the sandbox: the
    scratch directory or a path outside ``/tmp``.
    """
    return [
        bwrap,
        "--ro-bind", "/", "/",
        "--tmpfs", "/tmp",
        "--bind", str(scratch), str(scratch),
        "--proc", "/proc",
        "--dev", "/dev",
        "--unshare-all",
        "--share-net",
        "--cap-drop", "ALL",
        "--die-with-parent",
        "--chdir", str(cwd),
        "--",
        *argv,
    ]
