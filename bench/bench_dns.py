"""DNS throughput and latency of the gateway against dnsdist, measured with dnsperf.

    python bench/bench_dns.py [--quick] [--duration S] [--outstanding Q]

One run measures, on 127.0.0.1, with ``dnsperf -T 1 -c 4`` over UDP and a query mix from the
DNS example's zone (answers, NXDOMAIN, NODATA, a CNAME chain, a referral):

* backend      - one cheap authoritative server directly (NSD, one server process, response
                 rate limiting off, ``bench/dns/backend.sh``);
* dnsdist      - dnsdist (no cache) in front of that backend;
* endosec n=1  - the gateway in front of one such backend;
* endosec n=3  - the gateway voting over three such backends.

The gateway asks its executors over UDP (one socket per query in flight), as dnsdist asks
its backend; every backend is the same NSD so that the front is what differs.
The gateway runs with ``gateway.threads: 2``, dnsdist with its defaults (a listener thread and
a thread per backend). Every process it starts is stopped; the targets are printed as
PASS/MISS and never fail the run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench_http import Group, cpu_seconds

HERE = Path(__file__).resolve().parent / "dns"
BACKEND = HERE / "backend.sh"
ENDOSEC = Path(sys.executable).with_name("endosec")
SBIN = os.pathsep.join((os.environ.get("PATH", ""), "/usr/sbin", "/sbin"))
THREADS = 2
QUERIES = """www.example.test A
www.example.test AAAA
example.test MX
example.test NS
example.test SOA
info.example.test TXT
alias.example.test A
x.wild.example.test A
host.sub.example.test A
nope.example.test A
www.example.test MX
"""


@dataclass(frozen=True, slots=True)
class Result:
    """One dnsperf run."""

    qps: float
    latency_ms: float  # mean
    sent: int
    lost: int
    errors: int  # replies other than NOERROR and NXDOMAIN


@dataclass(frozen=True, slots=True)
class Tools:
    dnsperf: str
    dnsdist: str
    nsd: str


def _free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    while True:
        with socket.socket() as tcp:
            tcp.bind(("127.0.0.1", 0))
            port: int = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port


def _wait_dns(port: int, timeout: float = 10.0) -> None:
    """Until something answers a query over UDP on ``port``."""
    query = bytes.fromhex("123400000001000000000000076578616d706c6504746573740000060001")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.2)
            with contextlib.suppress(OSError):
                sock.sendto(query, ("127.0.0.1", port))
                if sock.recv(512)[:2] == query[:2]:
                    return
        time.sleep(0.05)
    raise RuntimeError(f"nothing answered DNS on 127.0.0.1:{port} within {timeout} s")


def _backend(tools: Tools, root: Path, name: str) -> tuple[Group, int]:
    port = _free_port()
    group = Group(["sh", str(BACKEND), str(port), str(root / name)],
                  root / f"{name}.log", {**os.environ, "NSD": tools.nsd})
    try:
        _wait_dns(port)
    except BaseException:
        group.stop()
        raise
    return group, port


def _dnsdist(tools: Tools, root: Path, backend: int) -> tuple[Group, int]:
    port = _free_port()
    conf = root / "dnsdist.conf"
    conf.write_text(f'setSecurityPollSuffix("")\nsetLocal("127.0.0.1:{port}")\n'
                    f'newServer({{address="127.0.0.1:{backend}"}})\n')
    group = Group([tools.dnsdist, "--supervised", "--disable-syslog", "-C", str(conf)],
                  root / "dnsdist.log")
    try:
        _wait_dns(port)
    except BaseException:
        group.stop()
        raise
    return group, port


class Gateway:
    """``endosec run`` on a generated config; its executors are NSD backends."""

    def __init__(self, tools: Tools, root: Path, name: str, n: int) -> None:
        self.root = root / name
        self.root.mkdir(parents=True)
        executors = [{
            "name": f"b{i}",
            "argv": ["sh", str(BACKEND), "{port}", "{scratch}"],
            "env": {"NSD": tools.nsd},
            "profile": ["os:linux", "dns:nsd", f"build:b{i}"],
            "stateless": True,
            "network": "host",  # on loopback, as the baseline's backends are
            "health": {"dns_query": "example.test. SOA", "interval": 60, "start_timeout": 10},
        } for i in range(n)]
        config = {
            "protocol": "dns",
            "listen": "127.0.0.1:0",
            "admin": {"listen": "127.0.0.1:0", "public_read": True},
            "controller": {"active": n, "floor": n // 2 + 1, "rotate_every": None},
            "scheduler": {"seed": 1},
            "gateway": {"events": str(self.root / "events.jsonl"), "threads": THREADS},
            "dns": {"additional": "referrals"},
            "executors": executors,
        }
        path = self.root / "endosec.json"  # JSON is YAML
        path.write_text(json.dumps(config, indent=1))
        self.group = Group([str(ENDOSEC), "run", "--config", str(path), "--state-dir",
                            str(self.root / "state")], self.root / "gateway.log")
        self.port = self._ready()

    def _ready(self, timeout: float = 30.0) -> int:
        assert self.group.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.group.proc.stdout.readline().decode()
            if not line:
                break
            if line.startswith("endosec: serving dns://"):
                return int(line.split()[2].rsplit(":", 1)[1])
        self.group.stop()
        tail = Path(self.group.log.name).read_text(errors="replace")[-3000:]
        raise RuntimeError(f"the gateway did not start:\n{tail}")

    def measure(self, tools: Tools, queries: Path, seconds: int, warmup: int,
                outstanding: int) -> tuple[Result, str]:
        """A dnsperf run and a line on the gateway's CPU time per query during it."""
        dnsperf(tools, self.port, queries, warmup, outstanding)
        before = cpu_seconds(self.group.proc.pid)
        result = dnsperf(tools, self.port, queries, seconds, outstanding)
        used = cpu_seconds(self.group.proc.pid) - before
        per_query = 1e6 * used / max(result.sent - result.lost, 1)
        return result, (f"gateway CPU {per_query:.0f} us/query "
                        f"({100 * used / seconds:.0f}% of one core)")

    def stop(self) -> None:
        self.group.stop(timeout=20.0)


