"""Micro-segmentation: each local executor in its own network namespace.

The namespace holds the executor's own loopback and one end of a veth pair whose other end
stays with the gateway; each side has one address of a /30 from 10.200.0.0/13. nftables in
the namespace:

- rewrites connections to the veth address and the executor's port to its loopback listener
  (``route_localnet``), so an executor configured for 127.0.0.1 serves unchanged;
- lets out only replies on connections the gateway opened and traffic on its own loopback;
  every other packet leaving is refused at once (ICMP admin-prohibited, a TCP reset) and
  counted, so an executor cannot reach the admin listener, another executor or the outside,
  and each attempt shows (`Segment.refused`).

A new segment is made at each start and removed at each stop, so a cleansed executor gets a
fresh namespace and address; a supervisor whose gateway died removes its executor's, and the
next start removes those of runs killed outright (`sweep`). Needs root, ``ip`` (iproute2)
and ``nft`` (nftables).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Segment", "SegmentError", "remove_namespace", "segment_possible", "sweep"]

_POOL = ipaddress.ip_network("10.200.0.0/13")


class SegmentError(Exception):
    """A namespace could not be made or read."""


def segment_possible() -> str | None:
    """None when segments can be made here; else what is missing, in words."""
    if os.geteuid() != 0:
        return "not running as root"
    missing = [tool for tool in ("ip", "nft") if shutil.which(tool) is None]
    if missing:
        return f"{' and '.join(missing)} not on PATH (packages iproute2, nftables)"
    return None


def _run(argv: list[str], stdin: str | None = None) -> str:
    try:
        done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=10,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SegmentError(f"{' '.join(argv)}: {exc}") from exc
    if done.returncode != 0:
        raise SegmentError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


def _taken() -> set[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The /30s of the pool that an address on this host already falls in."""
    out = _run(["ip", "-4", "-o", "addr", "show"])
    nets: set[ipaddress.IPv4Network | ipaddress.IPv6Network] = set()
    for line in out.splitlines():
        fields = line.split()
        if "inet" in fields:
            iface = ipaddress.ip_interface(fields[fields.index("inet") + 1])
            nets.add(ipaddress.ip_network(f"{iface.ip}/30", strict=False))
    return nets


def _rules(inner: str, host: str, port: int) -> str:
    return f"""table inet endosec {{
  counter outbound {{
  }}
  chain served {{
    type nat hook prerouting priority dstnat;
    iifname "{inner}" meta l4proto {{ tcp, udp }} th dport {port} dnat ip to {host}:{port}
  }}
  chain leaving {{
    type filter hook output priority filter; policy accept;
    oifname "lo" accept
    ct state established,related accept
    counter name outbound reject with icmpx admin-prohibited
  }}
}}
"""


@dataclass(frozen=True, slots=True)
class Segment:
    """One executor's namespace: ``address`` is where the gateway reaches it."""

    namespace: str
    address: str

    @classmethod
    def create(cls, host: str, port: int) -> Segment:
        """A fresh namespace in which ``host:port`` (a 127.x listener) is served on the
        segment's address, and nothing else gets out."""
        missing = segment_possible()
        if missing is not None:
            raise SegmentError(missing)
        token = secrets.token_hex(4)
        # The namespace names the process that made it: `sweep` knows when that one is gone.
        ns, outer, inner = f"endosec-{os.getpid()}-{token}", f"es{token}g", f"es{token}x"
        taken = _taken()
        for _ in range(64):
            net = ipaddress.ip_network(
                (int(_POOL.network_address) + 4 * secrets.randbelow(_POOL.num_addresses // 4),
                 30))
            if net not in taken:
                break
        else:
            raise SegmentError("no free /30 left in 10.200.0.0/13")
        gw, ex = (f"{a}/30" for a in list(net.hosts())[:2])
        segment = cls(ns, str(ipaddress.ip_interface(ex).ip))
        _run(["ip", "netns", "add", ns])
        try:
            _run(["ip", "link", "add", outer, "type", "veth", "peer", "name", inner,
                  "netns", ns])
            # No IPv6 on the link (its neighbour discovery would count as leaving), before it
            # is up; the rules before anything can leave.
            _run(["ip", "netns", "exec", ns, "sysctl", "-qw",
                  "net.ipv4.conf.all.route_localnet=1", f"net.ipv6.conf.{inner}.disable_ipv6=1"])
            _run(["ip", "netns", "exec", ns, "nft", "-f", "-"], _rules(inner, host, port))
            _run(["ip", "-batch", "-"], f"addr add {gw} dev {outer}\nlink set {outer} up\n")
            _run(["ip", "-n", ns, "-batch", "-"],
                 f"addr add {ex} dev {inner}\nlink set {inner} up\nlink set lo up\n"
                 f"route add default via {ipaddress.ip_interface(gw).ip}\n")
        except SegmentError:
            segment.remove()
            raise
        return segment

    def enter(self) -> list[str]:
        """The prefix that runs a command line inside the namespace."""
        return ["ip", "netns", "exec", self.namespace]

    def remove(self) -> None:
        """Remove the namespace (its veth pair goes with it). Idempotent."""
        remove_namespace(self.namespace)

    async def refused(self) -> int:
        """Packets refused on their way out since the segment was made."""
        proc = await asyncio.create_subprocess_exec(
            *self.enter(), "nft", "-j", "list", "counter", "inet", "endosec", "outbound",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        if proc.returncode != 0:
            raise SegmentError(f"{self.namespace}: cannot read the outbound counter: "
                               f"{err.decode(errors='replace').strip()}")
        for item in json.loads(out)["nftables"]:
            if "counter" in item:
                return int(item["counter"]["packets"])
        raise SegmentError(f"{self.namespace}: no outbound counter")


def sweep() -> list[str]:
    """Remove the segments whose maker is gone and in which nothing runs: what a run killed
    outright (its supervisors with it) left behind. Returns their names."""
    root = Path("/run/netns")
    if segment_possible() is not None or not root.is_dir():
        return []
    removed = []
    for path in root.glob("endosec-*-*"):
        maker = path.name.split("-")[1]
        if not maker.isdigit() or Path(f"/proc/{maker}").exists():
            continue
        pids = subprocess.run(["ip", "netns", "pids", path.name], capture_output=True,
                              text=True, check=False, timeout=10).stdout.split()
        if not pids:
            remove_namespace(path.name)
            removed.append(path.name)
    return removed


def remove_namespace(namespace: str) -> None:
    """Remove ``namespace`` if it exists (what a crashed run left included)."""
    if not namespace.startswith("endosec-"):
        raise ValueError(f"not an endosec namespace: {namespace!r}")
    if os.path.exists(f"/run/netns/{namespace}"):
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True, check=False,
                       timeout=10)
