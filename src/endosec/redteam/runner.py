"""The whole suite: benign baseline, implant drills, input-agent abuse, incremental penetration.

Everything runs on loopback against gateways this module starts (``endosec run`` subprocesses
on a rewritten copy of the user's configuration) and stops again; every phase is bounded in
requests and time.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from endosec.cluster.store import EMBEDDED
from endosec.config import Config
from endosec.redteam.cases import FAULTS, catalogue
from endosec.redteam.crash import GATEWAY_CRASH, run_gateway_crash
from endosec.redteam.deploy import DRILL_BOUNDARY, GatewayProcess, drill_config, new_deployment
from endosec.redteam.divergence import (
    BENIGN_DIVERGENCE,
    DivergenceLimits,
    divergent_inputs,
    run_divergence,
)
from endosec.redteam.drill import CaseResult, Drill, DrillError
from endosec.redteam.evidence import EVIDENCE, tail_cut
from endosec.redteam.identity import IDENTITY, run_identity
from endosec.redteam.immune import IMMUNE, run_immune
from endosec.redteam.incremental import IncrementalParams, run_incremental
from endosec.redteam.inputagent import run_input_agent
from endosec.redteam.recon import RECONNAISSANCE, run_reconnaissance
from endosec.redteam.report import Benign, Requirements, build_report
from endosec.redteam.soak import SoakOptions, run_soak
from endosec.redteam.workload import NotesWorkload, StaticWorkload, Workload, drive

__all__ = ["SuiteOptions", "make_workload", "run_suite"]

Log = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class SuiteOptions:
    quick: bool = False
    benign_requests: int = 10_000
    seed: int = 1
    workload: str = "auto"
    docroot: Path | None = None
    episodes: int | None = None
    incremental: bool = True
    only: tuple[str, ...] = ()  # case names or classes to run (empty: all)
    soak: SoakOptions | None = None  # run a soak instead of the catalogue


def _docroot(config: Config) -> Path | None:
    for e in config.executors:
        argv = list(e.argv or ())
        if "--docroot" in argv[:-1]:
            path = Path(argv[argv.index("--docroot") + 1])
            return path if path.is_absolute() else (e.cwd or Path.cwd()) / path
    return None


def make_workload(config: Config, opts: SuiteOptions) -> Callable[[], Workload]:
    """A factory of fresh workloads (each gateway starts with pristine executors)."""
    kind = opts.workload
    docroot = opts.docroot or _docroot(config)
    if kind == "auto":
        kind = "static" if docroot is not None else "notes"
    if kind == "static":
        if docroot is None:
            raise ValueError("the static workload needs --docroot (none found in the config)")
        root = docroot
        return lambda: StaticWorkload(root)
    if kind == "notes":
        return NotesWorkload
    raise ValueError(f"unknown workload {kind!r}")


async def _benign(drill: Drill, requests: int, seed: int) -> Benign:
    before = await drill.gw.executors()
    refusals = sum(1 for e in drill.gw.events() if e.get("event") == "no-quorum")
    host, port = drill.gw.serve
    started = time.monotonic()
    tally = await drive(host, port, drill.workload, requests=requests, concurrency=8,
                        rng=random.Random(seed), timeout=drill.client_timeout)
    seconds = time.monotonic() - started
    await asyncio.sleep(0.5)  # stragglers are judged after the reply
    after = await drill.gw.executors()

    def delta(counter: str) -> int:
        return sum(after[n]["counters"][counter] - before[n]["counters"][counter]
                   for n in after)

    no_quorum = sum(1 for e in drill.gw.events() if e.get("event") == "no-quorum") - refusals
    return Benign(tally.total, tally.correct, delta("dissents"), delta("quarantines"),
                  no_quorum, seconds, tuple(tally.problems[:5]))


async def _main_phase(config: Config, root: Path, opts: SuiteOptions,
                      new_workload: Callable[[], Workload], log: Log
                      ) -> tuple[Benign | None, list[CaseResult], bool, str]:
    dep = new_deployment(root / "main")
    gw = GatewayProcess(dep, drill_config(config, dep))
    rng = random.Random(opts.seed)
    canary = f"rtc-{secrets.token_hex(8)}"
    benign: Benign | None = None
    results: list[CaseResult] = []
    crashed, detail = False, ""
    await gw.start()
    log(f"gateway at http://{gw.serve[0]}:{gw.serve[1]} (executors: {', '.join(gw.names)})")
    drill = Drill(gw, new_workload(), canary=canary, active_size=config.controller.active,
                  read_timeout=config.limits.read_timeout, rng=rng,
                  min_case_seconds=1.0 if opts.quick else 2.5)
    try:
        await drill.settle()
        requests = min(opts.benign_requests, 2000) if opts.quick else opts.benign_requests
        log(f"benign traffic: {requests} requests")
        benign = await _benign(drill, requests, opts.seed)
        log(f"  {benign.correct}/{benign.requests} correct, {benign.false_alarms} false alarms")
        for case in catalogue(config.limits.read_timeout):
            if opts.only and case.name not in opts.only and case.cls not in opts.only:
                continue
            result = await drill.run_case(case)
            results.append(result)
            log(f"{case.cls}/{case.name}: suppressed={result.suppressed} "
                f"detected={result.detected} fired={result.fired} "
                f"benign={result.benign.correct}/{result.benign.total} "
                f"({result.seconds:.1f} s){' ' + '; '.join(result.notes) if result.notes else ''}")
        if not opts.only or BENIGN_DIVERGENCE in opts.only:
            log(BENIGN_DIVERGENCE)
            w = drill.workload
            results += await run_divergence(
                drill, divergent_inputs(w.paths, w.directories),
                DivergenceLimits(config.controller.effective_floor,
                                 config.attribution.quarantines),
                quick=opts.quick, log=log)
        if not opts.only or RECONNAISSANCE in opts.only:
            log(RECONNAISSANCE)
            for r in await run_reconnaissance(drill, quick=opts.quick,
                                              scan_errors=config.threat.scan_errors):
                results.append(r)
                log(f"  {r.name}: suppressed={r.suppressed} detected={r.detected} {r.notes[-1]}")
        if not opts.only or "input-agent" in opts.only:
            log("input-agent abuse")
            results += await run_input_agent(drill, config.limits, quick=opts.quick,
                                             seed=opts.seed, log=log)
        if not opts.only or GATEWAY_CRASH in opts.only or FAULTS in opts.only:
            # Last: it kills this gateway, and its control run deletes the durable state.
            if drill.workload.name != "notes":
                log(f"{GATEWAY_CRASH}: skipped (the {drill.workload.name} workload has no "
                    "writes)")
            else:
                result = await run_gateway_crash(drill)
                results.append(result)
                log(f"{FAULTS}/{GATEWAY_CRASH}: lost_writes={result.lost_writes} "
                    f"({'; '.join(result.notes)}) ({result.seconds:.1f} s)")
    except DrillError as exc:
        detail = str(exc)
        log(f"drill stopped: {detail}")
    finally:
        if not gw.alive:
            crashed = True
            detail = detail or "the gateway process exited during the drill"
        gw.stop()
    return benign, results, crashed, detail


#: Mean seconds between re-measurements in the identity phase (a deployment's are minutes).
_REMEASURE = 1.0

#: The lab's threat-aware rotation: footholds dissent twice a second each; the threat level
#: (half-life 2 s, scale 1) soon nears 1 and the mean wait between rotations falls from 1 s
#: towards 0.4 s.
_THREAT_AWARE: dict[str, Any] = {"dissent": 2.0, "rotate_min": 0.4, "threat_half_life": 2.0,
                                 "threat_scale": 1.0, "quarantine_after": 1_000_000}


async def _incremental_phase(config: Config, root: Path, opts: SuiteOptions,
                             new_workload: Callable[[], Workload], log: Log
                             ) -> dict[str, Any]:
    """The incremental attacker against a gateway with spares rotating at the lab's pace (1 s;
    the attacker's is 0.5/s), whatever the deployment's: dormant footholds at a fixed rate,
    then noisy ones under threat-aware rotation."""
    c = config.controller
    episodes = opts.episodes or (4 if opts.quick else 10)
    fixed = IncrementalParams(n=c.active, k=c.active // 2 + 1, lam=0.5, rotate_every=1.0,
                              horizon=4.0, episodes=episodes, policy=config.scheduler.policy)
    out = await _incremental_run(config, root / "incremental", opts, new_workload, fixed)
    log(f"incremental: majority compromised in {out['majority_compromised']}/{episodes} "
        f"episodes; predicted {out['predicted_markov']:.2f} (Markov), "
        f"{out['predicted_faithful']:.2f} (faithful)")
    if not out["crashed"]:
        aware = replace(fixed, **_THREAT_AWARE)
        out["threat_aware"] = await _incremental_run(config, root / "incremental-threat", opts,
                                                     new_workload, aware)
        t = out["threat_aware"]
        low, high = t["observed_ci"]
        log(f"incremental, threat-aware: majority compromised in {t['majority_compromised']}/"
            f"{episodes} episodes [{low:.2f}, {high:.2f}]; predicted {t['predicted_faithful']:.2f}"
            f" (faithful); {t['rotations_per_second']} rotations/s against "
            f"{out['rotations_per_second']} at a fixed rate")
        out["crashed"] = t["crashed"]
    return out


async def _incremental_run(config: Config, root: Path, opts: SuiteOptions,
                           new_workload: Callable[[], Workload], params: IncrementalParams
                           ) -> dict[str, Any]:
    """One gateway with spares, played ``params.episodes`` episodes against."""
    duplicate = len(config.executors) <= params.n
    dep = new_deployment(root)
    data = drill_config(config, dep, duplicate=duplicate, overrides={
        "controller": {"rotate_every": params.rotate_every, "rotate_min": params.rotate_min,
                       "quarantine_after": params.quarantine_after, "cleanse_on_rotate": True,
                       "defer_above": None},
        "threat": {"half_life": params.threat_half_life, "scale": params.threat_scale,
                   "isolate_at": None},
        # Only rotation removes a foothold here, as in the faithful simulation it is compared
        # with: dissent costs no Proof-of-Trust points, so none falls to probation for it; and
        # no immune memory of the footholds' trigger keeps them from dissenting (the
        # simulation knows none, and it is the dissent that moves threat-aware rotation).
        "trust": {"penalty": 0.0}, "immune": {"enabled": False}})
    gw = GatewayProcess(dep, data)
    await gw.start()
    drill = Drill(gw, new_workload(), canary="", active_size=params.n,
                  read_timeout=config.limits.read_timeout, rng=random.Random(opts.seed))
    stop = asyncio.Event()
    try:
        await drill.settle_active()
        bg = drill.background(stop)
        try:
            profiles = [e.as_profile() for e in config.executors]
            if duplicate:
                profiles += [type(p)(f"{p.name}-b", p.components) for p in profiles]
            result = await run_incremental(drill, params, profiles, seed=opts.seed)
        finally:
            stop.set()
            tally = await bg
        crashed = not gw.alive
    finally:
        gw.stop()
    out = result.as_dict()
    out["benign"] = {"requests": tally.total, "correct": tally.correct}
    out["crashed"] = crashed
    out["note"] = (
        ("The pool was doubled for this phase (a second instance NAME-b of every executor, "
         "same profile) so that rotation has spares. " if duplicate else "")
        + ("Dormant footholds give the arbiter nothing to see, so only rotation removes them "
           "(detected is 0 by design). " if not params.dissent else
           "Footholds dissent but are never quarantined (quarantine_after out of reach, and "
           "dissent costs no trust points): threat-aware rotation alone removes them. ")
        + "The quantifier assumes instant cleansing; live cleansing and journal replay take "
        "time.")
    return out


async def _soak_phase(config: Config, root: Path, opts: SoakOptions, workload: Workload, *,
                      seed: int, log: Log) -> tuple[dict[str, Any] | None, bool, str]:
    dep = new_deployment(root / "soak")
    gw = GatewayProcess(dep, drill_config(config, dep))
    soak, crashed, detail = None, False, ""
    await gw.start()
    log(f"gateway at http://{gw.serve[0]}:{gw.serve[1]} (executors: {', '.join(gw.names)})")
    drill = Drill(gw, workload, canary=f"rtc-{secrets.token_hex(8)}",
                  active_size=config.controller.active,
                  read_timeout=config.limits.read_timeout, rng=random.Random(seed))
    try:
        log(f"soak: {opts.requests} requests, a fault every {opts.fault_every:g} s or more")
        soak = await run_soak(drill, opts, seed=seed, log=log)
    except DrillError as exc:
        detail = str(exc)
        log(f"soak stopped: {detail}")
    finally:
        if not gw.alive:
            crashed = True
            detail = detail or "the gateway process exited during the soak"
        gw.stop()
    return soak, crashed, detail


async def run_suite(config: Config, config_name: str, report_dir: Path, opts: SuiteOptions, *,
                    log: Log, requirements: Requirements | None = None) -> dict[str, Any]:
    """Run every class (or the soak) and return the report (not yet written)."""
    root = report_dir / "work"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    new_workload = make_workload(config, opts)
    started = time.monotonic()
    if opts.soak is not None:
        soak, crashed, detail = await _soak_phase(config, root, opts.soak, new_workload(),
                                                  seed=opts.seed, log=log)
        return build_report(config=config_name, workload=new_workload().name, quick=False,
                            seconds=time.monotonic() - started, benign=None, results=(),
                            incremental=None, crashed=crashed, detail=detail,
                            requirements=requirements or Requirements(), soak=soak,
                            mode="soak")
    benign, results, crashed, detail = await _main_phase(config, root, opts, new_workload, log)
    for rewrite in (False, True):
        name = "tail-rewrite" if rewrite else "tail-cut"
        if crashed or (opts.only and EVIDENCE not in opts.only and name not in opts.only):
            continue
        cut = await tail_cut(root / "main" / "state", root / EVIDENCE / name,
                             store_url=EMBEDDED, boundary=DRILL_BOUNDARY, rewrite=rewrite)
        log(f"{EVIDENCE}/{cut.name}: suppressed={cut.suppressed} detected={cut.detected} "
            f"{cut.notes[-1]}")
        results.append(cut)
    if not crashed and (not opts.only or IDENTITY in opts.only or "tampered-image" in opts.only):
        log(IDENTITY)
        found, crashed = await run_identity(config, root / IDENTITY, new_workload,
                                            seed=opts.seed, remeasure_mean=_REMEASURE)
        for r in found:
            log(f"  {r.name}: suppressed={r.suppressed} detected={r.detected} {r.notes[-1]}")
        results += found
        if crashed:
            detail = "the gateway process exited during the identity phase"
    if not crashed and config.protocol == "http" and (not opts.only or IMMUNE in opts.only
                                                      or "recall" in opts.only):
        log(IMMUNE)
        found, crashed = await run_immune(config, root / IMMUNE, new_workload, seed=opts.seed)
        for r in found:
            log(f"  {r.name}: suppressed={r.suppressed} detected={r.detected} {r.notes[-1]}")
        results += found
        if crashed:
            detail = "the gateway process exited during the immune phase"
    incremental = None
    if opts.incremental and not crashed and (not opts.only or "incremental" in opts.only):
        incremental = await _incremental_phase(config, root, opts, new_workload, log)
        if incremental["crashed"]:
            crashed, detail = True, "the gateway process exited during the incremental phase"
    req = requirements or Requirements(
        min_benign_requests=min(opts.benign_requests, 2000) if opts.quick
        else opts.benign_requests,
        full_classes=Requirements().full_classes
        + ((IMMUNE,) if config.protocol == "http" else ()))
    return build_report(config=config_name, workload=new_workload().name, quick=opts.quick,
                        seconds=time.monotonic() - started, benign=benign, results=results,
                        incremental=incremental, crashed=crashed, detail=detail,
                        requirements=req)
