"""The drill's findings: per-class figures, the required-figure verdict, JSON and Markdown.

``report.json`` is a stable interface: ``classes`` maps each class name to ``cases``,
``suppressed``, ``detected``, ``availability``, ``false_alarms`` (a rate per benign request)
and ``expected_suppressible``; ``cases``, ``benign``, ``incremental`` and ``verdict`` give
the detail behind them (the gateway-crash case adds ``acknowledged_writes``, ``lost_writes``
and ``lost_writes_without_journal``). A soak run (``mode`` "soak") has ``soak`` instead.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from endosec.redteam.cases import CLASSES, DIFFERENTIAL, FAULTS
from endosec.redteam.divergence import BENIGN_DIVERGENCE
from endosec.redteam.drill import CaseResult
from endosec.redteam.evidence import EVIDENCE
from endosec.redteam.identity import IDENTITY
from endosec.redteam.recon import RECONNAISSANCE

__all__ = ["Benign", "Requirements", "build_report", "render_markdown", "soak_checks",
           "soak_table", "summary_table", "write_report"]

WRAPPER_NOTE = ("Every executor ran under the implant wrapper (python -m "
                "endosec.redteam.implant): the same executor and profile behind a loopback "
                "proxy that applies planted implants; nothing else was changed.")


@dataclass(frozen=True, slots=True)
class Benign:
    """The benign-only phase: traffic with no attack running."""

    requests: int
    correct: int
    dissents: int
    quarantines: int
    no_quorum: int
    seconds: float
    problems: tuple[str, ...] = ()

    @property
    def false_alarms(self) -> int:
        return self.dissents + self.quarantines + self.no_quorum


@dataclass(frozen=True, slots=True)
class Requirements:
    """The figures a run must reach to pass."""

    min_benign_requests: int = 10_000
    min_availability: float = 0.999
    availability_classes: tuple[str, ...] = (DIFFERENTIAL, FAULTS, BENIGN_DIVERGENCE)
    full_classes: tuple[str, ...] = (DIFFERENTIAL, BENIGN_DIVERGENCE, RECONNAISSANCE, IDENTITY,
                                     EVIDENCE)


@dataclass(slots=True)
class _Class:
    cases: int = 0
    suppressed: int = 0
    detected: int = 0
    correct: int = 0
    requests: int = 0
    alarms: int = 0
    expected: list[bool] = field(default_factory=list)
    caught_after: list[float] = field(default_factory=list)  # times to quarantine

    def as_dict(self) -> dict[str, Any]:
        slowest = {"time_to_quarantine_max": round(max(self.caught_after), 3)} \
            if self.caught_after else {}
        return {**slowest,
            "cases": self.cases, "suppressed": self.suppressed, "detected": self.detected,
            "availability": self.correct / self.requests if self.requests else 1.0,
            "false_alarms": self.alarms / self.requests if self.requests else 0.0,
            "expected_suppressible": all(self.expected) if self.expected else True,
            "benign_requests": self.requests, "false_alarm_events": self.alarms,
        }


def _classes(benign: Benign | None, results: Sequence[CaseResult],
             incremental: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    out: dict[str, _Class] = {}
    if benign is not None:
        out["benign"] = _Class(cases=1, suppressed=1, detected=1, correct=benign.correct,
                               requests=benign.requests, alarms=benign.false_alarms,
                               expected=[True])
    for r in results:
        c = out.setdefault(r.cls, _Class())
        c.cases += 1
        c.suppressed += r.suppressed
        c.detected += r.detected
        c.correct += r.benign.correct
        c.requests += r.benign.total
        c.alarms += r.false_alarms
        c.expected.append(r.expected_suppressible)
        if r.time_to_quarantine is not None:
            c.caught_after.append(r.time_to_quarantine)
    if incremental is not None:
        episodes = int(incremental["episodes"])
        out["incremental"] = _Class(
            cases=episodes, suppressed=episodes - int(incremental["majority_compromised"]),
            detected=0, correct=int(incremental["benign"]["correct"]),
            requests=int(incremental["benign"]["requests"]), expected=[False])
    order = [c for c in CLASSES if c in out] + sorted(set(out) - set(CLASSES))
    return {name: out[name].as_dict() for name in order}


def soak_checks(soak: Mapping[str, Any] | None) -> list[tuple[str, str, str, bool]]:
    """The soak's figures against their targets: (figure, value, target, met)."""
    if soak is None:
        return [("soak", "did not finish", "finished", False)]
    lost, kinds = soak["lost_writes"], soak["faults"]
    return [
        ("availability", f"{soak['availability']:.4%} ({soak['correct']} of "
                         f"{soak['requests']})", f">= {soak['target']:.3%}",
         soak["availability"] >= soak["target"]),
        ("wrong answers", str(soak["wrong_answers"]), "0", soak["wrong_answers"] == 0),
        ("lost writes", "no writes" if lost is None else
         f"{lost} of {soak['acknowledged_writes']} acknowledged", "0", not lost),
        ("faults injected", f"{soak['faults_injected']} (" + ", ".join(
            f"{k} {n}" for k, n in sorted(kinds.items())) + ")", "at least 1",
         soak["faults_injected"] > 0),
    ]


