"""HTTP throughput and latency of the gateway against nginx, measured with wrk.

    python bench/bench_http.py [--quick] [--duration S] [--connections C]

One run measures, on 127.0.0.1, with ``wrk -t1 --latency`` and a Lua ``done`` hook that prints
exact percentiles:

* backend           - one cheap backend directly (nginx returning a fixed JSON body);
* nginx proxy_pass  - nginx ``proxy_pass`` (upstream keep-alive) to that backend, with one
                      worker and with two;
* endosec n=1       - the gateway in front of one such backend;
* endosec n=3       - the gateway voting over three backends, with ``gateway.threads: 1`` and
                      with two;
* n=3 sampling off  - endosec n=3 (one thread) with ``behaviour.action: off``: the cost of
                      sampling what the executors do is n=3 against this run;
* n=3 5% dissent    - the same (one thread), with one backend answering a different body on
                      5% of requests;
  The pool is exactly three executors with floor 2: the dissenter is quarantined, the other
  two keep answering, it is cleansed (its nginx restarted) and votes again. Its dissent is
  all on one request from one client, so once that request has caused
  ``attribution.quarantines`` quarantines the client is held responsible and the dissent no
  longer counts against the executor: for the rest of the run every dissent is a verdict
  event, an evidence record and a ledger record, without quarantines. Quarantines and
  cleanses are read from the admin ``/status``.
* minimal voter n=3 - ``bench/http/voter``, a 2-of-3 voting proxy with nothing else (tokio,
                      httparse, BLAKE2b of status and body, one thread), over three backends:
                      what this machine allows a voting proxy, measured in the same run.

Every backend is nginx (``bench/http/backend.sh``) so the gateway is what is measured. The
gateway's executors are declared ``stateless: true`` with distinct profiles, and rotation is
off (a rotation mid-run would cleanse a backend: the figures would depend on when it came,
not on the data plane). Added latency is
measured at roughly half of the gateway's peak load (see ``half_load``), for the minimal voter
too. The benchmark reports targets as PASS/MISS, each with the minimal voter's figure beside
it; it never fails on them. Every process it starts is stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent / "http"
BACKEND = HERE / "backend.sh"
REPORT_LUA = HERE / "report.lua"
VOTER = HERE / "voter"
ENDOSEC = Path(sys.executable).with_name("endosec")
DISSENT_PERCENT = 5
PAUSE_MS = 10  # per-connection pause of the paced (half-load) runs
HEADERS_IGNORED = ["date", "server", "keep-alive", "connection", "content-length",
                   "transfer-encoding"]


@dataclass(frozen=True, slots=True)
class Result:
    """One wrk run."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # socket errors and non-2xx/3xx replies
    non2xx: int


@dataclass(frozen=True, slots=True)
class Tools:
    wrk: str
    nginx: str


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_http(port: int, path: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, http.client.HTTPException):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                conn.close()
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing answered on 127.0.0.1:{port}{path} within {timeout} s")


def _get_json(url: str) -> Any:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=5.0)
    conn.request("GET", "/status")
    body = conn.getresponse().read()
    conn.close()
    return json.loads(body)


