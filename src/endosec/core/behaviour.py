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
  ``memory_margin`` bytes;
* ``read-outside``: it opened a file outside its own directories (the driver leaves those
  out), outside ``allowed_paths`` (what any server may read: the system's libraries, time
  zones, name-service files), and not opened in its baseline (what it read to start);
* ``latency``: it answers much later than its peers on the same requests (`endosec.core.lag`).

Each broken rule is a `BehaviourReport` (a connection or a program each time it is new, the
resource rules once per run); the controller quarantines
and cleanses on it (or only warns, by configuration). Time is passed in; nothing here does I/O.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from endosec.core.lag import LagPolicy, Lags, LagTrack

__all__ = ["ALLOWED_PATHS", "BehaviourPolicy", "BehaviourReport", "Judge", "PathSet", "Rule",
           "Sample"]

Rule = Literal["connect-out", "new-program", "cpu-burn", "memory", "read-outside", "latency"]
_EACH_TIME: frozenset[Rule] = frozenset({"connect-out", "new-program", "read-outside"})
_NAMED = 4  # paths named in one report's evidence

#: What any executor may open at any time: trees (ending in "/") and files.
ALLOWED_PATHS = (
    "/usr/", "/lib/", "/lib32/", "/lib64/", "/bin/", "/sbin/", "/proc/", "/sys/", "/dev/",
    "/etc/ld.so.cache", "/etc/localtime", "/etc/locale.alias", "/etc/mime.types",
    "/etc/hosts", "/etc/host.conf", "/etc/resolv.conf", "/etc/nsswitch.conf", "/etc/gai.conf",
    "/etc/services", "/etc/protocols", "/etc/passwd", "/etc/group", "/etc/ssl/certs/",
    "/etc/ssl/openssl.cnf", "/etc/ca-certificates/",
)


class PathSet:
    """Paths and trees (a path ending in "/" holds everything under it)."""

    __slots__ = ("files", "trees")

    def __init__(self, paths: Iterable[str]) -> None:
        paths = tuple(paths)
        self.trees = tuple(p for p in paths if p.endswith("/"))
        self.files = frozenset(p for p in paths if not p.endswith("/"))

    def __contains__(self, path: object) -> bool:
        return isinstance(path, str) and (path in self.files or path.startswith(self.trees))