def verdict(report: Mapping[str, Any], req: Requirements) -> list[str]:
    """Every required figure the run missed (empty: it passed)."""
    if report["mode"] == "soak":
        failures = [f"soak: {name} {value} (required {target})"
                    for name, value, target, met in soak_checks(report["soak"]) if not met]
    else:
        failures = _suite_failures(report, req)
    if report["gateway"]["crashed"]:
        failures.append(f"the gateway crashed: {report['gateway']['detail']}")
    return failures


def _suite_failures(report: Mapping[str, Any], req: Requirements) -> list[str]:
    failures = []
    classes = report["classes"]
    benign = report.get("benign")
    if benign is None:
        failures.append("no benign phase ran")
    else:
        if benign["requests"] < req.min_benign_requests:
            failures.append(f"only {benign['requests']} benign requests "
                            f"(at least {req.min_benign_requests} required)")
        if benign["false_alarms"]:
            failures.append(f"{benign['false_alarms']} false alarms on benign traffic")
    for name in req.full_classes:
        c = classes.get(name)
        if c is None:
            failures.append(f"class {name} did not run")
            continue
        if c["suppressed"] != c["cases"] or c["detected"] != c["cases"]:
            failures.append(f"{name}: {c['suppressed']}/{c['cases']} suppressed, "
                            f"{c['detected']}/{c['cases']} detected (all required)")
        if c["false_alarm_events"]:
            failures.append(f"{name}: {c['false_alarm_events']} executors without an "
                            "implant were punished")
    for name in req.availability_classes:
        c = classes.get(name)
        if c is not None and c["availability"] < req.min_availability:
            failures.append(f"{name}: availability {c['availability']:.4%} "
                            f"(at least {req.min_availability:.1%} required)")
    agent = classes.get("input-agent")
    if agent is not None and agent["suppressed"] != agent["cases"]:
        failures.append(f"input-agent: {agent['cases'] - agent['suppressed']} cases forwarded "
                        "an ambiguous request, leaked a response or got a malformed answer")
    for case in report["cases"]:
        if case.get("lost_writes") is None:
            continue
        if case["lost_writes"]:
            failures.append(f"{case['name']}: {case['lost_writes']} acknowledged writes lost "
                            "across a gateway crash")
        if case["acknowledged_writes"] and not case["lost_writes_without_journal"]:
            failures.append(f"{case['name']}: nothing was lost even without the journal: the "
                            "count cannot see a loss")
    return failures


def build_report(*, config: str, workload: str, quick: bool, seconds: float,
                 benign: Benign | None, results: Sequence[CaseResult],
                 incremental: Mapping[str, Any] | None, crashed: bool, detail: str,
                 requirements: Requirements, soak: Mapping[str, Any] | None = None,
                 mode: str = "suite") -> dict[str, Any]:
    """The report of a suite run, or (``mode`` "soak") of a soak run with its ``soak``
    figures (None: it did not finish)."""
    report: dict[str, Any] = {
        "version": 1, "mode": mode, "config": config, "workload": workload, "quick": quick,
        "seconds": round(seconds, 1), "wrapper": WRAPPER_NOTE,
        "classes": _classes(benign, results, incremental),
        "benign": None if benign is None else {
            "requests": benign.requests, "correct": benign.correct,
            "dissents": benign.dissents, "quarantines": benign.quarantines,
            "no_quorum": benign.no_quorum, "false_alarms": benign.false_alarms,
            "seconds": round(benign.seconds, 2), "problems": list(benign.problems)},
        "incremental": incremental,
        "cases": [r.as_dict() for r in results],
        "gateway": {"crashed": crashed, "detail": detail},
        "soak": None if soak is None else dict(soak),
    }
    failures = verdict(report, requirements)
    report["verdict"] = {"passed": not failures, "failures": failures}
    return report


