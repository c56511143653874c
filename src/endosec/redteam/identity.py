"""Identity: an attacker with a foothold on the host changes what an executor is made of.

* ``tampered-image`` - a file appears in one active executor's image: a dormant implant that the
  implant wrapper would load at its next start, never exercised, so no answer ever differs and
  no vote can see it. Detected: an ``attestation`` event naming the file (a re-measurement of
  the running executor found it); suppressed: the executor quarantined, at L0, and its relaunch
  from the changed image held instead of voting again.

* ``port-squat`` - one active executor frees its listening port to a process outside its
  process group (`endosec.redteam.squat`), which relays every connection to the executor's own
  server: every answer stays right, the executor looks alive, and cleansing its group would not
  stop the squatter. Detected and suppressed: the executor quarantined because its address is
  no longer its own (the health check asks who holds the listening socket).

* ``admission`` - an ``endosec agent`` on loopback, as a gateway would drive one, and what a
  host on the network path could try against its admission: replay a gateway's proof it saw,
  prove with a key of its own, send a gateway's proof with one byte changed, call without a
  session. Suppressed: every one refused while the gateway's own admission passes; detected:
  each refusal logged by the agent with its reason.

The class runs on a gateway of its own whose re-measurements come every ``remeasure_mean``
seconds on average (the deployment's mean is minutes), with the deployment's ``attest.action``:
with ``off`` nothing is measured and the case is neither detected nor suppressed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from endosec.config import Config
from endosec.identity import (
    Identity,
    Initiator,
    Trust,
    Verifier,
    load_identity,
    new_key,
    public_key,
)
from endosec.redteam.cases import Case
from endosec.redteam.deploy import GatewayProcess, drill_config, new_deployment
from endosec.redteam.drill import CaseResult, Drill
from endosec.redteam.workload import Workload
from endosec.runtime.certs import self_signed
from endosec.runtime.remote import pinned
from endosec.runtime.wire import WireError, exchange

__all__ = ["IDENTITY", "run_identity"]

IDENTITY = "identity"
_DORMANT = Case("tampered-image", IDENTITY,
                {"kind": "exfiltrate-secret", "secret": "SECRET {canary}",
                 "trigger": {"header": "X-Never-Sent", "value": "{canary}"}},
                "a dormant implant appears in one executor's image", image=True)

_SQUAT = Case("port-squat", IDENTITY, {"kind": "hand-over-port"},
              "an executor hands its listening port to a relay outside its process group",
              probe="any")


async def _port_squat(drill: Drill, limit: float) -> CaseResult:
    result = CaseResult(_SQUAT.name, IDENTITY, _SQUAT.description, [], True)
    clock, since = time.monotonic(), time.time()
    victim = drill.rng.choice(await drill.settle())
    result.victims = [victim]
    pidfile = drill.gw.dep.logs / f"{victim}.squat.pid"
    drill.plant(_SQUAT, victim)
    stop = asyncio.Event()
    background = drill.background(stop)
    caught: list[dict[str, Any]] = []
    try:
        while time.monotonic() - clock < limit:
            drill.check_alive()
            caught = [e for e in drill.gw.events() if e.get("event") == "quarantine"
                      and e.get("executor") == victim and e["ts"] >= since]
            if caught and pidfile.exists():
                break
            await asyncio.sleep(0.2)
    finally:
        stop.set()
        result.benign = await background
        drill.clear([victim])
        handed = pidfile.stat().st_mtime if pidfile.exists() else None
        _stop_squatter(pidfile)
    result.fired = int(handed is not None)
    result.detected = result.suppressed = handed is not None and bool(caught)
    if result.detected and handed is not None:
        result.time_to_quarantine = float(caught[0]["ts"]) - handed
    result.notes.append(
        "the port was never handed over" if handed is None else
        f"quarantined {result.time_to_quarantine:.1f} s after the hand-over: "
        f"{caught[0].get('reason')}" if caught else f"not caught within {limit:g} s")
    result.seconds = time.monotonic() - clock
    return result


def _stop_squatter(pidfile: Path) -> None:
    with contextlib.suppress(OSError, ValueError):
        os.kill(int(pidfile.read_text()), signal.SIGKILL)
        pidfile.unlink()


async def _tampered_image(drill: Drill, limit: float) -> CaseResult:
    result = CaseResult(_DORMANT.name, IDENTITY, _DORMANT.description, [], True)
    clock, since = time.monotonic(), time.time()
    victim = drill.rng.choice(await drill.settle())
    result.victims = [victim]
    image = drill.gw.dep.images / f"{victim}.json"
    drill.plant(_DORMANT, victim)
    stop = asyncio.Event()
    background = drill.background(stop)
    caught: list[dict[str, Any]] = []
    state: dict[str, Any] = {}
    try:
        while time.monotonic() - clock < limit:
            drill.check_alive()
            caught = [e for e in drill.gw.events() if e.get("event") == "attestation"
                      and e.get("executor") == victim and not e.get("ok") and e["ts"] >= since]
            state = next(e for e in (await drill.gw.status())["executors"]
                         if e["name"] == victim)
            if any(e["when"] == "launch" for e in caught) and state["state"] == "quarantined":
                break  # caught running, and its relaunch from the changed image refused
            await asyncio.sleep(0.2)
    finally:
        stop.set()
        result.benign = await background
        drill.clear([victim])
    named = [e for e in caught if any(f.startswith("config:") and f.endswith(f"/{image.name}")
                                      for f in e.get("files", ()))]
    result.fired = 1
    result.detected = bool(named)
    result.suppressed = (state.get("state") == "quarantined" and state.get("level") == "L0"
                         and any(e["when"] == "launch" for e in named))
    if named:
        result.time_to_quarantine = float(named[0]["ts"]) - since
    result.notes.append(
        f"{len(named)} attestation event(s) naming the implant; the victim is "
        f"{state.get('state')} at {state.get('level')}" if named else
        f"not caught within {limit:g} s; the victim is {state.get('state')} at "
        f"{state.get('level')}")
    result.seconds = time.monotonic() - clock
    return result


_ATTEMPTS = ("replayed-nonce", "unknown-key", "forged-proof", "no-session")


async def _admission(config: Config, root: Path) -> CaseResult:
    result = CaseResult("admission", IDENTITY, "replayed, foreign, forged and missing proofs "
                        "against an agent's admission", ["agent"], True)
    clock = time.monotonic()
    root.mkdir(parents=True, exist_ok=True)
    self_signed(root / "tls", ("127.0.0.1",))
    for name in ("gateway", "intruder"):
        new_key(root / f"{name}.pem")
    gateway, intruder = (load_identity(root / f"{n}.pem", None) for n in ("gateway", "intruder"))
    agent_key = new_key(root / "agent.pem")
    executor = next(e for e in config.executors if e.argv is not None)
    (root / "agent.yaml").write_text(yaml.safe_dump({
        "listen": "127.0.0.1:0", "tls": {"cert": "tls/cert.pem", "key": "tls/key.pem"},
        "identity": "agent.pem", "keys": [gateway.public.hex()],
        "executors": [executor.model_dump(mode="json", exclude_none=True)]}))
    log = root / "agent.stderr"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "endosec.cli", "agent", "--config", str(root / "agent.yaml"),
             "--state-dir", str(root / "state")],
            stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)
        host, _, port = line.split()[3].removeprefix("https://").rpartition(":")
        refused = await _attempts((host, int(port)), pinned(str(root / "tls" / "cert.pem")),
                                  gateway, intruder, public_key(agent_key))
    except (ValueError, IndexError, OSError, WireError, TimeoutError) as exc:
        result.notes.append(f"the agent could not be driven: {exc}")
        refused = {}
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 20)
    logged = {e.get("reason") for e in map(_json_line, log.read_text().splitlines())
              if e and e.get("event") == "admission-refused"}
    result.fired = len(_ATTEMPTS)
    result.suppressed = bool(refused) and all(refused.values())
    result.detected = result.suppressed and set(_ATTEMPTS) <= logged
    result.notes.append(", ".join(f"{a}: {'refused' if ok else 'ACCEPTED'}"
                                  for a, ok in refused.items()) + f"; logged: "
                        f"{', '.join(sorted(r for r in logged if r)) or 'nothing'}")
    result.seconds = time.monotonic() - clock
    return result


def _json_line(line: str) -> dict[str, Any] | None:
    with contextlib.suppress(ValueError):
        value = json.loads(line)
        return value if isinstance(value, dict) else None
    return None


async def _attempts(address: tuple[str, int], tls: ssl.SSLContext, gateway: Identity,
                    intruder: Identity, agent: bytes) -> dict[str, bool]:
    """Each attempt -> whether the agent refused it; `WireError` if the gateway's own
    admission does not pass (the drill then cannot tell anything)."""

    async def post(path: str, message: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        reply = await exchange(*address, "POST", path, body=json.dumps(message).encode(),
                               tls=tls)
        return reply.status, json.loads(reply.body or b"{}")

    async def prove(who: Identity) -> dict[str, Any] | None:
        """A proof message for the agent's nonce; None when the agent refuses the hello."""
        me = Initiator(who, Verifier(who.public, Trust(frozenset({agent})), role="agent"))
        status, answer = await post("/admission/nonce", me.hello(time.time()))
        if status != 200:
            return None
        message = me.proof(answer, time.time())
        if not isinstance(message, dict):
            raise WireError(f"the agent's answer to a hello is not a proof: {message}")
        return message

    async def refused(message: dict[str, Any] | None) -> bool:
        return message is None or (await post("/admission/proof", message))[0] != 200

    seen, forged = await prove(gateway), await prove(gateway)
    if seen is None or forged is None or await refused(seen):
        raise WireError("the gateway's own admission did not pass")
    forged["proof"] = {**forged["proof"], "response": _flip(forged["proof"]["response"])}
    out = {"replayed-nonce": await refused(seen), "unknown-key": await refused(
        await prove(intruder)), "forged-proof": await refused(forged)}
    reply = await exchange(*address, "GET", "/executors", tls=tls)
    out["no-session"] = reply.status == 401
    return out