class Group:
    """A process started in its own session; stopped by signalling its process group."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log.open("wb")
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.log,
                                     start_new_session=True, env=env)

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.log.close()


def _nginx(tools: Tools, prefix: Path, port: int, *, proxy_to: int | None = None,
           workers: int = 1) -> Group:
    """An nginx instance with its own prefix, config and pid file, in the foreground."""
    prefix.mkdir(parents=True)
    env = {**os.environ, "NGINX": tools.nginx}
    if proxy_to is None:
        argv = ["sh", str(BACKEND), str(port), str(prefix), "0"]
    else:
        (prefix / "tmp").mkdir()
        text = (HERE / "proxy.conf.in").read_text()
        for key, value in (("@PREFIX@", str(prefix)), ("@PORT@", str(port)),
                           ("@UPSTREAM@", f"127.0.0.1:{proxy_to}"),
                           ("@WORKERS@", str(workers))):
            text = text.replace(key, value)
        (prefix / "nginx.conf").write_text(text)
        argv = [tools.nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", "stderr"]
    group = Group(argv, prefix.with_suffix(".log"), env)
    try:
        _wait_http(port, "/health" if proxy_to is None else "/")
    except BaseException:
        group.stop()
        raise
    return group


class Gateway:
    """``endosec run`` on a generated config; its executors are nginx backends."""

    def __init__(self, tools: Tools, root: Path, name: str, n: int, dissent: bool,
                 threads: int, behaviour: str) -> None:
        self.root = root / name
        self.root.mkdir(parents=True)
        executors = []
        for i in range(n):
            percent = DISSENT_PERCENT if dissent and i == n - 1 else 0
            executors.append({
                "name": f"b{i}",
                "argv": ["sh", str(BACKEND), "{port}", "{scratch}", str(percent)],
                "env": {"NGINX": tools.nginx},
                "profile": ["os:linux", "http:nginx", f"build:b{i}"],
                "stateless": True,
                "network": "host",  # on loopback, as the baseline's backends are
                "health": {"path": "/health", "interval": 60, "start_timeout": 10},
            })
        config = {
            "listen": "127.0.0.1:0",
            "admin": {"listen": "127.0.0.1:0", "public_read": True},
            "controller": {"active": n, "floor": n // 2 + 1, "rotate_every": None},
            "scheduler": {"seed": 1},
            "limits": {"max_connections": 4096},
            "behaviour": {"action": behaviour},
            "gateway": {"events": str(self.root / "events.jsonl"), "threads": threads},
            "canonicalise": {"headers": {"ignore": HEADERS_IGNORED},
                             "bodies": [{"content_type": "application/json", "json": {}}]},
            "executors": executors,
        }
        path = self.root / "endosec.json"  # JSON is YAML
        path.write_text(json.dumps(config, indent=1))
        self.group = Group([str(ENDOSEC), "run", "--config", str(path), "--state-dir",
                            str(self.root / "state")], self.root / "gateway.log")
        self.url, self.admin = self._ready()
        self.executor_pids: set[int] = set()

    def _ready(self, timeout: float = 30.0) -> tuple[str, str]:
        assert self.group.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.group.proc.stdout.readline().decode()
            if not line:
                break
            if line.startswith("endosec: serving "):
                words = line.split()
                return words[2], words[4]
        self.group.stop()
        tail = Path(self.group.log.name).read_text(errors="replace")[-3000:]
        raise RuntimeError(f"the gateway did not start:\n{tail}")

    def status(self) -> Any:
        status = _get_json(self.admin)
        self.executor_pids |= {e["pid"] for e in status["executors"] if e["pid"]}
        return status

    def measure(self, tools: Tools, connections: int, seconds: int, warmup: int,
                pause_ms: int = 0) -> tuple[Result, float, str]:
        """A wrk run, the gateway's CPU time per request (us) during it, and a line on it."""
        return measure_cpu(tools, self.url, self.group.proc.pid, connections, seconds, warmup,
                           pause_ms)

    def stop(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.status()
        self.group.stop(timeout=20.0)
        for pid in self.executor_pids:  # the gateway stops them; make sure, by their group
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


@contextlib.contextmanager
def _gateway(tools: Tools, root: Path, name: str, n: int, dissent: bool = False,
             threads: int = 1, behaviour: str = "quarantine") -> Iterator[Gateway]:
    gw = Gateway(tools, root, name, n, dissent, threads, behaviour)
    try:
        yield gw
    finally:
        gw.stop()


def wrk(tools: Tools, url: str, connections: int, seconds: int, pause_ms: int = 0) -> Result:
    """One wrk run; ``pause_ms`` > 0 paces every connection (see ``bench/http/pace.lua``)."""
    script = ["-s", "pace.lua", url + "/", "--", str(pause_ms)] if pause_ms else [
        "-s", "report.lua", url + "/"]
    argv = [tools.wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", *script]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, cwd=HERE,
                         timeout=seconds + 30).stdout
    data = json.loads(out.strip().splitlines()[-1])
    errors = sum(data[k] for k in ("connect", "read", "write", "status", "timeout"))
    return Result(rps=data["requests"] / (data["duration_us"] / 1e6),
                  p50_ms=data["p50_us"] / 1000, p99_ms=data["p99_us"] / 1000,
                  requests=data["requests"], errors=errors, non2xx=data["status"])


def measure(tools: Tools, url: str, connections: int, seconds: int, warmup: int,
            pause_ms: int = 0) -> Result:
    wrk(tools, url, connections, warmup, pause_ms)
    return wrk(tools, url, connections, seconds, pause_ms)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process (all its threads) has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1]
    except OSError:
        return float("nan")
    utime, stime = fields.split()[11:13]
    return (int(utime) + int(stime)) / os.sysconf("SC_CLK_TCK")


