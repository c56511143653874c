"""Recovery time of a cleansed executor after 1,000 and after 100,000 writes, with checkpoints.

    python bench/bench_recovery.py [--quick]

One run starts the demo (three stacks) with ``checkpoint.every_writes: 1000``, sends writes
through the gateway (``POST /notes``, many clients at once, on 127.0.0.1), and after 1,000 and
after 100,000 of them (``--quick``: 10,000) has the operator cleanse the Node.js executor, timing
cleanse to ``cleansed`` (stop, restart, restore from the checkpoint, replay the journal suffix)
from the gateway's own events; each figure is the median of three cleanses, each started once
the executor votes again. For contrast, a run without checkpoints measures the same after
1,000 and 10,000 writes (every cleanse replays the whole journal). It prints the recovery times
and the ratio, with the target as PASS/MISS (at most 2x); it never fails on a figure. Every
process it starts is stopped.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "src" / "endosec" / "demo"
ENDOSEC = Path(sys.executable).with_name("endosec")
TOKEN = "bench-token"
SAMPLES = 3  # cleanses per figure (the median is printed)


class Gateway:
    def __init__(self, root: Path, name: str, checkpoints: bool) -> None:
        self.root = root / name
        self.root.mkdir(parents=True)
        data = yaml.safe_load((DEMO / "endosec.yaml").read_text())
        data["listen"] = "127.0.0.1:0"
        data["admin"]["listen"] = "127.0.0.1:0"
        data["gateway"] = {"events": str(self.root / "events.jsonl")}
        data["limits"]["max_connections"] = 4096
        for e in data["executors"]:
            e["cwd"] = str(DEMO)
            if not checkpoints:
                e.pop("state", None)
        data["checkpoint"] = {**data.get("checkpoint", {}), "every_writes": 1000}
        config = self.root / "endosec.yaml"
        config.write_text(yaml.safe_dump(data))
        self.events = self.root / "events.jsonl"
        self.proc = subprocess.Popen(
            [str(ENDOSEC), "run", "--config", str(config), "--state-dir",
             str(self.root / "state")], stdout=subprocess.PIPE,
            stderr=(self.root / "gateway.log").open("wb"), start_new_session=True,
            env={**os.environ, "ENDOSEC_ADMIN_TOKEN": TOKEN})
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if "serving" not in line:
            self.stop()
            sys.exit(f"bench_recovery: the gateway did not start: "
                     f"{(self.root / 'gateway.log').read_text()[-2000:]}")
        words = line.split()
        self.url, self.admin = words[2], words[4]

    def _conn(self, admin: bool = False) -> http.client.HTTPConnection:
        host, port = (self.admin if admin else self.url).removeprefix("http://").rsplit(":", 1)
        return http.client.HTTPConnection(host, int(port), timeout=30)

    def status(self) -> Any:
        conn = self._conn(admin=True)
        conn.request("GET", "/status", headers={"Authorization": f"Bearer {TOKEN}"})
        body = conn.getresponse().read()
        conn.close()
        return json.loads(body)

    def write(self, count: int, clients: int = 32) -> None:
        def worker(n: int) -> int:
            conn, failed = self._conn(), 0
            for i in range(n):
                conn.request("POST", "/notes", body=json.dumps({"text": f"bench {i}"}),
                             headers={"content-type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                failed += resp.status != 201
            conn.close()
            return failed

        share = [count // clients + (i < count % clients) for i in range(clients)]
        with concurrent.futures.ThreadPoolExecutor(clients) as pool:
            failed = sum(pool.map(worker, share))
        if failed:
            print(f"  ({failed} of {count} writes were not 201)")

    def recovery(self, name: str = "node", timeout: float = 600) -> float:
        """Once ``name`` votes, cleanse it and return seconds from the cleanse order to
        ``cleansed``."""
        deadline = time.monotonic() + timeout
        while name not in self.status()["active"]:
            if time.monotonic() > deadline:
                sys.exit(f"bench_recovery: {name} did not vote within {timeout} s")
            time.sleep(0.05)
        seen = len(self._events())
        conn = self._conn(admin=True)
        conn.request("POST", f"/executors/{name}/cleanse",
                     headers={"Authorization": f"Bearer {TOKEN}"})
        conn.getresponse().read()
        conn.close()
        while time.monotonic() < deadline:
            new = self._events()[seen:]
            start = next((e["ts"] for e in new
                          if e["event"] == "cleanse" and e.get("executor") == name), None)
            done = next((e for e in new if e["event"] in ("cleansed", "cleanse-failed")
                         and e.get("executor") == name), None)
            if start is not None and done is not None:
                if done["event"] != "cleansed":
                    sys.exit(f"bench_recovery: cleansing {name} failed: {done}")
                return float(done["ts"]) - float(start)
            time.sleep(0.05)
        sys.exit(f"bench_recovery: {name} was not cleansed within {timeout} s")

    def _events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.events.read_text().splitlines() if line]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def measure(root: Path, name: str, checkpoints: bool, points: list[int]) -> dict[int, float]:
    """The median recovery time after each number of writes."""
    gw = Gateway(root, name, checkpoints)
    out, done = {}, 0
    try:
        for point in points:
            gw.write(point - done)
            done = point
            times = sorted(gw.recovery() for _ in range(SAMPLES))
            out[point] = times[len(times) // 2]
            print(f"  {name}: cleanse after {point:,} writes took "
                  f"{', '.join(f'{t:.3f}' for t in times)} s")
    finally:
        gw.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="10,000 writes instead of 100,000")
    args = parser.parse_args()
    if shutil.which("node") is None or not ENDOSEC.exists():
        sys.exit("bench_recovery: needs node and this venv's endosec (pip install -e .)")
    many = 10_000 if args.quick else 100_000
    root = Path(tempfile.mkdtemp(prefix="endosec-bench-recovery-"))
    try:
        with_cp = measure(root, "checkpoints", True, [1_000, many])
        without = measure(root, "journal-only", False, [1_000, 10_000])
    finally:
        shutil.rmtree(root, ignore_errors=True)
    ratio = with_cp[many] / with_cp[1_000]
    points = sorted({*with_cp, *without})
    print(f"\nRecovery (cleanse to cleansed) of one executor, the demo's three stacks, median of "
          f"{SAMPLES}:")
    print(f"  {'':<26}" + "".join(f"{'after ' + format(p, ','):>15}" for p in points))
    for label, row in (("checkpoints every 1,000", with_cp), ("journal only", without)):
        print(f"  {label:<26}" + "".join(
            f"{row[p]:>14.3f}s" if p in row else f"{'-':>15}" for p in points))
    print(f"\n  [{'PASS' if ratio <= 2 else 'MISS'}] recovery after {many:,} writes within 2x of "
          f"after 1,000: {ratio:.2f}x (journal only, 10x the writes: "
          f"{without[10_000] / without[1_000]:.2f}x)")


if __name__ == "__main__":
    main()