def _flip(hex_text: str) -> str:
    """The hex with its first digit changed."""
    return ("1" if hex_text[0] == "0" else "0") + hex_text[1:]


async def run_identity(config: Config, root: Path, new_workload: Callable[[], Workload], *,
                       seed: int, remeasure_mean: float) -> tuple[list[CaseResult], bool]:
    """Each case on a fresh gateway of its own (each leaves its victim quarantined or on
    probation); returns the results and whether a gateway crashed."""
    cases: list[Callable[[Drill], Awaitable[CaseResult]]] = [
        lambda drill: _port_squat(drill, limit=30.0),
        lambda drill: _tampered_image(drill, limit=20 * remeasure_mean + 10)]
    results = [await _admission(config, root / "admission")]
    for i, case in enumerate(cases):
        dep = new_deployment(root / str(i))
        gw = GatewayProcess(dep, drill_config(config, dep, overrides={
            "attest": {"remeasure_mean": remeasure_mean}}))
        await gw.start()
        drill = Drill(gw, new_workload(), canary=f"rti-{random.Random(seed).getrandbits(64):x}",
                      active_size=config.controller.active,
                      read_timeout=config.limits.read_timeout, rng=random.Random(seed + i))
        try:
            results.append(await case(drill))
        finally:
            crashed = not gw.alive
            gw.stop()
        if crashed:
            return results, True
    return results, False