@contextlib.contextmanager
def _gateway(tools: Tools, root: Path, name: str, n: int) -> Iterator[Gateway]:
    gw = Gateway(tools, root, name, n)
    try:
        yield gw
    finally:
        gw.stop()


_FIELDS = {
    "sent": re.compile(r"Queries sent:\s+(\d+)"),
    "lost": re.compile(r"Queries lost:\s+(\d+)"),
    "qps": re.compile(r"Queries per second:\s+([\d.]+)"),
    "latency": re.compile(r"Average Latency \(s\):\s+([\d.]+)"),
    "codes": re.compile(r"Response codes:\s+(.*)"),
}


def dnsperf(tools: Tools, port: int, queries: Path, seconds: int, outstanding: int) -> Result:
    """One dnsperf run over UDP: one thread, four sockets, ``outstanding`` queries in flight."""
    argv = [tools.dnsperf, "-s", "127.0.0.1", "-p", str(port), "-d", str(queries), "-l",
            str(seconds), "-T", "1", "-c", "4", "-q", str(outstanding), "-t", "2"]
    out = subprocess.run(argv, capture_output=True, text=True, check=True,
                         timeout=seconds + 30).stdout
    found = {key: pattern.search(out) for key, pattern in _FIELDS.items()}
    missing = [key for key, match in found.items() if match is None and key != "codes"]
    if missing:
        raise RuntimeError(f"dnsperf printed no {', '.join(missing)}:\n{out[-2000:]}")
    codes = found["codes"].group(1) if found["codes"] else ""
    counts = {name: int(n) for name, n in re.findall(r"([A-Z]+) (\d+)", codes)}
    return Result(qps=float(found["qps"].group(1)),  # type: ignore[union-attr]
                  latency_ms=1000 * float(found["latency"].group(1)),  # type: ignore[union-attr]
                  sent=int(found["sent"].group(1)),  # type: ignore[union-attr]
                  lost=int(found["lost"].group(1)),  # type: ignore[union-attr]
                  errors=sum(n for code, n in counts.items()
                             if code not in ("NOERROR", "NXDOMAIN")))