def _pct(x: float) -> str:
    return f"{x:.2%}" if x < 1 else "100%"


def summary_table(report: Mapping[str, Any]) -> str:
    """The per-class figures as a Markdown table (also what CI logs show)."""
    rows = ["| class | cases | suppressed | detected | availability | false alarms | "
            "expected suppressible |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, c in report["classes"].items():
        alarms = f"{c['false_alarm_events']} / {c['benign_requests']}"
        rows.append(f"| {name} | {c['cases']} | {c['suppressed']} | {c['detected']} | "
                    f"{_pct(c['availability'])} | {alarms} | "
                    f"{'yes' if c['expected_suppressible'] else 'no'} |")
    return "\n".join(rows)


def soak_table(report: Mapping[str, Any]) -> str:
    """The soak's figures with PASS or MISS against each target, as a Markdown table."""
    rows = ["| figure | value | target | |", "| --- | --- | --- | --- |"]
    rows += [f"| {name} | {value} | {target} | {'PASS' if met else 'MISS'} |"
             for name, value, target, met in soak_checks(report["soak"])]
    return "\n".join(rows)


def _soak_markdown(soak: Mapping[str, Any] | None) -> list[str]:
    lines = ["## Soak", ""]
    if soak is None:
        return [*lines, "The soak did not finish (see the verdict).", ""]
    rec = soak["recovery_seconds"] or {"mean": "-", "max": "-"}
    lines += [f"{soak['requests']} benign requests from {soak['clients']} clients in "
              f"{soak['seconds']} s ({soak['rate']} per second); one fault at a time in one "
              f"active executor, at least {soak['fault_every']} s apart, rotating the victim "
              "and the kind (kill: SIGKILL of the server; stop: SIGSTOP; slow: answers after "
              "the read timeout; wrong-answer: a JSON field rewritten). Every acknowledged "
              "write was read back at the end.", "",
              f"Faults detected (victim quarantined): {soak['faults_detected']} of "
              f"{soak['faults_injected']}; time until the pool was whole again: mean "
              f"{rec['mean']} s, max {rec['max']} s.", ""]
    if soak["undetected"]:
        lines += [f"Not detected: {', '.join(soak['undetected'][:10])}.", ""]
    if soak["problems"]:
        lines += ["First problems seen:", ""] + [f"- {p}" for p in soak["problems"]] + [""]
    return lines


def render_markdown(report: Mapping[str, Any]) -> str:
    v = report["verdict"]
    lines = ["# endosec red-team report", "",
             f"Configuration: `{report['config']}`; workload: {report['workload']}; "
             f"{'quick run; ' if report['quick'] else ''}{report['seconds']} s.", "",
             report["wrapper"], "",
             f"**Verdict: {'PASSED' if v['passed'] else 'FAILED'}**", ""]
    lines += [f"- {f}" for f in v["failures"]]
    if report["mode"] == "soak":
        lines += ["", soak_table(report), "", *_soak_markdown(report["soak"])]
        return "\n".join(lines)
    lines += ["", "## Summary", "", summary_table(report), "",
              "Suppressed: the client never saw the attacker's output. Detected: the "
              "responsible executor was quarantined. Availability: share of benign requests "
              "answered correctly during the class. False alarms: dissents and quarantines "
              "of executors that carried no implant, over the benign requests of the class.",
              ""]
    b = report.get("benign")
    if b:
        lines += [f"Benign traffic alone: {b['requests']} requests, {b['correct']} correct, "
                  f"{b['dissents']} dissents, {b['quarantines']} quarantines, "
                  f"{b['no_quorum']} no-quorum refusals in {b['seconds']} s.", ""]
    lines += ["## Cases", "", "| class | case | victims | fired | suppressed | detected | "
              "benign ok | notes |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for c in report["cases"]:
        ok = f"{c['benign']['correct']}/{c['benign']['requests']}"
        lines.append(f"| {c['class']} | {c['name']} | {', '.join(c['victims']) or '-'} | "
                     f"{c['fired']} | {'yes' if c['suppressed'] else 'NO'} | "
                     f"{'yes' if c['detected'] else 'NO'} | {ok} | "
                     f"{'; '.join(c['notes']).replace('|', '/')} |")
    crashes = [c for c in report["cases"] if c.get("lost_writes") is not None]
    if crashes:
        lines += ["", "## Gateway crash", "",
                  "The gateway was killed (SIGKILL) while clients wrote, and restarted on the "
                  "same state directory. A write is lost if its client got a 2xx and, after "
                  "the restart, reading it back through the boundary does not return it or a "
                  "voter does not hold it. The control run kills the gateway again and deletes "
                  "its journal and checkpoints before restarting it: the same writes are then "
                  "lost, so the count can see a loss.", "",
                  "| case | acknowledged writes | lost writes | lost without the journal |",
                  "| --- | --- | --- | --- |"]
        lines += [f"| {c['name']} | {c['acknowledged_writes']} | {c['lost_writes']} | "
                  f"{c['lost_writes_without_journal']} |" for c in crashes]
    lines += ["", "## Common-mode flaws", "",
              "A flaw shared by a majority of the voters produces the same wrong output a "
              "majority of times, so no vote can outvote it: these cases are expected not to "
              "be suppressed. The table above shows what the arbiter did (the attacker's "
              "output reached clients; with a majority compromised the honest executor was "
              "the dissenter and was quarantined). The defence is diversity: the scheduler "
              "and the quantifier's components model aim to keep shared components out of a "
              "majority.", ""]
    inc = report.get("incremental")
    if inc:
        lines += ["## Incremental penetration", "",
                  f"n={inc['n']}, k={inc['k']}, attack rate {inc['lam']}/s (one executor at a "
                  f"time), rotation every {inc['rotate_every']} s, horizon {inc['horizon']} s, "
                  f"{inc['episodes']} episodes, scheduler {inc['policy']}.", "",
                  "| | P(majority compromised within the horizon) |", "| --- | --- |",
                  f"| observed | {inc['observed']:.2f} (95% CI {inc['observed_ci'][0]:.2f}-"
                  f"{inc['observed_ci'][1]:.2f}; {inc['majority_compromised']} of "
                  f"{inc['episodes']}) |",
                  f"| quantifier, Markov chain | {inc['predicted_markov']:.2f} |",
                  f"| quantifier, faithful simulation | {inc['predicted_faithful']:.2f} (95% CI "
                  f"{inc['predicted_faithful_ci'][0]:.2f}-"
                  f"{inc['predicted_faithful_ci'][1]:.2f}) |", "",
                  inc.get("note", ""), ""]
    aware = (inc or {}).get("threat_aware")
    if inc and aware:
        lines += ["### Under threat-aware rotation", "",
                  f"Every foothold dissents {aware['dissent']}/s; the threat level (half-life "
                  f"{aware['threat_half_life']} s, scale {aware['threat_scale']}) brings the "
                  f"mean wait between rotations from {aware['rotate_every']} s towards "
                  f"{aware['rotate_min']} s: {aware['rotations_per_second']} rotations/s, "
                  f"against {inc['rotations_per_second']} at a fixed rate.", "",
                  "| | P(majority compromised within the horizon) |", "| --- | --- |",
                  f"| observed | {aware['observed']:.2f} (95% CI "
                  f"{aware['observed_ci'][0]:.2f}-{aware['observed_ci'][1]:.2f}; "
                  f"{aware['majority_compromised']} of {aware['episodes']}) |",
                  f"| quantifier, faithful simulation, threat-aware | "
                  f"{aware['predicted_faithful']:.2f} (95% CI "
                  f"{aware['predicted_faithful_ci'][0]:.2f}-"
                  f"{aware['predicted_faithful_ci'][1]:.2f}) |", "",
                  "The simulation " + ("agrees: its figure lies within the observed interval."
                                       if aware["agrees"] else
                                       "does not agree: its figure lies outside the observed "
                                       "interval."), "", aware.get("note", ""), ""]
    return "\n".join(lines)


def write_report(report: Mapping[str, Any], directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    js, md = directory / "report.json", directory / "report.md"
    js.write_text(json.dumps(report, indent=2) + "\n")
    md.write_text(render_markdown(report))
    return js, md
