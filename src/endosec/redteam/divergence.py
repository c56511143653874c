"""Benign divergence used as a lever: inputs on which heterogeneous servers legitimately
disagree, sent at a high rate by one client, to quarantine executor after executor.

Each input is one case. While it runs, benign traffic from another client must stay available
(the class's ``availability``), and the active set must never fall below the floor. A case is
``suppressed`` when no benign request failed or got a wrong answer and the gateway never
failed the attacker's request closed (no quorum); ``detected`` when the lever did not work:
the voters stayed at or above the floor and the attacker caused no more quarantines than
``attribution.quarantines`` allows one client.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from endosec.redteam.client import Call, Client, ClientError, Reply
from endosec.redteam.drill import CaseResult, Drill

__all__ = ["BENIGN_DIVERGENCE", "DivergenceLimits", "divergent_inputs", "run_divergence"]

BENIGN_DIVERGENCE = "benign-divergence"
ATTACKER = "127.0.3.1"  # one client for the whole class: the lever is one client's
_POLL = 0.05


@dataclass(frozen=True, slots=True)
class DivergenceLimits:
    """What the class may cost: the floor, and the quarantines one client may cause."""

    floor: int
    quarantines: int


def divergent_inputs(paths: list[str], directories: list[str]) -> list[tuple[str, Call]]:
    """Requests servers answer differently for reasons that are no attack: methods a service
    does not offer, paths not in normal form, ranges, a directory without its slash."""
    path = next((p for p in paths if p.count("/") == 1 and len(p) > 2), paths[0])
    name = path.lstrip("/")
    inputs = [
        ("options", Call("OPTIONS", path)),
        ("options-star", Call("OPTIONS", "*")),
        ("propfind", Call("PROPFIND", path)),
        ("delete", Call("DELETE", path)),
        ("unknown-method", Call("BREW", path)),
        ("double-slash", Call("GET", f"/{path}")),
        ("percent-encoded", Call("GET", f"/%{ord(name[0]):02x}{name[1:]}")),
        ("dot-segment", Call("GET", f"/x/..{path}")),
        ("trailing-slash", Call("GET", f"{path}/")),
        ("head-range", Call("HEAD", path, headers=(("Range", "bytes=0-0"),))),
        ("unsatisfiable-range", Call("GET", path, headers=(("Range", "bytes=99999999-"),))),
    ]
    inputs += [(f"head-directory{d}", Call("HEAD", d)) for d in directories[:1]]
    return inputs


def _check(reply: Reply) -> str | None:
    """Any answer will do, but a fail-closed one: the divergence cost an answer."""
    return f"the gateway failed it closed ({reply.status})" if reply.refusal else None


async def _floor_watch(drill: Drill, stop: asyncio.Event) -> int:
    """The fewest voters seen while ``stop`` is unset."""
    fewest = 1 << 30
    while not stop.is_set():
        fewest = min(fewest, len((await drill.gw.status())["active"]))
        await asyncio.sleep(_POLL)
    return fewest


async def _case(drill: Drill, attacker: Client, name: str, call: Call, *, count: int,
                limits: DivergenceLimits) -> CaseResult:
    result = CaseResult(name, BENIGN_DIVERGENCE, f"{call.method} {call.target} "
                        f"{' '.join(f'{k}: {v}' for k, v in call.headers)}".strip(), [], True)
    before = await drill.gw.executors()
    clock = time.monotonic()
    stop = asyncio.Event()
    bg = drill.background(stop)
    watch = asyncio.ensure_future(_floor_watch(drill, stop))
    statuses: Counter[int | str] = Counter()
    try:
        for _ in range(count):
            try:
                reply = await attacker.request(call)
            except ClientError as exc:
                statuses["no reply"] += 1
                result.attack.failure(str(exc))
                continue
            statuses[reply.status] += 1
            result.attack.judge(reply, _check(reply), b"")
        await asyncio.sleep(0.5)  # verdicts reach the controller; benign traffic goes on
    finally:
        stop.set()
        result.benign = await bg
        fewest = await watch
    after = await drill.gw.executors()
    quarantines = sum(int(after[n]["counters"]["quarantines"])
                      - int(before[n]["counters"]["quarantines"]) for n in after if n in before)
    result.fired = count
    result.false_alarms = quarantines
    result.suppressed = (result.benign.wrong == 0 and result.benign.failed == 0
                         and result.attack.failed == 0)
    result.detected = fewest >= limits.floor and quarantines <= limits.quarantines
    result.notes.append("answers " + ", ".join(f"{s}x{n}" for s, n in statuses.items())
                        + f"; {quarantines} quarantines; fewest voters {fewest} "
                        f"(floor {limits.floor})")
    result.seconds = time.monotonic() - clock
    return result


async def run_divergence(drill: Drill, inputs: list[tuple[str, Call]], limits: DivergenceLimits,
                         *, quick: bool, log: Callable[[str], None]) -> list[CaseResult]:
    """Every divergent input from one client at a high rate, benign traffic alongside."""
    await drill.settle()
    host, port = drill.gw.serve
    attacker = Client(host, port, timeout=drill.client_timeout, source=ATTACKER)
    results: list[CaseResult] = []
    try:
        for name, call in inputs:
            result = await _case(drill, attacker, name, call, count=40 if quick else 150,
                                 limits=limits)
            results.append(result)
            log(f"  {name}: suppressed={result.suppressed} detected={result.detected} "
                f"benign={result.benign.correct}/{result.benign.total} {result.notes[-1]}")
    finally:
        attacker.close()
    return results
