"""Wrap an executor's command line in bubblewrap (``bwrap``).

What the sandbox gives an executor:

- the whole filesystem read-only (``--ro-bind / /``), a private empty ``/tmp``, a fresh
  ``/proc`` and a minimal ``/dev``; only its scratch directory is bound read-write;
- its own user, IPC, PID, UTS and cgroup namespaces (``--unshare-all``) and no capabilities
  (``--cap-drop ALL``), so even a root executor cannot remount the filesystem writable;
- death with its parent (``--die-with-parent``): if the driver dies, the sandbox's PID
  namespace dies with it, taking every process inside, even ones that left the process group.

What it does not give: network isolation. The executor keeps the network namespace it was
started in (``--share-net``), because a new one would hold only its own loopback, unreachable
from the gateway; that namespace is its segment (`endosec.runtime.segment`) when it runs
segmented, else the host's. ``--new-session`` is not used: the driver already starts the
sandbox in a new session without a controlling terminal, and keeping the process group lets
the driver signal every process inside for a graceful stop.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

__all__ = ["bwrap_argv", "find_bwrap", "needed_paths"]


def find_bwrap() -> str | None:
    """The path of ``bwrap`` on ``PATH``, or None when it is not installed."""
    return shutil.which("bwrap")


def needed_paths(argv: Sequence[str], cwd: Path) -> list[Path]:
    """What an executor's command needs besides its scratch directory: its working directory,
    the files its command line names, and the installation its program lives in (a
    virtualenv's ``bin/python`` needs the virtualenv beside it)."""
    wanted = [cwd, *(Path(a) for a in argv if a.startswith("/"))]
    program = shutil.which(argv[0]) if argv else None
    if program is not None:
        wanted.append(Path(program).parent.parent)
    return wanted


def _under_tmp(argv: Sequence[str], scratch: Path, cwd: Path) -> list[Path]:
    """The `needed_paths` that the private /tmp would hide."""
    tmp = Path("/tmp")
    keep: list[Path] = []
    for path in needed_paths(argv, cwd):
        if path.is_relative_to(tmp) and path != tmp and not path.is_relative_to(scratch) \
                and path.exists() and path not in keep:
            keep.append(path)
    return keep


def bwrap_argv(bwrap: str, argv: Sequence[str], scratch: Path, cwd: Path) -> list[str]:
    """The command line that runs ``argv`` under ``bwrap`` with only ``scratch`` writable.

    ``scratch`` and ``cwd`` must be absolute. Anything under ``/tmp`` that the command needs
    (see `_under_tmp`) is bound back read-only over the private ``/tmp``.
    """
    rebind = [arg for path in _under_tmp(argv, scratch, cwd)
              for arg in ("--ro-bind", str(path), str(path))]
    return [
        bwrap,
        "--ro-bind", "/", "/",
        "--tmpfs", "/tmp",
        *rebind,
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
