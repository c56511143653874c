"""A gateway crash: SIGKILL the gateway while clients write, restart it on the same state
directory, and count the acknowledged writes that did not survive.

A write whose client got a 2xx is lost when, after the restart, reading it back through the
boundary does not return it, or any voter does not hold it (that voter dissents or fails on
the read, which the event log shows). The gateway is then killed once more and restarted with
its journal and checkpoints deleted: the same count over the same writes must now see them
lost (the executors start empty), which shows the count can see a loss at all, and that the
durable journal is what keeps the first figure at 0.

The case drives the notes API of the demo (``POST /notes``, ``GET /notes/ID``); a workload
without writes has nothing to lose and skips it.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import time
from typing import Any

from endosec.redteam.cases import FAULTS
from endosec.redteam.client import Call, Client, ClientError
from endosec.redteam.drill import VERDICT_EVENTS, CaseResult, Drill, DrillError
from endosec.redteam.workload import Tally

__all__ = ["GATEWAY_CRASH", "lost_writes", "run_gateway_crash"]

GATEWAY_CRASH = "gateway-crash"


async def _write_until_killed(drill: Drill, tag: str, kill_after: int, concurrency: int,
                              tally: Tally) -> dict[int, str]:
    """Concurrent writers; the gateway is killed once ``kill_after`` writes were acknowledged,
    while the others are still in flight. Returns the acknowledged writes (note id -> text)."""
    acknowledged: dict[int, str] = {}
    killed = asyncio.Event()

    async def writer(worker: int) -> None:
        client = Client(*drill.gw.serve, timeout=drill.client_timeout)
        n = 0
        try:
            while not killed.is_set():
                text = f"{tag}-{worker}-{n}"
                n += 1
                try:
                    reply = await client.request(Call("POST", "/notes",
                                                      json.dumps({"text": text}).encode()))
                except ClientError as exc:
                    tally.failure(str(exc))  # no reply: not acknowledged, whatever happened
                    continue
                data = _json(reply.body)
                if 200 <= reply.status < 300 and isinstance(data, dict) \
                        and data.get("text") == text and isinstance(data.get("id"), int):
                    acknowledged[data["id"]] = text
                    tally.correct += 1
                    tally.total += 1
                else:
                    tally.failure(f"POST /notes: status {reply.status}")
                if len(acknowledged) >= kill_after and not killed.is_set():
                    killed.set()
                    drill.gw.kill()
        finally:
            client.close()

    await asyncio.gather(*(writer(w) for w in range(concurrency)))
    return acknowledged


async def _restart(drill: Drill) -> float:
    """Start the gateway again on the same state directory and wait until it serves with a
    full, level pool; returns when it was restarted (for the events after it)."""
    since = time.time()
    try:
        await drill.gw.start()
    except RuntimeError as exc:
        raise DrillError(f"the gateway did not restart after the crash: {exc}") from exc
    await drill.settle()
    return since


async def lost_writes(drill: Drill, acknowledged: dict[int, str]) -> set[int]:
    """The acknowledged writes that reading back through the boundary does not return, or
    that some voter does not hold (it dissented or failed on the read)."""
    lost: set[int] = set()
    started = time.time()
    pending = iter(sorted(acknowledged))

    async def reader() -> None:
        client = Client(*drill.gw.serve, timeout=drill.client_timeout)
        try:
            for nid in pending:
                try:
                    reply = await client.request(Call("GET", f"/notes/{nid}"))
                except ClientError:
                    lost.add(nid)
                    continue
                data = _json(reply.body)
                if reply.status != 200 or not isinstance(data, dict) \
                        or data.get("text") != acknowledged[nid]:
                    lost.add(nid)
        finally:
            client.close()

    await asyncio.gather(*(reader() for _ in range(8)))
    await asyncio.sleep(1.0)  # the last verdicts reach the event log
    for e in drill.gw.events():
        path = str(e.get("path", ""))
        if e.get("event") in VERDICT_EVENTS and e["ts"] >= started and e.get("method") == "GET" \
                and path.startswith("/notes/") and path[7:].isdigit():
            nid = int(path[7:])
            if nid in acknowledged:
                lost.add(nid)
    return lost


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


async def run_gateway_crash(drill: Drill, *, kill_after: int = 150,
                            concurrency: int = 8) -> CaseResult:
    """Kill the gateway mid-stream, restart it, count lost writes; then the control run."""
    result = CaseResult(GATEWAY_CRASH, FAULTS,
                        "SIGKILL of the gateway during concurrent writes, restarted on the "
                        "same state directory", ["gateway"], True)
    clock = time.monotonic()
    await drill.settle()
    acknowledged = await _write_until_killed(drill, f"crash-{secrets.token_hex(4)}",
                                             kill_after, concurrency, result.attack)
    result.fired = 1
    restarted = await _restart(drill)
    lost = await lost_writes(drill, acknowledged)
    result.acknowledged_writes = len(acknowledged)
    result.lost_writes = len(lost)
    result.detected = True  # the restarted gateway brought every voter level and serves
    result.false_alarms = sum(1 for e in drill.gw.events()
                              if e.get("event") == "quarantine" and e["ts"] >= restarted)
    result.suppressed = not lost and bool(acknowledged)
    result.notes.append(f"{len(acknowledged)} writes acknowledged before the kill, "
                        f"{len(lost)} lost after the restart; {result.attack.failed} "
                        "unanswered (in flight or after the kill)")
    if lost:
        result.notes.append(f"lost, e.g. notes {sorted(lost)[:5]}")

    # The control: the same writes, with the durable state gone before the restart.
    drill.gw.kill()
    for part in ("journal", "checkpoints"):
        shutil.rmtree(drill.gw.dep.state / part, ignore_errors=True)
    await _restart(drill)
    result.lost_writes_without_journal = len(await lost_writes(drill, acknowledged))
    result.notes.append(f"with the journal and checkpoints deleted before a restart, "
                        f"{result.lost_writes_without_journal} of them are lost")
    result.seconds = time.monotonic() - clock
    return result
