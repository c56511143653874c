"""An executor's supervisor: it dies with its parent, and takes the executor with it.

    python -I supervise.py ARGV...

The process driver runs every executor through this script, in a new session of which the
script is the leader. It holds a lifeline, its standard input, which the parent keeps open as
long as it lives: when the parent exits for any reason (a SIGKILL or a crash included, since
the kernel closes a dead process's descriptors) the line reads end-of-file, and the script
stops its whole process group (SIGTERM, then SIGKILL) before exiting, and removes the
executor's network segment when it ran in one (``ip netns exec endosec-...``). The kernel's
parent-death signal is set too, as a second line. Otherwise it waits for the executor and
ends as the executor ended (the same exit status, or killed by the same signal), so the driver
sees a crash as a crash.

It imports nothing of endosec: it starts fast and stays small.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import selectors
import signal
import sys
import time

_PR_SET_PDEATHSIG = 1
_GRACE = 3.0  # seconds between SIGTERM and SIGKILL when the parent is gone


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # the lifeline alone still works


def _stop_group(child: int, argv: list[str]) -> None:
    """SIGTERM the group (this process ignores it), wait for the executor, remove its network
    segment if it ran in one, then SIGKILL."""
    os.killpg(0, signal.SIGTERM)
    deadline = time.monotonic() + _GRACE
    while time.monotonic() < deadline:
        pid, _ = os.waitpid(child, os.WNOHANG)
        if pid:
            break
        time.sleep(0.05)
    if argv[:3] == ["ip", "netns", "exec"] and argv[3].startswith("endosec-"):
        with contextlib.suppress(OSError):  # nobody else is left to remove it
            os.waitpid(os.posix_spawnp("ip", ["ip", "netns", "del", argv[3]], os.environ), 0)
    os.killpg(0, signal.SIGKILL)  # what is left of the group, this process included


def _end_as(code: int) -> int:
    """Exit with the executor's status, or die of the signal that killed it."""
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        return 128 - code  # a signal that does not kill by default
    return code


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: supervise.py ARGV...", file=sys.stderr)
        return 2
    # The driver's SIGTERM to the group reaches the executor directly; this process waits for
    # the executor to exit rather than dying first.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_parent()
    if os.getppid() == 1:
        return 1  # the parent died before the signal was set: nobody supervises
    try:
        child = os.posix_spawnp(argv[0], argv, os.environ,
                                setsigdef=(signal.SIGTERM,), file_actions=[
                                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)])
    except OSError as exc:
        print(f"endosec: cannot run {argv[0]!r}: {exc}", file=sys.stderr)
        return 127
    pidfd = os.pidfd_open(child)
    with selectors.DefaultSelector() as sel:
        sel.register(0, selectors.EVENT_READ)
        sel.register(pidfd, selectors.EVENT_READ)
        while True:
            for key, _ in sel.select():
                if key.fd == pidfd:
                    _, status = os.waitpid(child, 0)
                    return _end_as(os.waitstatus_to_exitcode(status))
                if not os.read(0, 4096):  # the parent is gone
                    _stop_group(child, argv)
                    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
