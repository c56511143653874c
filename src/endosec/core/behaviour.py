"""Behaviour: what an executor does besides answering, judged by rules.

An implant can keep its output right (the vote sees nothing) while it calls home, leaves a
shell behind, burns the CPU or hoards memory. The runtime samples each executor's process
group (`Sample`): the packets its network segment refused on their way out (a fresh segment at
each start counts from 0), the programs its processes run, their CPU time and resident memory.
The first sample of a run (taken once it is healthy) is its baseline; a start (a cleanse)
takes a new one. The rules (`BehaviourPolicy` holds their limits):

* ``connect-out``: a packet left for anywhere but the gateway (the segment refused it);
* ``new-program``: a process runs a program the baseline did not have (an ``execve``);
* ``cpu-burn``: for ``cpu_samples`` samples in a row it used at least ``cpu_floor`` of a core
  and ``cpu_ratio`` times what the other voters used (they all serve the same requests, so
  load alone raises them together); a spare, serving nothing, against ``cpu_floor`` alone;
* ``memory``: its resident memory passed ``memory_ratio`` times the baseline's plus
  ``memory_margin`` bytes.

Each broken rule is a `BehaviourReport` (a connection or a program each time it is new, the
resource rules once per run); the controller quarantines
and cleanses on it (or only warns, by configuration). Time is passed in; nothing here does I/O.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["BehaviourPolicy", "BehaviourReport", "Judge", "Rule", "Sample"]

Rule = Literal["connect-out", "new-program", "cpu-burn", "memory"]
_EACH_TIME: frozenset[Rule] = frozenset({"connect-out", "new-program"})  # new evidence each


@dataclass(frozen=True, slots=True)
class Sample:
    """One look at an executor at ``at`` (seconds): ``started`` tells its runs apart;
    ``refused`` counts packets refused since that start (None: not segmented); ``cpu`` is the
    CPU seconds its live processes have used, ``rss`` their resident bytes; ``voting`` whether
    it serves requests now, ``idle`` whether it does nothing at all (a spare; an executor
    catching up or on probation is neither)."""

    executor: str
    started: float
    refused: int | None
    programs: frozenset[str]
    at: float = 0.0
    cpu: float = 0.0
    rss: int = 0
    voting: bool = True
    idle: bool = False

    def as_dict(self) -> dict[str, Any]:
        """What an agent sends (the gateway adds ``voting`` and ``idle``)."""
        return {"started": self.started, "refused": self.refused,
                "programs": sorted(self.programs), "at": self.at, "cpu": self.cpu,
                "rss": self.rss}

    @classmethod
    def from_dict(cls, executor: str, data: Mapping[str, Any]) -> Sample:
        """`as_dict`'s output back (ValueError, KeyError or TypeError when it is not)."""
        refused = data["refused"]
        programs = data["programs"]
        if not isinstance(programs, list) or not all(isinstance(p, str) for p in programs):
            raise ValueError("programs must be a list of paths")
        return cls(executor, float(data["started"]),
                   None if refused is None else int(refused), frozenset(programs),
                   float(data["at"]), float(data["cpu"]), int(data["rss"]))


@dataclass(frozen=True, slots=True)
class BehaviourReport:
    executor: str
    rule: Rule
    evidence: str
    at: float
    count: int = 0  # connect-out: the packets refused since the last report


@dataclass(frozen=True, slots=True)
class BehaviourPolicy:
    cpu_floor: float = 0.4  # of one core
    cpu_ratio: float = 4.0
    cpu_samples: int = 2
    memory_ratio: float = 2.0
    memory_margin: int = 256 << 20

    def __post_init__(self) -> None:
        for name in ("cpu_floor", "cpu_ratio", "memory_ratio"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if self.cpu_samples < 1 or self.memory_margin < 0:
            raise ValueError("cpu_samples must be at least 1 and memory_margin at least 0")


@dataclass(slots=True)
class _Run:
    started: float
    programs: frozenset[str]
    rss: int
    refused: int = 0
    cpu: float = 0.0  # at the last sample
    at: float = 0.0
    rate: float | None = None  # cores used since the last sample
    hot: int = 0  # samples in a row over the CPU rule
    reported: set[Rule] = field(default_factory=set)


@dataclass(slots=True)
class Judge:
    """Per executor: the baseline of its current run and what was already reported."""

    policy: BehaviourPolicy = field(default_factory=BehaviourPolicy)
    _runs: dict[str, _Run] = field(default_factory=dict)

    def judge(self, samples: Sequence[Sample], now: float) -> list[BehaviourReport]:
        """One round: a sample of every executor that runs (voters are compared)."""
        for s in samples:
            self._measure(s)
        out = []
        for s in samples:
            out += self._rules(s, samples, now)
        return out

    def _measure(self, s: Sample) -> None:
        run = self._runs.get(s.executor)
        if run is None or run.started != s.started:
            self._runs[s.executor] = _Run(s.started, s.programs, s.rss, cpu=s.cpu, at=s.at)
            return
        run.rate = (s.cpu - run.cpu) / (s.at - run.at) if s.at > run.at else None
        run.cpu, run.at = s.cpu, s.at

    def _rules(self, s: Sample, samples: Sequence[Sample], now: float
               ) -> list[BehaviourReport]:
        run, p = self._runs[s.executor], self.policy
        found: list[tuple[Rule, str, int]] = []
        if s.refused is not None and s.refused > run.refused:
            count = s.refused - run.refused
            found.append(("connect-out", f"{count} packet(s) out refused by its segment",
                          count))
            run.refused = s.refused
        new = s.programs - run.programs
        if new:
            found.append(("new-program", f"runs {', '.join(sorted(new))}", 0))
            run.programs |= new
        if s.rss > run.rss * p.memory_ratio + p.memory_margin:
            found.append(("memory", f"{s.rss >> 20} MiB resident, {run.rss >> 20} MiB at its "
                                    "start", 0))
        hot = self._hot(s, run, samples)
        run.hot = run.hot + 1 if hot else 0
        if run.hot >= p.cpu_samples and hot is not None:
            found.append(("cpu-burn", hot, 0))
        out = []
        for rule, evidence, count in found:
            if rule in _EACH_TIME or rule not in run.reported:
                run.reported.add(rule)
                out.append(BehaviourReport(s.executor, rule, evidence, now, count))
        return out

    def _hot(self, s: Sample, run: _Run, samples: Sequence[Sample]) -> str | None:
        """Why its CPU use breaks the rule now (None: it does not)."""
        p = self.policy
        if run.rate is None or run.rate < p.cpu_floor:
            return None
        if s.idle:
            return f"{run.rate:.2f} cores while serving nothing"
        if not s.voting:
            return None
        peers = [r.rate for o in samples if o.voting and o.executor != s.executor
                 and (r := self._runs.get(o.executor)) is not None and r.rate is not None]
        if not peers:
            return None
        usual = statistics.median(peers)
        if run.rate < p.cpu_ratio * usual:
            return None
        return f"{run.rate:.2f} cores, the other voters {usual:.2f}"