def _tools() -> Tools:
    found = {name: shutil.which(name, path=SBIN) for name in ("dnsperf", "dnsdist", "nsd")}
    if None in found.values():
        sys.exit("bench_dns: needs dnsperf, dnsdist and nsd (Debian: dnsperf dnsdist nsd; "
                 "scripts/install-system-deps.sh installs them)")
    if not ENDOSEC.exists():
        sys.exit(f"bench_dns: {ENDOSEC} not found; pip install -e . into this interpreter's venv")
    return Tools(*(str(found[n]) for n in ("dnsperf", "dnsdist", "nsd")))


def _check(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="about 2 s per dnsperf run")
    parser.add_argument("--duration", type=int, default=None, help="seconds per dnsperf run")
    parser.add_argument("--outstanding", type=int, default=100,
                        help="queries dnsperf keeps in flight")
    args = parser.parse_args()
    seconds = args.duration or (2 if args.quick else 5)
    warmup = 1
    q = args.outstanding
    tools = _tools()
    root = Path(tempfile.mkdtemp(prefix="endosec-bench-dns-"))
    queries = root / "queries.txt"
    queries.write_text(QUERIES)
    print(f"dnsperf -T1 -c4 -q{q} over UDP, {seconds:g} s per run after a {warmup:g} s "
          f"warm-up; everything on 127.0.0.1 sharing {os.cpu_count()} CPU(s) (dnsperf, "
          "dnsdist, the gateway, the backends)")
    results: dict[str, Result] = {}
    extra: dict[str, str] = {}
    groups: list[Group] = []
    try:
        backend, backend_port = _backend(tools, root, "backend")
        groups.append(backend)
        proxy, proxy_port = _dnsdist(tools, root, backend_port)
        groups.append(proxy)
        dnsperf(tools, backend_port, queries, warmup, q)
        results["backend"] = dnsperf(tools, backend_port, queries, seconds, q)
        dnsperf(tools, proxy_port, queries, warmup, q)
        results["dnsdist"] = dnsperf(tools, proxy_port, queries, seconds, q)
        for group in reversed(groups):  # the gateways' backends get the CPU to themselves
            group.stop()
        groups.clear()
        for n in (1, 3):
            with _gateway(tools, root, f"n{n}", n) as gw:
                name = f"endosec n={n}"
                results[name], extra[name] = gw.measure(tools, queries, seconds, warmup, q)
    finally:
        for group in reversed(groups):
            group.stop()
        shutil.rmtree(root, ignore_errors=True)

    base = results["dnsdist"].qps
    print(f"\nThroughput (outstanding {q}); endosec runs use gateway.threads: {THREADS}:")
    print(f"  {'scenario':<14} {'queries/s':>10} {'mean ms':>8} {'lost':>6} {'errors':>7} "
          f"{'vs dnsdist':>11}")
    for name, r in results.items():
        print(f"  {name:<14} {r.qps:>10,.0f} {r.latency_ms:>8.3f} {r.lost:>6} {r.errors:>7} "
              f"{r.qps / base:>10.2f}x")
        if name in extra:
            print(f"    {extra[name]}")
    ratio = results["endosec n=3"].qps / base
    print("\nTargets:")
    print(f"  [{_check(ratio >= 0.4)}] endosec n=3 >= 0.4x dnsdist: {ratio:.2f}x")


if __name__ == "__main__":
    main()
