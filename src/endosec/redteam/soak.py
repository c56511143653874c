"""A soak: benign traffic at full speed while single-executor faults come and go.

`run_soak` sends N requests of the benign workload (writes and reads, every reply judged by
the workload's oracle) from several concurrent clients, each on its own loopback address, and
meanwhile faults one active executor at a time, rotating the victim and the kind:

* ``kill`` - SIGKILL of the server process (not its wrapper or supervisor);
* ``stop`` - SIGSTOP of the server process: it holds its connections and never answers;
* ``slow`` - it answers a second after the read timeout (the faults class's ``slow`` implant);
* ``wrong-answer`` - it rewrites a JSON field with the run's canary (``alter-json-field``).

A fault is injected only when the pool is whole and at least ``fault_every`` seconds after the
previous one, so one executor at most is faulty at a time (the DHR assumption); the victim is
expected to be quarantined, and a stopped one is continued once it was. At the end every
acknowledged write is read back through the boundary (`crash.lost_writes`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from endosec.redteam.cases import catalogue
from endosec.redteam.crash import lost_writes
from endosec.redteam.drill import Drill
from endosec.redteam.workload import NotesWorkload, Tally, drive
from endosec.tasks import spawn

__all__ = ["FAULT_KINDS", "SoakOptions", "run_soak"]

FAULT_KINDS = ("kill", "stop", "slow", "wrong-answer")
_IMPLANTS = {"slow": "slow", "wrong-answer": "alter-json-field"}  # kind -> catalogue case
_PROGRESS = 10.0  # seconds between progress lines

Log = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class SoakOptions:
    requests: int
    availability: float = 0.9999  # the target
    fault_every: float = 3.0  # seconds between faults, at least
    concurrency: int = 8  # clients, each on its own loopback address


@dataclass(slots=True)
class _Fault:
    kind: str
    victim: str
    at: float
    detected: bool = False
    recovered: float | None = None  # seconds until the pool was whole again


def _server_pid(pid: int) -> int:
    """The process that serves: the deepest first descendant of the executor's supervisor."""
    while True:
        children: list[str] = []
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{pid}/task").iterdir():
                children += (task / "children").read_text().split()
        if not children:
            return pid
        pid = int(children[0])


class _Injector:
    """One fault at a time into the active executors, in turn, until told to stop."""

    def __init__(self, drill: Drill, fault_every: float, done: asyncio.Event) -> None:
        self.drill = drill
        self.fault_every = fault_every
        self.done = done
        self.faults: list[_Fault] = []
        self.cases = {c.name: c for c in catalogue(drill.read_timeout)}

    async def run(self) -> None:
        last = time.monotonic()
        turn = 0
        while not self.done.is_set():
            active = await self.drill.settle()
            if self.faults and self.faults[-1].recovered is None:
                self.faults[-1].recovered = time.monotonic() - self.faults[-1].at
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.done.wait(),
                                       max(0.0, last + self.fault_every - time.monotonic()))
            if self.done.is_set():
                return
            kind = FAULT_KINDS[turn % len(FAULT_KINDS)]
            victim = sorted(active)[turn % len(active)]
            turn += 1
            last = time.monotonic()
            fault = _Fault(kind, victim, last)
            self.faults.append(fault)
            before = (await self.drill.gw.executors())[victim]["counters"]["quarantines"]
            undo = await self._inject(kind, victim)
            try:
                fault.detected = await self._quarantined(victim, before)
            finally:
                undo()

    async def _inject(self, kind: str, victim: str) -> Callable[[], None]:
        if kind in _IMPLANTS:
            self.drill.plant(self.cases[_IMPLANTS[kind]], victim)
            return lambda: self.drill.clear([victim])
        pid = _server_pid(int((await self.drill.gw.executors())[victim]["pid"]))
        os.kill(pid, signal.SIGKILL if kind == "kill" else signal.SIGSTOP)

        def resume() -> None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

        return resume

    async def _quarantined(self, victim: str, before: int) -> bool:
        deadline = time.monotonic() + 2 * self.drill.read_timeout + 10.0
        while time.monotonic() < deadline:
            self.drill.check_alive()
            now = (await self.drill.gw.executors())[victim]["counters"]["quarantines"]
            if now > before:
                return True
            await asyncio.sleep(0.05)
        return False


async def _progress(tally: Tally, total: int, injector: _Injector, log: Log) -> None:
    while True:
        await asyncio.sleep(_PROGRESS)
        log(f"soak: {tally.total}/{total} requests, {tally.failed} failed, {tally.wrong} "
            f"wrong, {len(injector.faults)} faults")


async def run_soak(drill: Drill, opts: SoakOptions, *, seed: int, log: Log) -> dict[str, Any]:
    """Run the soak against the drill's gateway; its figures for ``report.json``."""
    await drill.settle()
    host, port = drill.gw.serve
    done = asyncio.Event()
    injector = _Injector(drill, opts.fault_every, done)
    tally = Tally()
    started = time.monotonic()
    faults = spawn(injector.run(), name="endosec-soak-faults")
    progress = spawn(_progress(tally, opts.requests, injector, log), name="endosec-soak-log")
    try:
        await drive(host, port, drill.workload, requests=opts.requests,
                    concurrency=opts.concurrency, rng=random.Random(seed),
                    canary=drill.canary.encode(), timeout=drill.client_timeout,
                    sources=[f"127.0.1.{i + 1}" for i in range(opts.concurrency)],
                    tally=tally)
    finally:
        done.set()
        progress.cancel()
    seconds = time.monotonic() - started
    await faults  # a drill error (the gateway died, the pool never settled) ends the run here
    await drill.settle()
    last = injector.faults[-1] if injector.faults else None
    if last is not None and last.recovered is None:
        last.recovered = time.monotonic() - last.at
    acknowledged, lost = None, None
    if isinstance(drill.workload, NotesWorkload):
        acknowledged = dict(drill.workload.notes)
        lost = len(await lost_writes(drill, acknowledged))
    recoveries = [f.recovered for f in injector.faults if f.recovered is not None]
    return {
        "requests": tally.total, "correct": tally.correct, "failed": tally.failed,
        "wrong_answers": tally.wrong, "availability": tally.availability,
        "target": opts.availability,
        "acknowledged_writes": None if acknowledged is None else len(acknowledged),
        "lost_writes": lost,
        "faults_injected": len(injector.faults),
        "faults": dict(Counter(f.kind for f in injector.faults)),
        "faults_detected": sum(f.detected for f in injector.faults),
        "undetected": [f"{f.kind} in {f.victim}" for f in injector.faults if not f.detected],
        "recovery_seconds": {"mean": round(sum(recoveries) / len(recoveries), 2),
                             "max": round(max(recoveries), 2)} if recoveries else None,
        "fault_every": opts.fault_every, "clients": opts.concurrency,
        "seconds": round(seconds, 1), "rate": round(tally.total / seconds, 1),
        "problems": tally.problems[:10],
    }
