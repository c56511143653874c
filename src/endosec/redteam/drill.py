"""Running implant drills against a live gateway: plant, exercise, observe, clean up.

One `Drill` owns a running `GatewayProcess`, the benign `Workload` and the run's canary. Each
case waits until the pool is settled, plants the implant, sends probes while light benign
traffic runs, waits for the controller to quarantine the victims, removes what is left of the
implant, waits until the pool is whole again, and compares the controller's counters before
and after.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from endosec.redteam.cases import Case, fill
from endosec.redteam.client import Call, Client
from endosec.redteam.deploy import GatewayProcess, implant_path
from endosec.redteam.workload import Probe, Tally, Workload, drive, send
from endosec.tasks import spawn

__all__ = ["VERDICT_EVENTS", "CaseResult", "Drill", "DrillError", "alarm_notes"]

_SETTLED = frozenset({"active", "spare"})
_POLL = 0.1
# The events of a verdict that was not a clean agreement (the arbiter's outcomes).
VERDICT_EVENTS = frozenset({"dissent", "no-quorum", "all-failed"})


class DrillError(RuntimeError):
    """The drill could not go on (the gateway died, or the pool never settled)."""


@dataclass(slots=True)
class CaseResult:
    """What one case did and what the gateway made of it."""

    name: str
    cls: str
    description: str
    victims: list[str]
    expected_suppressible: bool
    fired: int = 0
    suppressed: bool = False
    detected: bool = False
    false_alarms: int = 0
    seconds: float = 0.0
    benign: Tally = field(default_factory=Tally)
    attack: Tally = field(default_factory=Tally)
    notes: list[str] = field(default_factory=list)
    # A gateway crash: writes acknowledged before it, and those not found afterwards (with
    # the durable state kept, and deleted before the restart).
    acknowledged_writes: int | None = None
    lost_writes: int | None = None
    lost_writes_without_journal: int | None = None
    # From the implant's first act to the victim's quarantine (a detected case).
    time_to_quarantine: float | None = None
    # Behaviour alerts naming executors without an implant.
    false_warnings: int = 0

    def as_dict(self) -> dict[str, Any]:
        out = {
            "name": self.name, "class": self.cls, "description": self.description,
            "victims": self.victims, "expected_suppressible": self.expected_suppressible,
            "fired": self.fired, "suppressed": self.suppressed, "detected": self.detected,
            "false_alarms": self.false_alarms, "seconds": round(self.seconds, 2),
            "benign": _tally(self.benign), "attack": _tally(self.attack), "notes": self.notes,
        }
        if self.time_to_quarantine is not None:
            out["time_to_quarantine"] = round(self.time_to_quarantine, 3)
        if self.cls == "covert":
            out["false_warnings"] = self.false_warnings
        if self.lost_writes is not None:
            out.update(acknowledged_writes=self.acknowledged_writes,
                       lost_writes=self.lost_writes,
                       lost_writes_without_journal=self.lost_writes_without_journal)
        return out


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _tally(t: Tally) -> dict[str, Any]:
    return {"requests": t.total, "correct": t.correct, "wrong": t.wrong, "failed": t.failed,
            "canary_seen": t.canary_seen, "availability": t.availability,
            "problems": t.problems[:5]}


def _count(executors: dict[str, dict[str, Any]], name: str, counter: str) -> int:
    return int(executors[name]["counters"][counter])


def alarm_notes(events: list[dict[str, Any]], honest: list[str], since: float) -> list[str]:
    """What each verdict since ``since`` that counted against an executor of ``honest`` said,
    so a false alarm in a report explains itself (dissent a responsible client caused does not
    count; a failure does)."""
    notes = []
    for e in events:
        if e.get("event") not in VERDICT_EVENTS or e["ts"] < since:
            continue
        dissented = [] if e.get("attributed") else e.get("dissented", [])
        for name in honest:
            if name in e.get("failed", []):
                why = f"failed ({e.get('errors', {}).get(name, 'no detail')})"
            elif name in dissented:
                why = f"dissented (agreed: {', '.join(e.get('agreed', [])) or 'none'})"
            else:
                continue
            notes.append(f"{name} {why} on {e.get('method')} {e.get('path')}: {e['event']}")
    return notes


class Drill:
    """Drills against one running gateway."""

    def __init__(self, gw: GatewayProcess, workload: Workload, *, canary: str,
                 active_size: int, read_timeout: float, rng: random.Random,
                 min_case_seconds: float = 0.0) -> None:
        self.gw = gw
        self.min_case_seconds = min_case_seconds
        self.workload = workload
        self.canary = canary
        self.active_size = active_size
        self.read_timeout = read_timeout
        self.rng = rng
        self.client_timeout = max(20.0, 4 * read_timeout)
        self.turn = 0

    # -- the pool ---------------------------------------------------------------------------

    def check_alive(self) -> None:
        if not self.gw.alive:
            raise DrillError("the gateway process died")

    async def settle(self, timeout: float = 120.0) -> list[str]:
        """Wait until the active set is full and nothing is quarantined or being cleansed."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            status = await self.gw.status()
            states = {e["name"]: e["state"] for e in status["executors"]}
            active = list(status["active"])
            if len(active) >= self.active_size and set(states.values()) <= _SETTLED:
                return active
            if time.monotonic() > deadline:
                raise DrillError(f"the pool did not settle within {timeout:g} s: {states}")
            await asyncio.sleep(_POLL)

    async def settle_active(self, timeout: float = 60.0) -> list[str]:
        """Wait only until the active set is full (rotation may keep others cleansing)."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            status = await self.gw.status()
            states = {e["name"]: e["state"] for e in status["executors"]}
            active = [v for v in status["active"] if states.get(v) == "active"]
            if len(active) >= self.active_size:
                return active
            if time.monotonic() > deadline:
                raise DrillError(f"the active set did not fill within {timeout:g} s: {states}")
            await asyncio.sleep(_POLL)

    def clear(self, names: list[str]) -> None:
        """Remove every implant the drill may have left (scratch and image)."""
        for name in names:
            for path in (implant_path(self.gw.dep, name), self.gw.dep.images / f"{name}.json"):
                path.unlink(missing_ok=True)

    def plant(self, case: Case, name: str, allies: Sequence[str] = ()) -> None:
        """Plant ``case``'s implant in ``name``; ``allies``: every executor the attacker holds
        (an informed implant acts when they are a majority of the active set)."""
        body = fill(case.implant, canary=self.canary, field=self.workload.json_field[1],
                    json_path=self.workload.json_field[0],
                    admin="{}:{}".format(*self.gw.admin), allies=",".join(allies or [name]))
        path = (self.gw.dep.images / f"{name}.json" if case.image
                else implant_path(self.gw.dep, name))
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(body))
        tmp.replace(path)  # appears whole: the wrapper never reads half an implant

    def _time_to_quarantine(self, victims: list[str], since: float) -> float | None:
        """From the first act of an implant to the last victim's quarantine."""
        caught = {e["executor"]: e["ts"] for e in self.gw.events()
                  if e.get("event") == "quarantine" and e.get("executor") in victims
                  and e["ts"] >= since}
        acts = [e["ts"] for e in self._acts(victims, since)]
        if not acts or set(caught) != set(victims):
            return None
        return float(max(caught.values()) - min(acts))

    def fired(self, names: list[str], since: float) -> int:
        return sum(1 for e in self._acts(names, since)
                   if e.get("changed", True) and e["kind"] != "record")

    def _acts(self, names: list[str], since: float) -> list[dict[str, Any]]:
        """What the implants of ``names`` logged since ``since``."""
        out = []
        for name in names:
            for line in _lines(self.gw.dep.logs / f"{name}.jsonl"):
                entry = json.loads(line)
                if entry["ts"] >= since:
                    out.append(entry)
        return out

    # -- traffic ----------------------------------------------------------------------------

    @property
    def source(self) -> str:
        """The loopback address this case's clients connect from: each case is another
        client, as separate attacks are (the gateway holds a client responsible for repeated
        dissent, and one case must not be held for the one before)."""
        return f"127.0.2.{self.turn % 250 + 1}"

    def background(self, stop: asyncio.Event) -> asyncio.Task[Tally]:
        """Light benign traffic until ``stop`` is set."""
        host, port = self.gw.serve
        return spawn(drive(host, port, self.workload, requests=None, concurrency=2,
                           rng=random.Random(self.rng.random()), canary=self.canary.encode(),
                           stop=stop, timeout=self.client_timeout, pause=0.01,
                           sources=(self.source,)),
                     name="endosec-redteam-background")

    def attack_probe(self, case: Case) -> Probe:
        probe = self.workload.probe(case.probe)
        if case.trigger:
            trig = case.implant["trigger"]
            call = Call(probe.call.method, probe.call.target, probe.call.body,
                        (*probe.call.headers, (trig["header"], trig["value"])))
            probe = Probe(call, probe.check)
        return probe

    # -- one case ---------------------------------------------------------------------------

    def _victims(self, case: Case, active: list[str]) -> list[str]:
        n = {"one": 1, "majority": len(active) // 2 + 1, "all": len(active)}[case.victims]
        start = self.turn % len(active)
        self.turn += 1
        ring = active[start:] + active[:start]
        return sorted(ring[:n])

    async def run_case(self, case: Case) -> CaseResult:
        active = await self.settle()
        names = [e["name"] for e in (await self.gw.status())["executors"]]
        self.clear(names)
        victims = self._victims(case, active)
        result = CaseResult(case.name, case.cls, case.description, victims,
                            case.expected_suppressible)
        before = await self.gw.executors()
        started, clock = time.time(), time.monotonic()
        stop = asyncio.Event()
        bg = self.background(stop)
        try:
            for name in victims:
                self.plant(case, name, victims)
            await self._probe(case, result)
            result.detected = await self._await_quarantine(case, victims, before)
            self.clear(names)
            await self.settle()
            # Benign traffic runs long enough for the availability figure to mean something.
            await asyncio.sleep(max(0.0, clock + self.min_case_seconds - time.monotonic()))
        finally:
            stop.set()
            result.benign = await bg
            self.clear(names)
        after = await self.gw.executors()
        result.fired = self.fired(victims, started)
        looks = [e["learned"] for e in self._acts(victims, started) if "learned" in e]
        if looks:
            result.notes.append(f"the implant read the active set before {sum(looks)} of its "
                                f"{len(looks)} acts")
        if result.detected:
            result.time_to_quarantine = self._time_to_quarantine(victims, started)
        honest = [n for n in names if n not in victims]
        warned = [e["executor"] for e in self.gw.events() if e.get("event") == "behaviour"
                  and e.get("executor") in honest and e["ts"] >= started]
        result.false_warnings = len(warned)
        if warned:
            result.notes.append(f"behaviour alerts named executors without an implant: "
                                f"{', '.join(sorted(set(warned)))}")
        result.false_alarms = sum(
            _count(after, n, c) - _count(before, n, c)
            for n in honest for c in ("dissents", "quarantines"))
        seen = result.attack.wrong + result.benign.wrong
        result.suppressed = seen == 0 and result.fired > 0
        if result.fired == 0 and case.implant["kind"] != "never-healthy":
            result.notes.append("the implant never acted: the case proves nothing")
            result.detected = False
        if not result.suppressed and result.fired:
            result.notes.append(f"{seen} replies carried the attacker's output")
        if result.false_alarms:
            result.notes.extend(alarm_notes(self.gw.events(), honest, started))
        quarantined = [n for n in honest
                       if _count(after, n, "quarantines") > _count(before, n, "quarantines")]
        if quarantined:
            result.notes.append(f"the arbiter quarantined executors without an implant: "
                                f"{', '.join(quarantined)}")
        result.seconds = time.monotonic() - clock
        return result

    async def _probe(self, case: Case, result: CaseResult) -> None:
        host, port = self.gw.serve
        client = Client(host, port, timeout=self.client_timeout, source=self.source)
        canary = self.canary.encode()
        try:
            for _ in range(case.probes):
                await send(client, self.attack_probe(case), result.attack, canary)
                await asyncio.sleep(0.01)
        finally:
            client.close()

    async def _await_quarantine(self, case: Case, victims: list[str],
                                before: dict[str, dict[str, Any]]) -> bool:
        """Wait until every victim was quarantined; an image implant also until its cleansing
        failed, after which the image is repaired (the implant removed)."""
        health = 10.0
        limit = self.read_timeout * 2 + (60.0 if case.image else 8.0) + health
        if case.expected_suppressible is False:
            limit = 3.0  # nothing to wait for: let the arbiter act on traffic for a while
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            self.check_alive()
            now = await self.gw.executors()
            done = all(_count(now, v, "quarantines") > _count(before, v, "quarantines")
                       for v in victims)
            if done and case.image:
                done = any(e.get("event") == "cleanse-failed" and e.get("executor") in victims
                           for e in self.gw.events())
            if done and case.expected_suppressible:
                return True
            await asyncio.sleep(_POLL)
        now = await self.gw.executors()
        return all(_count(now, v, "quarantines") > _count(before, v, "quarantines")
                   for v in victims)
