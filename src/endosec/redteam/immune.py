"""Immune memory: an antigen seen once is met at once when it comes back in another guise.

``recall`` plants an implant in one executor's image (cleansing does not remove it) that
answers any request carrying the trigger header with a secret. The trigger is sent once: the
victim dissents, is quarantined and cleansed, and comes back, still carrying the implant. Then
the trigger comes back ``repeats`` times in requests that look different (other paths, query
strings, headers). Detected: the first antigen became a memory implicating the victim.
Suppressed: none of the later ones reached a vote the victim answered wrongly (it dissented on
none of them) and no reply leaked the secret. Without immune memory the victim answers every
one it is asked while it votes. The phase runs with the deployment's ``immune`` settings and
attestation off: attestation would hold the victim for its changed image, and the case would
prove nothing about memory.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from endosec.config import Config
from endosec.redteam.cases import TRIGGER, Case
from endosec.redteam.client import Call, Client
from endosec.redteam.deploy import GatewayProcess, drill_config, new_deployment
from endosec.redteam.drill import CaseResult, Drill
from endosec.redteam.workload import Workload, send

__all__ = ["IMMUNE", "run_immune"]

IMMUNE = "immune"
_RECALL = Case("recall", IMMUNE,
               {"kind": "exfiltrate-secret", "secret": "SECRET {canary}", "trigger": TRIGGER},
               "an image implant answers a trigger with a secret; the trigger comes back in "
               "other requests after the victim was cleansed", trigger=True, probe="any",
               image=True)
_WARM = 3.0  # seconds of benign traffic before the attack: the self sample


def _variant(base: Call, i: int, rng: random.Random) -> Call:
    """The trigger in a request that looks different from the first one."""
    accept = rng.choice(("*/*", "application/json", "text/html, */*;q=0.8", "text/plain"))
    return Call(base.method, f"{base.target}{'&' if '?' in base.target else '?'}r={i}",
                base.body, ((TRIGGER["header"], TRIGGER["value"]), ("Accept", accept),
                            ("X-Trace", secrets.token_hex(4))))


async def _recall(drill: Drill, repeats: int) -> CaseResult:
    result = CaseResult(_RECALL.name, IMMUNE, _RECALL.description, [], True)
    clock = time.monotonic()
    victim = drill.rng.choice(await drill.settle())
    result.victims = [victim]
    stop = asyncio.Event()
    background = drill.background(stop)
    host, port = drill.gw.serve
    client = Client(host, port, timeout=drill.client_timeout, source=drill.source)
    canary = drill.canary.encode()
    try:
        await asyncio.sleep(_WARM)
        drill.plant(_RECALL, victim)
        since = time.time()
        await send(client, drill.attack_probe(_RECALL), result.attack, canary)
        memory = await _memory(drill, victim, since, limit=10.0)
        result.detected = memory is not None
        await drill.settle()
        learned = time.time()
        for i in range(repeats):
            probe = drill.workload.probe(_RECALL.probe)
            await send(client, type(probe)(_variant(probe.call, i, drill.rng), probe.check),
                       result.attack, canary)
        await asyncio.sleep(0.5)  # stragglers judged, events written
    finally:
        stop.set()
        client.close()
        result.benign = await background
        drill.clear([victim])
    events = drill.gw.events()
    dissents = [e for e in events if e.get("event") == "dissent" and e["ts"] >= learned
                and victim in e.get("dissented", ())]
    matches = [e for e in events if e.get("event") == "immune-match" and e["ts"] >= learned]
    result.fired = repeats
    result.suppressed = result.detected and not dissents and result.attack.canary_seen == 0
    result.notes.append(
        f"{'no memory formed' if memory is None else f'memory {memory}'}; of {repeats} later "
        f"antigens {len(matches)} matched it and the victim answered {len(dissents)} of them "
        f"(recalled {repeats - len(dissents)}/{repeats})")
    result.seconds = time.monotonic() - clock
    return result


async def _memory(drill: Drill, victim: str, since: float, *, limit: float) -> str | None:
    """The memory the first antigen formed, naming the victim, once it is published."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        drill.check_alive()
        for e in drill.gw.events():
            if e.get("event") == "immune-memory" and e["ts"] >= since \
                    and victim in e.get("implicated", ()):
                return str(e["id"])
        await asyncio.sleep(0.2)
    return None


async def run_immune(config: Config, root: Path, new_workload: Callable[[], Workload], *,
                     seed: int, repeats: int = 10) -> tuple[list[CaseResult], bool]:
    """The class on a gateway of its own; returns the results and whether it crashed."""
    dep = new_deployment(root)
    gw = GatewayProcess(dep, drill_config(config, dep, overrides={
        "attest": {"action": "off"}}))
    await gw.start()
    drill = Drill(gw, new_workload(), canary=f"rtm-{random.Random(seed).getrandbits(64):x}",
                  active_size=config.controller.active, read_timeout=config.limits.read_timeout,
                  rng=random.Random(seed))
    try:
        result = await _recall(drill, repeats)
    finally:
        crashed = not gw.alive
        gw.stop()
    return [result], crashed