def measure_cpu(tools: Tools, url: str, pid: int, connections: int, seconds: int, warmup: int,
                pause_ms: int = 0) -> tuple[Result, float, str]:
    """A wrk run through the proxy ``pid``, its CPU time per request (us), and a line on it."""
    wrk(tools, url, connections, warmup, pause_ms)
    before = cpu_seconds(pid)
    result = wrk(tools, url, connections, seconds, pause_ms)
    used = cpu_seconds(pid) - before
    per_request = 1e6 * used / max(result.requests, 1)
    return result, per_request, (f"gateway CPU {per_request:.0f} us/request "
                                 f"({100 * used / seconds:.0f}% of one core)")


@contextlib.contextmanager
def _minimal_voter(tools: Tools, root: Path, n: int) -> Iterator[tuple[str, int]]:
    """``bench/http/voter`` (built here, release, in its own ``target/``) over ``n`` backends:
    its URL and pid."""
    built = subprocess.run(["cargo", "build", "--release", "--locked", "--quiet",
                            "--manifest-path", str(VOTER / "Cargo.toml")],
                           check=False, capture_output=True, text=True, timeout=900)
    if built.returncode != 0:
        raise RuntimeError(f"cargo could not build {VOTER}:\n{built.stderr[-3000:]}")
    groups = []
    try:
        ports = [_free_port() for _ in range(n)]
        for i, port in enumerate(ports):
            groups.append(_nginx(tools, root / f"voter-b{i}", port))
        voter = Group([str(VOTER / "target/release/bench-voter"), "127.0.0.1:0",
                       *(f"127.0.0.1:{port}" for port in ports)], root / "voter.log")
        groups.append(voter)
        assert voter.proc.stdout is not None
        line = voter.proc.stdout.readline().decode()
        if not line.startswith("bench-voter: serving "):
            raise RuntimeError(f"the minimal voter did not start: {line!r}")
        yield "http://" + line.split()[2], voter.proc.pid
    finally:
        for group in reversed(groups):
            group.stop()


def half_load(peak: float) -> tuple[int, int]:
    """Connections and per-connection pause that offer about half of ``peak`` requests/s.

    Debian's wrk has no constant-rate mode (wrk2's ``-R``), so the rate is set by pacing: each
    of C connections waits a random 0..2*PAUSE ms after every reply, offering about C / PAUSE
    requests/s as long as replies take much less than PAUSE; the random wait keeps the
    connections out of step, so the load is a spread-out stream, not bursts of C requests.
    The same C and PAUSE are then used for the backend, nginx and the gateway, so every one of
    them sees the same offered load.
    """
    return max(1, round(peak / 2 * PAUSE_MS / 1000)), PAUSE_MS


def _counters(status: Any) -> dict[str, int]:
    total: dict[str, int] = {}
    for e in status["executors"]:
        for key, value in e["counters"].items():
            total[key] = total.get(key, 0) + value
    return total