@dataclass(frozen=True, slots=True)
class Sample:
    """One look at an executor at ``at`` (seconds): ``started`` tells its runs apart;
    ``refused`` counts packets refused since that start (None: not segmented); ``cpu`` is the
    CPU seconds its live processes have used, ``rss`` their resident bytes, ``fds`` their open
    descriptors, ``processes`` how many they are; ``opened`` the
    files it opened since the last sample outside its own directories (None: not watched),
    ``unlisted`` how many more it opened than the driver keeps; ``lags`` its lags behind the
    fastest of its peers on unanimous requests since the last sample, per route (the gateway
    adds them, from the data plane); ``voting`` whether it serves
    requests now, ``idle`` whether it does nothing at all (a spare; an executor catching up or
    on probation is neither)."""

    executor: str
    started: float
    refused: int | None
    programs: frozenset[str]
    at: float = 0.0
    cpu: float = 0.0
    rss: int = 0
    opened: frozenset[str] | None = None
    unlisted: int = 0
    lags: Lags = field(default_factory=dict)
    voting: bool = True
    idle: bool = False
    fds: int = 0
    processes: int = 0

    def as_dict(self) -> dict[str, Any]:
        """What an agent sends (the gateway adds ``voting`` and ``idle``)."""
        return {"started": self.started, "refused": self.refused,
                "programs": sorted(self.programs), "at": self.at, "cpu": self.cpu,
                "rss": self.rss, "unlisted": self.unlisted, "fds": self.fds,
                "processes": self.processes,
                "opened": None if self.opened is None else sorted(self.opened)}

    @classmethod
    def from_dict(cls, executor: str, data: Mapping[str, Any]) -> Sample:
        """`as_dict`'s output back (ValueError, KeyError or TypeError when it is not)."""
        refused = data["refused"]
        programs = data["programs"]
        opened = data.get("opened")
        for name, paths in (("programs", programs), ("opened", opened or [])):
            if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
                raise ValueError(f"{name} must be a list of paths")
        return cls(executor, float(data["started"]),
                   None if refused is None else int(refused), frozenset(programs),
                   float(data["at"]), float(data["cpu"]), int(data["rss"]),
                   None if opened is None else frozenset(opened), int(data.get("unlisted", 0)),
                   fds=int(data.get("fds", 0)), processes=int(data.get("processes", 0)))


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
    allowed_paths: tuple[str, ...] = ALLOWED_PATHS
    lag: LagPolicy = field(default_factory=LagPolicy)

    def __post_init__(self) -> None:
        for name in ("cpu_floor", "cpu_ratio", "memory_ratio"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if self.cpu_samples < 1 or self.memory_margin < 0:
            raise ValueError("cpu_samples must be at least 1 and memory_margin at least 0")
        relative = [p for p in self.allowed_paths if not p.startswith("/")]
        if relative:
            raise ValueError(f"allowed paths must be absolute: {', '.join(relative)}")


@dataclass(slots=True)
class _Run:
    started: float
    programs: frozenset[str]
    rss: int
    opened: set[str]  # the files it may open again: what it opened in its baseline
    refused: int = 0
    cpu: float = 0.0  # at the last sample
    at: float = 0.0
    rate: float | None = None  # cores used since the last sample
    last: Sample | None = None
    hot: int = 0  # samples in a row over the CPU rule
    reported: set[Rule] = field(default_factory=set)


@dataclass(slots=True)
class Judge:
    """Per executor: the baseline of its current run and what was already reported."""

    policy: BehaviourPolicy = field(default_factory=BehaviourPolicy)
    _runs: dict[str, _Run] = field(default_factory=dict)
    _lags: dict[str, LagTrack] = field(default_factory=dict)  # across runs
    _allowed: PathSet = field(init=False)

    def __post_init__(self) -> None:
        self._allowed = PathSet(self.policy.allowed_paths)

    @property
    def flags(self) -> dict[str, frozenset[Rule]]:
        """The rules each executor broke in its current run (executors that broke none are
        left out): only a new run (a cleanse) clears them."""
        return {n: frozenset(run.reported) for n, run in self._runs.items() if run.reported}

    @property
    def usage(self) -> dict[str, dict[str, float]]:
        """What each executor used at its last sample: cores (since the one before), resident
        bytes, open descriptors and processes."""
        return {n: {"cores": round(run.rate or 0.0, 3), "rss": s.rss, "fds": s.fds,
                    "processes": s.processes}
                for n, run in self._runs.items() if (s := run.last) is not None}

    def judge(self, samples: Sequence[Sample], now: float) -> list[BehaviourReport]:
        """One round: a sample of every executor that runs (voters are compared)."""
        fresh = {s.executor for s in samples if self._measure(s)}
        out = []
        for s in samples:
            out += self._rules(s, samples, now, s.executor in fresh)
        return out

    def _measure(self, s: Sample) -> bool:
        """Note ``s``; True when it is the first of a run (its baseline)."""
        run = self._runs.get(s.executor)
        if run is None or run.started != s.started:
            self._runs[s.executor] = _Run(s.started, s.programs, s.rss, set(s.opened or ()),
                                          cpu=s.cpu, at=s.at, last=s)
            return True
        run.rate = (s.cpu - run.cpu) / (s.at - run.at) if s.at > run.at else None
        run.cpu, run.at, run.last = s.cpu, s.at, s
        return False

    def _rules(self, s: Sample, samples: Sequence[Sample], now: float, fresh: bool
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
        read = self._read_outside(s, run, fresh)
        if read:
            found.append(("read-outside", read, 0))
        lag = self._lags.setdefault(s.executor, LagTrack())
        if fresh or not s.voting:
            lag.restart()
        slow = lag.observe(s.started, s.lags, p.lag) if s.voting else None
        if slow:
            found.append(("latency", slow, 0))
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
        if out:
            lag.forget(s.started)
        return out

    def _read_outside(self, s: Sample, run: _Run, fresh: bool) -> str | None:
        """What it opened that breaks the rule now (None: nothing)."""
        new = sorted(p for p in s.opened or () if p not in run.opened and p not in self._allowed)
        run.opened.update(new)
        more = max(0, len(new) - _NAMED) + (0 if fresh else s.unlisted)
        if not new and more <= 0:
            return None
        named = f"opened {', '.join(new[:_NAMED])}" if new else "opened"
        return named + (f" and {more} more file(s)" if more > 0 else "")

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
