"""Hosts for tests: network namespaces joined to this one by veth pairs (root only)."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def need_root_tools(*tools: str) -> None:
    """Root, iproute2 and the ``tools`` (e.g. ``nft``); skip without them, fail in CI."""
    missing = [t for t in ("ip", *tools) if shutil.which(t) is None]
    if os.geteuid() == 0 and not missing:
        return
    why = f"network namespaces need root and {', '.join(('ip', *tools))}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why}: CI runs as root with them")
    pytest.skip(why)


def run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=10)


class Host:
    """A namespace joined to this host by a veth pair: the host is .1, the namespace .2."""

    def __init__(self, *, routed: bool = False) -> None:
        """``routed``: through this host, the namespace reaches the others (`forwarding`)."""
        tag = secrets.token_hex(2)
        self.ns, self.link = f"esc{tag}", f"vc{tag}"
        net = f"10.{100 + int(tag[:2], 16) % 100}.{int(tag[2:], 16) % 250}"
        self.outside, self.inside = f"{net}.1", f"{net}.2"
        run("ip", "netns", "add", self.ns)
        run("ip", "-n", self.ns, "link", "set", "lo", "up")
        run("ip", "link", "add", self.link, "type", "veth", "peer", "name", f"vp{tag}",
            "netns", self.ns)
        run("ip", "addr", "add", f"{self.outside}/30", "dev", self.link)
        run("ip", "-n", self.ns, "addr", "add", f"{self.inside}/30", "dev", f"vp{tag}")
        run("ip", "link", "set", self.link, "up")
        run("ip", "-n", self.ns, "link", "set", f"vp{tag}", "up")
        if routed:
            run("ip", "-n", self.ns, "route", "add", "default", "via", self.outside)

    def cut(self, ports: list[int]) -> None:
        """Drop what the namespace sends to these ports of the host (the store's)."""
        nft = ["ip", "netns", "exec", self.ns, "nft"]
        run(*nft, "add", "table", "ip", "escut")
        run(*nft, "add", "chain", "ip", "escut", "out",
            "{ type filter hook output priority 0 ; policy accept ; }")
        run(*nft, "add", "rule", "ip", "escut", "out", "ip", "daddr", self.outside, "tcp",
            "dport", "{ " + ", ".join(map(str, ports)) + " }", "drop")

    def mend(self) -> None:
        run("ip", "netns", "exec", self.ns, "nft", "delete", "table", "ip", "escut")

    def close(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            run("ip", "netns", "del", self.ns)
        with contextlib.suppress(subprocess.CalledProcessError):
            run("ip", "link", "del", self.link)


@contextlib.contextmanager
def forwarding() -> Iterator[None]:
    """This host forwards between its links (namespaces reach each other), until the end."""
    knob = Path("/proc/sys/net/ipv4/ip_forward")
    was = knob.read_text()
    knob.write_text("1")
    try:
        yield
    finally:
        knob.write_text(was)