def _tools() -> Tools:
    wrk_bin = shutil.which("wrk")
    nginx_bin = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/sbin/nginx") if Path(p).exists()), None)
    if wrk_bin is None or nginx_bin is None:
        sys.exit("bench_http: needs wrk and nginx (Debian: wrk nginx-light; "
                 "scripts/install-system-deps.sh installs them)")
    if shutil.which("cargo") is None:
        sys.exit("bench_http: needs cargo, to build the minimal voter (bench/http/voter)")
    if not ENDOSEC.exists():
        sys.exit(f"bench_http: {ENDOSEC} not found; pip install -e . into this interpreter's venv")
    return Tools(wrk_bin, nginx_bin)


def _check(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="about 2 s per wrk run")
    parser.add_argument("--duration", type=int, default=None, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections at peak")
    args = parser.parse_args()
    seconds = args.duration or (2 if args.quick else 5)
    warmup = 1
    c = args.connections
    tools = _tools()
    root = Path(tempfile.mkdtemp(prefix="endosec-bench-http-"))
    print(f"wrk -t1 -c{c}, {seconds:g} s per run after a {warmup:g} s warm-up; everything on "
          f"127.0.0.1 sharing {os.cpu_count()} CPU(s) (wrk, nginx, the gateway, the backends)")
    peak: dict[str, Result] = {}
    extra: dict[str, str] = {}
    groups: list[Group] = []
    try:
        backend_port, proxy_port, proxy2_port = _free_port(), _free_port(), _free_port()
        groups.append(_nginx(tools, root / "backend", backend_port))
        groups.append(_nginx(tools, root / "proxy", proxy_port, proxy_to=backend_port))
        groups.append(_nginx(tools, root / "proxy2", proxy2_port, proxy_to=backend_port,
                             workers=2))
        backend_url = f"http://127.0.0.1:{backend_port}"
        proxy_url = f"http://127.0.0.1:{proxy_port}"
        peak["backend"] = measure(tools, backend_url, c, seconds, warmup)
        peak["nginx proxy_pass"] = measure(tools, proxy_url, c, seconds, warmup)
        peak["nginx 2 workers"] = measure(tools, f"http://127.0.0.1:{proxy2_port}", c,
                                          seconds, warmup)
        with _gateway(tools, root, "n1", 1) as gw:
            peak["endosec n=1"], _, extra["endosec n=1"] = gw.measure(tools, c, seconds, warmup)
        with _gateway(tools, root, "n3", 3) as gw:
            r3, cpu3, extra["endosec n=3"] = gw.measure(tools, c, seconds, warmup)
            peak["endosec n=3"] = r3
            half_c, pause = half_load(r3.rps)
            half = {
                "backend": measure(tools, backend_url, half_c, seconds, warmup, pause),
                "nginx proxy_pass": measure(tools, proxy_url, half_c, seconds, warmup, pause),
                "endosec n=3": measure(tools, gw.url, half_c, seconds, warmup, pause),
            }
        with _gateway(tools, root, "n3off", 3, behaviour="off") as gw:
            peak["n=3 sampling off"], _, extra["n=3 sampling off"] = gw.measure(
                tools, c, seconds, warmup)
        with _gateway(tools, root, "n3t2", 3, threads=2) as gw:
            peak["n=3 2 threads"], _, extra["n=3 2 threads"] = gw.measure(tools, c, seconds,
                                                                           warmup)
        with _gateway(tools, root, "n3d", 3, dissent=True) as gw:
            before = _counters(gw.status())
            name = f"n=3 {DISSENT_PERCENT}% dissent"
            rd, _, cpu = gw.measure(tools, c, seconds, warmup)
            peak[name] = rd
            after = _counters(gw.status())
            delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
            extra[name] = (f"{cpu}\n    in the measured run and its warm-up: "
                           f"{delta.get('dissents', 0)} "
                           f"dissents, {delta.get('quarantines', 0)} quarantines, "
                           f"{delta.get('cleanses', 0)} cleanses; "
                           f"{rd.non2xx} non-2xx of {rd.requests} replies "
                           f"({100 * (1 - rd.non2xx / max(rd.requests, 1)):.3f}% available)")
        with _minimal_voter(tools, root, 3) as (url, pid):
            peak["minimal voter n=3"], cpu_floor, extra["minimal voter n=3"] = measure_cpu(
                tools, url, pid, c, seconds, warmup)
            half["minimal voter n=3"] = measure(tools, url, half_c, seconds, warmup, pause)
    finally:
        for group in reversed(groups):
            group.stop()
        shutil.rmtree(root, ignore_errors=True)

    base = peak["nginx proxy_pass"].rps
    print(f"\nPeak (c={c}); endosec runs use gateway.threads: 1 unless named otherwise:")
    print(f"  {'scenario':<20} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} "
          f"{'vs proxy':>9}")
    for name, r in peak.items():
        print(f"  {name:<20} {r.rps:>10,.0f} {r.p50_ms:>8.3f} {r.p99_ms:>8.3f} {r.errors:>7} "
              f"{r.rps / base:>8.2f}x")
        if name in extra:
            print(f"    {extra[name]}")
    two = peak["n=3 2 threads"].rps / peak["nginx 2 workers"].rps
    print(f"  two threads against two nginx workers: {two:.2f}x")
    floor = peak["endosec n=3"].rps / peak["minimal voter n=3"].rps
    print(f"  endosec n=3 against the minimal voter: {floor:.2f}x the throughput, "
          f"{cpu3 - cpu_floor:+.0f} us of CPU per request")

    print(f"\nLatency at about half of endosec n=3's peak ({r3.rps:,.0f} req/s). Debian's wrk "
          "has no constant-rate mode,\nso the load is paced (bench/http/pace.lua): "
          f"{half_c} connections, each waiting a random 0..{2 * pause} ms\nafter every reply; "
          "the same offered load for each scenario:")
    for name, r in half.items():
        print(f"  {name:<20} {r.rps:>10,.0f} req/s ({r.rps / r3.rps:.2f} of n=3 peak)  "
              f"p50 {r.p50_ms:.3f} ms  p99 {r.p99_ms:.3f} ms")
    added = half["endosec n=3"].p50_ms - half["backend"].p50_ms
    added_proxy = half["nginx proxy_pass"].p50_ms - half["backend"].p50_ms
    added_floor = half["minimal voter n=3"].p50_ms - half["backend"].p50_ms
    print(f"  added p50: endosec n=3 {added:.3f} ms, nginx proxy_pass {added_proxy:.3f} ms, "
          f"minimal voter {added_floor:.3f} ms\n  (each minus the backend's own p50 at the "
          "same load)")

    ratio3 = peak["endosec n=3"].rps / base
    ratio_d = rd.rps * (1 - rd.non2xx / max(rd.requests, 1)) / r3.rps  # answered, not refused
    voter = peak["minimal voter n=3"].rps / base
    print("\nTargets (in brackets: the minimal voter's figure, what this machine allows):")
    print(f"  [{_check(ratio3 >= 0.4)}] endosec n=3 (one thread) >= 0.4x nginx proxy_pass "
          f"(one worker): {ratio3:.2f}x ({voter:.2f}x)")
    print(f"  [{_check(cpu3 <= 60)}] gateway CPU per n=3 request <= 60 us: {cpu3:.0f} us "
          f"({cpu_floor:.0f} us)")
    print(f"  [{_check(added <= 0.3)}] p50 added latency at half of peak load <= 0.3 ms: "
          f"{added:.3f} ms ({added_floor:.3f} ms)")
    print(f"  [{_check(ratio_d >= 0.9)}] {DISSENT_PERCENT}% dissent keeps >= 0.9x clean n=3 "
          f"throughput (2xx replies only): {ratio_d:.2f}x")
    sampling = r3.rps / peak["n=3 sampling off"].rps
    print(f"  [{_check(sampling >= 0.9)}] behaviour sampling keeps >= 0.9x of n=3 without it: "
          f"{sampling:.2f}x")

if __name__ == "__main__":
    main()
