"""The control plane's loop: hear verdicts, run the controller, carry out what it orders.

The request path is a data plane behind the `DataPlane` seam (the native one for HTTP,
`endosec.gateway.native`): it fans requests out, votes and answers on its own, and reports up
every verdict that is not a clean agreement, plus counts of clean agreements. This loop feeds
those to the pure controller and trust book, performs every action the controller returns
(quarantine, cleanse, activate, rotate, alert, wake-up) through the runtime drivers, and tells
the data plane who votes now. An action kind it does not know is a bug and raises.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from endosec.cluster.control import Agreements, ControlView, Forwarded
from endosec.config import Config, ExecutorConfig, load_rotation_policy
from endosec.core.arbiter import TrustWeightedMajority, strategy_from_config
from endosec.core.attribution import Attribution, AttributionPolicy
from endosec.core.behaviour import ALLOWED_PATHS, BehaviourPolicy, BehaviourReport, Judge
from endosec.core.controller import Controller, ControllerPolicy, state_level
from endosec.core.controller_events import (
    Action,
    ActionDone,
    Activate,
    AdminRequest,
    Alert,
    BehaviourObserved,
    Cleanse,
    Deactivate,
    Event,
    HealthReport,
    IdentityReport,
    Isolate,
    LoadChanged,
    MarkComponents,
    ProbationResult,
    Quarantine,
    Reconfigure,
    RequestWakeup,
    ThreatChanged,
    Tick,
    VerdictReached,
)
from endosec.core.immune import Antigen, Matched
from endosec.core.lag import Lags
from endosec.core.model import ExecutorState, Outcome, Verdict
from endosec.core.scan import ScanPolicy, Scans
from endosec.core.scheduler import scheduler_from_config
from endosec.core.threat import THREAT_STEP, Band, Threat, ThreatPolicy, band_of
from endosec.core.trust import LEVEL_MEANINGS, Level, TrustBook
from endosec.gateway.attestation import AttestationFailed, Attestor
from endosec.gateway.immunity import Immunity
from endosec.observe.events import EventLog
from endosec.observe.evidence import EvidenceStore
from endosec.observe.metrics import GatewayMetrics
from endosec.runtime.base import HealthProbe, HumanNeeded, RuntimeDriver, RuntimeDriverError
from endosec.runtime.drivers import driver_for
from endosec.runtime.opens import watch_opens
from endosec.runtime.process import ProcessExecutor, reap_leftovers
from endosec.runtime.unmanaged import UrlExecutor
from endosec.tasks import spawn

__all__ = ["CannotCatchUp", "CatchUpError", "DataPlane", "MimicGateway", "NotLeading",
           "StartupError", "VerdictReport"]


class StartupError(Exception):
    """Too few executors came up to serve; the message says which failed and why."""


class NotLeading(Exception):
    """This gateway follows the leader its argument names: only the leader's controller takes
    orders."""


class CatchUpError(Exception):
    """An executor could not be brought level with the write journal (gap, failed replay)."""


class CannotCatchUp(CatchUpError):
    """Another attempt would fail the same way: the journal lacks writes that no checkpoint
    covers, or replay fails at the same write every time. The controller holds the executor
    and alerts rather than cleansing it again and again."""


@dataclass(frozen=True, slots=True)
class VerdictReport:
    """What a data plane reports about one verdict that was not a clean agreement."""

    method: str
    path: str
    outcome: Outcome
    agreed: tuple[str, ...]
    dissented: tuple[str, ...]
    failed: tuple[str, ...]
    reason: str
    client: str | None = None  # the address the request came from (no port)
    request: str | None = None  # the request's id, as its refusal gave it to the client


class DataPlane(Protocol):
    """The request path as the control loop drives it."""

    def placed(self, name: str, address: tuple[str, int]) -> None:
        """``name`` (re)started at ``address`` with pristine state."""
        ...

    def changed(self) -> None:
        """Voters, shadows, trust or the configuration changed: publish a new snapshot."""
        ...

    def forget(self, name: str) -> None:
        """``name`` left the pool."""
        ...

    async def catch_up(self, name: str) -> None:
        """Replay the writes ``name`` missed; raises `CatchUpError`."""
        ...

    async def adopt(self) -> None:
        """Make what the voters hold the journal's starting point (a new leader's)."""
        ...

    def status(self) -> dict[str, Any]:
        """``journal``, ``synced`` and ``recent_verdicts`` for the status page."""
        ...

    def take_lags(self) -> dict[str, Lags]:
        """Per executor, its lags behind the fastest of its peers on unanimous requests since
        the last call, per route (`endosec.core.lag`)."""
        ...


#: Changes of trust level kept per executor for /status (the ledger keeps them all).
_LEVEL_HISTORY = 20

#: Events a follower keeps for the leader while the store is out of reach (oldest dropped).
_OUTBOX = 1000


def _named(event: Forwarded) -> tuple[str, ...]:
    if isinstance(event, VerdictReached):
        v = event.verdict
        return (*v.agreed, *v.dissented, *v.failed)
    if isinstance(event, Agreements):
        return tuple(event.counts)
    if isinstance(event, Antigen):
        return event.implicated
    if isinstance(event, Matched):
        return ()
    return (event.executor,)

# What a reload cannot change in a running gateway: listeners, protocol, files opened at start.
_RESTART_ONLY = ("protocol", "listen", "tls", "admin.listen", "state_dir", "gateway.threads",
                 "gateway.events", "journal.segment_bytes", "journal.sync_interval",
                 "checkpoint", "behaviour.interval", "behaviour.allowed_paths", "cluster")


def _setting(config: Config, dotted: str) -> Any:
    value: Any = config
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def _policy(config: Config) -> ControllerPolicy:
    c = config.controller
    return ControllerPolicy(
        active_size=c.active, floor=c.effective_floor, quarantine_after=c.quarantine_after,
        dissent_window=c.dissent_window, probation_agreements=c.probation_agreements,
        rotate_every=c.rotate_every, rotate_min=c.rotate_min,
        grow_under_threat=c.grow_under_threat, rotate_count=c.rotate_count,
        cleanse_on_rotate=c.cleanse_on_rotate, failures_are_dissent=c.failures_are_dissent,
        defer_above=c.defer_above, defer_max=c.defer_max, isolate_at=config.threat.isolate_at,
        suspicion_half_life=config.threat.suspicion_half_life,
        rotation=load_rotation_policy(c.rotation_policy) if c.rotation_policy else None)


class MimicGateway:
    """One mimic boundary: its executors and the core objects deciding about them."""

    def __init__(self, config: Config, *, scratch_root: Path, events: EventLog,
                 metrics: GatewayMetrics | None = None,
                 health_probe: Callable[[ExecutorConfig], HealthProbe | None] = lambda e: None,
                 ) -> None:
        self.config = config
        self._probe = health_probe
        self.events = events
        self.scratch_root = scratch_root
        self.metrics = metrics or GatewayMetrics()
        self._arbiter(config)
        names = [e.name for e in config.executors]
        self.trust = TrustBook(names, rules=config.trust.rules())
        self.controller = self._controller()
        # While another gateway of the boundary leads: its view, applied here; the events
        # this gateway's controller would have handled wait in the outbox for the leader.
        self.follows: ControlView | None = None
        self.outbox: deque[Forwarded] = deque()
        self.on_control: Callable[[], None] = lambda: None  # the controller acted
        # The files executors open: watched when behaviour is judged and the host allows it.
        self._opens, self._unwatched = watch_opens() if config.behaviour.action != "off" \
            else (None, None)
        self.executors: dict[str, RuntimeDriver] = {e.name: self._driver(e)
                                                    for e in config.executors}
        self.plane: DataPlane | None = None
        self._health_task: asyncio.Task[None] | None = None
        self._bound_loop: asyncio.AbstractEventLoop | None = None
        self.metrics.watch(voters=lambda: len(self.voters),
                           trust=self._trust_figures)
        self._dissents = {name: self.metrics.dissents.labels(name) for name in names}
        self._wakeups: list[asyncio.TimerHandle] = []
        self._published: tuple[object, ...] | None = None
        self._awaiting_human: set[str] = set()
        self._agreed_at: dict[str, float] = {}
        self._levels: dict[str, Level] = {}
        self._level_history: defaultdict[str, deque[dict[str, Any]]] = defaultdict(
            lambda: deque(maxlen=_LEVEL_HISTORY))
        self._judge = Judge(BehaviourPolicy(
            allowed_paths=(*ALLOWED_PATHS, *config.behaviour.allowed_paths)))
        self._behaviour_task: asyncio.Task[None] | None = None
        self._attest_task: asyncio.Task[None] | None = None
        self._attestor = None if config.attest.action == "off" else Attestor.from_config(
            config.attest, random.SystemRandom())
        a = config.attribution
        self.attribution = Attribution(AttributionPolicy(a.quarantines, a.window, a.block))
        t = config.threat
        self.threat = Threat(ThreatPolicy(t.half_life, t.scale))
        self._scans = Scans(ScanPolicy(t.scan_errors, t.scan_window)) \
            if t.scan_errors is not None else None
        self._threat_sent = 0.0  # the level the controller last heard
        self._load_sent = 0.0  # the CPU utilisation the controller last heard
        self._band: Band = "calm"
        self.evidence: EvidenceStore | None = None
        self.cluster: Callable[[], dict[str, Any]] | None = None  # this gateway's membership
        self.immunity = Immunity(config.immune, events, self.metrics, self._memories_changed)

    def _memories_changed(self) -> None:
        if self.plane is not None:
            self.plane.changed()
        self.on_control()  # a leader publishes its memories to the boundary

    async def reconfigure(self, config: Config) -> tuple[str, ...]:
        """Apply a reloaded configuration without dropping a client connection: executors
        added (started first, then spares) or removed (let go, then stopped; a changed one is
        both), rules, limits, arbiter and controller policy. Returns the settings that differ
        but only a restart changes. A new executor that does not start aborts the reload."""
        old = self.config
        fixed = tuple(k for k in _RESTART_ONLY if _setting(old, k) != _setting(config, k))
        before = {e.name: e for e in old.executors}
        wanted = {e.name: e for e in config.executors}
        removed = tuple(n for n in before if wanted.get(n) != before[n])
        added = [e for e in config.executors if before.get(e.name) != e]
        started: dict[str, RuntimeDriver] = {}
        try:
            for e in added:
                driver = self._driver(e)
                started[e.name] = driver
                await driver.start()
        except RuntimeDriverError:
            await asyncio.gather(*(d.stop() for d in started.values()), return_exceptions=True)
            raise
        self.config = config
        self._arbiter(config)
        self.trust.rules = config.trust.rules()
        leaving = [self.executors.pop(n) for n in removed]
        self.executors.update(started)
        for e in added:
            self._dissents[e.name] = self.metrics.dissents.labels(e.name)
            self._data_plane.placed(e.name, started[e.name].address)
        self._dispatch(Reconfigure(_policy(config), tuple(e.as_profile() for e in added),
                                   removed, self.now))
        for name in removed:
            self._data_plane.forget(name)
            if self._attestor is not None:
                self._attestor.forget(name)
        if self._attestor is not None:  # measured first at a random time, then as the rest
            for e in added:
                self._attestor.schedule(e.name, self.now)
        self._data_plane.changed()
        await asyncio.gather(*(d.stop() for d in leaving), return_exceptions=True)
        return fixed

    def _controller(self) -> Controller:
        config = self.config
        return Controller(
            [e.as_profile() for e in config.executors], _policy(config),
            scheduler_from_config(config.scheduler.policy), self.trust,
            # A seed is for tests and simulation: a served schedule draws on the OS's entropy.
            random.Random(config.scheduler.seed) if config.scheduler.seed is not None
            else random.SystemRandom(),
        )

    def _arbiter(self, config: Config) -> None:
        a = config.arbiter
        self.strategy = strategy_from_config(a.strategy, k=a.k, min_support=a.min_support)
        self.weighted = isinstance(self.strategy, TrustWeightedMajority)
        self.floor = config.controller.effective_floor

    def _driver(self, e: ExecutorConfig) -> RuntimeDriver:
        return driver_for(e, scratch_root=self.scratch_root, health_probe=self._probe(e),
                          opens=self._opens)

    # -- life cycle -------------------------------------------------------------------------

    @property
    def now(self) -> float:
        return self._loop.time()

    @property
    def _loop(self) -> asyncio.AbstractEventLoop:
        loop = self._bound_loop
        if loop is None:
            loop = self._bound_loop = asyncio.get_running_loop()
        return loop

    # -- who decides: this gateway's controller, or the boundary's leader ----------------------

    @property
    def voters(self) -> tuple[str, ...]:
        return self.controller.voters if self.follows is None else self.follows.voters

    @property
    def shadows(self) -> tuple[str, ...]:
        return self.controller.shadows if self.follows is None else self.follows.shadows

    @property
    def held(self) -> tuple[str, ...]:
        return self.controller.held if self.follows is None else self.follows.held

    def state(self, name: str) -> ExecutorState:
        if self.follows is None:
            return self.controller.state(name)
        return self.follows.states.get(name, ExecutorState.SPARE)

    def level(self, name: str, now: float) -> Level:
        return state_level(self.trust.level(name, now), self.state(name))

    @property
    def writes_to(self) -> tuple[str, int] | None:
        """Where this gateway's writes go to be ordered: its leader's listener (None: to the
        executors, in its own order, as the leader)."""
        serve = None if self.follows is None else urlsplit(self.follows.serve)
        if serve is None or serve.scheme != "http" or serve.hostname is None:
            return None
        return serve.hostname, serve.port or 80

    def follow(self, view: ControlView) -> None:
        """Another gateway leads: serve by its ``view``; this controller decides nothing."""
        if self.follows is None:
            for handle in self._wakeups:
                handle.cancel()
            self._wakeups = []
        if view.serve.startswith("https:") and (self.follows is None
                                                 or self.follows.serve != view.serve):
            self.events.emit("alert", level="warning", message=(
                f"the leader {view.leader} serves TLS ({view.serve}): writes through this "
                "gateway go to the executors in its own order, not the boundary's (writes "
                "are relayed to a leader over plain HTTP only)"))
        self.follows = view
        self.immunity.forward = self._outbox
        self.immunity.adopt(view.memories)
        self._sync()

    def lead(self, view: ControlView | None) -> None:
        """This gateway leads: a controller of its own resumes from ``view``, the last one
        published (None: none was, it chooses afresh)."""
        following = self.follows is not None
        if not following and self.controller.started:
            return
        self.follows = None
        self.immunity.forward = None
        if self.controller.started or following:  # what it knew (the pool, included) is old
            self.controller = self._controller()
        for name, counts in ({} if view is None else view.trust).items():
            if name in self.executors:  # the boundary's trust, not this gateway's share of it
                self.trust.carry(name, *counts)
        self._execute(self.controller.start(self.now) if view is None else
                      self.controller.start(self.now, view.states, view.held))
        if view is not None:  # after the controller started: a publish now is its own
            self.immunity.adopt(view.memories)
        while self.outbox:  # seen here while it followed and not yet sent: its own to handle
            event = self.outbox.popleft()
            if isinstance(event, (Antigen, Matched)):
                self.immunity.heard(replace(event, now=self.now))
            elif not isinstance(event, Agreements):  # those, its trust book has already
                self._dispatch(replace(event, now=self.now))

    async def take_over(self, view: ControlView | None) -> None:
        """Lead, resuming from ``view``: first the voters' state, written through the previous
        leader, becomes this gateway's checkpoint (`DataPlane.adopt`)."""
        if view is not None and self.follows is not None:
            await self._data_plane.adopt()
        self.lead(view)

    def control_view(self, leader: str, term: int, seq: int, serve: str) -> ControlView:
        """What this gateway's controller decided, for the boundary's other gateways (which
        send their writes to ``serve``)."""
        c, t = self.controller, self.trust
        return ControlView(leader, term, seq, serve, dict(c.states), c.voters, c.shadows,
                           self.keep_level, self.discounted, c.held,
                           {n: (t.points(n), *t.evidence(n)) for n in self.executors},
                           tuple(self.immunity.memory.records()))

    def _outbox(self, event: Forwarded) -> None:
        if len(self.outbox) >= _OUTBOX:
            self.outbox.popleft()
            self.reported("dropped", 1)
        self.outbox.append(event)

    def reported(self, way: str, count: int) -> None:
        self.metrics.reports.labels(way).inc(count)

    def forwarded(self, event: Forwarded) -> None:
        """An event another gateway's data plane reported, for this leader's controller."""
        for name in _named(event):
            if name not in self.executors:
                raise ValueError(f"names {name!r}, which this gateway does not know")
        if isinstance(event, Agreements):
            self._agreed(event.counts)
        elif isinstance(event, (Antigen, Matched)):
            self.immunity.heard(event)
        else:
            self._dispatch(event)

    @property
    def discounted(self) -> tuple[str, ...]:
        """Voters heard without lending support: with ``arbiter.strict``, those that broke a
        behaviour rule in their current run (only a cleanse clears that); the latency rule
        counts only where it quarantines (``behaviour.latency``), since it may mistake a
        workload's move to a slow route for an implant."""
        if not self.config.arbiter.strict:
            return ()
        latency = self.config.behaviour.latency == "quarantine"
        flags = self._judge.flags
        if self.follows is not None:
            return self.follows.discounted
        return tuple(n for n in self.controller.voters
                     if any(r != "latency" or latency for r in flags.get(n, ())))

    @property
    def keep_level(self) -> tuple[str, ...]:
        """Executors that must receive every write once level: whoever votes, shadows, or is
        being brought level to do so."""
        states = (ExecutorState.ACTIVE, ExecutorState.ACTIVATING, ExecutorState.PROBATION,
                  ExecutorState.CLEANSING)
        if self.follows is not None:
            return self.follows.keep_level
        return tuple(n for n, s in self.controller.states.items() if s in states)

    async def start(self, plane: DataPlane, *, leader: bool = True,
                    view: ControlView | None = None) -> None:
        """Start every executor, let the controller choose the active set (the ``leader``'s,
        resuming from ``view``; a follower applies ``view``), wait until it votes.

        An executor that fails to start is quarantined and retried by cleansing; serving starts
        once the active set is full, or, at the latest, one start timeout later with at least
        the floor; it stops waiting sooner when every executor votes or is held (nothing but
        an operator can bring it back).
        """
        self.plane = plane
        stopped = reap_leftovers(self.scratch_root)
        if stopped:
            self.events.emit("leftovers", level="warning", stopped=stopped,
                             message="stopped executors an earlier run left behind")
        ready_timeout = max(e.health.start_timeout for e in self.config.executors) + 5.0
        results = await asyncio.gather(
            *(self._start_one(name) for name in self.executors), return_exceptions=True)
        if view is not None:
            self.follow(view)  # a leader until it has adopted what the voters hold
        if leader:
            await self.take_over(view)
        for name, result in zip(self.executors, results, strict=True):
            if isinstance(result, BaseException):  # quarantined and retried by cleansing
                self.events.emit("start-failed", executor=name, detail=str(result))
                self._dispatch(HealthReport(name, False, self.now))
        self._health_task = spawn(self._health_loop(), name="endosec-health")
        if self.config.behaviour.action != "off":
            self._behaviour_task = spawn(self._behaviour_loop(), name="endosec-behaviour")
        if self._attestor is not None:
            self._attest_task = spawn(self._attest_loop(self._attestor), name="endosec-attest")
        if self._unwatched is not None:
            self.events.emit("alert", level="info", message=f"{self._unwatched}: the rule "
                             "read-outside does not apply to the executors run here")
        deadline = self.now + ready_timeout
        while len(self.voters) < min(self.config.controller.active, len(self.executors)) \
                and self.now < deadline and not set(self.executors) <= {*self.voters,
                                                                          *self.held}:
            await asyncio.sleep(0.05)
        if len(self.voters) < self.floor:
            failed = [e["executor"] + ": " + e["detail"] for e in self.events.recent
                      if e["event"] in ("start-failed", "activate-failed", "cleanse-failed")]
            raise StartupError(
                f"only {len(self.voters)} executors became active; the floor is "
                f"{self.floor}" + "".join(f"\n  {line}" for line in failed))

    async def _start_one(self, name: str) -> None:
        runner = self.executors[name]
        await runner.start()
        await self._attest(name, launch=True)
        await self._baseline(name)
        self._data_plane.placed(name, runner.address)

    @property
    def _data_plane(self) -> DataPlane:
        if self.plane is None:
            raise RuntimeError("the gateway has not been started")
        return self.plane

    async def stop(self) -> None:
        for handle in self._wakeups:
            handle.cancel()
        for task in (self._health_task, self._behaviour_task, self._attest_task):
            if task is not None:
                task.cancel()
        await asyncio.gather(*(r.stop() for r in self.executors.values()),
                             return_exceptions=True)
        if self._opens is not None:
            self._opens.close()

    # -- what the data plane reports ---------------------------------------------------------

    def verdict(self, report: VerdictReport, *, digests: Mapping[str, str],
                errors: Mapping[str, str], shadows: Mapping[str, bool],
                evidence: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        """A verdict other than a clean agreement: log it (with the replies, kept as evidence
        and named by digest), count it, let the controller act."""
        summary = {**({"request": report.request} if report.request else {}),
                   "method": report.method, "path": report.path,
                   "outcome": report.outcome.value, "agreed": list(report.agreed),
                   "dissented": list(report.dissented), "failed": list(report.failed)}
        accepted = report.outcome is Outcome.ACCEPTED
        now = self.now
        # Dissent a responsible client causes is its doing, not the dissenters' (failures
        # still count: a dead executor is dead whoever noticed).
        held = bool(report.dissented) and self.attribution.held(report.client, now)
        if report.dissented or report.failed or not accepted:
            kept: dict[str, Any] = {"client": report.client} if report.client else {}
            if held:
                kept["attributed"] = True
            if evidence and self.evidence is not None:
                winner = next((n for n in report.agreed if n in evidence), None)
                kept["evidence"] = self.evidence.keep(
                    {**summary, "winner": winner, "errors": dict(errors)}, evidence)
            self.events.emit("dissent" if accepted else report.outcome.value, **summary,
                             reason=report.reason, digests=dict(digests),
                             **({"errors": dict(errors)} if errors else {}), **kept)
        dissented = () if held else report.dissented
        for name in (*dissented, *report.failed):
            self._dissents[name].inc()
        if dissented:
            self.threat.signal("dissent", now, len(dissented))
            self.threat_update()
        verdict = Verdict(report.outcome, None, report.agreed, dissented, report.failed,
                          report.reason)
        actions = self._dispatch(VerdictReached(verdict, now))
        quarantines = sum(isinstance(a, Quarantine) and a.executor in dissented
                          for a in actions)
        if self.attribution.caused(report.client, f"{report.method} {report.path}",
                                   quarantines, now):
            p = self.config.attribution
            self.events.emit(
                "alert", level="warning", client=report.client,
                message=f"client {report.client} caused {p.quarantines} quarantines within "
                        f"{p.window:g}s with the same request ({report.method} "
                        f"{report.path}): for {p.block:g}s the dissent its requests cause no "
                        f"longer counts" + (", and it is refused" if p.refuse else ""))
            self._sync(force=True)
            # The hold ends by itself: publish again once it has (plus a margin for the clock).
            self._loop.call_later(p.block + 0.01, self._sync, True)
        for name, agreed in shadows.items():
            self._dispatch(ProbationResult(name, agreed, now))

    def refused(self, *, method: str, path: str, reason: str, request: str) -> None:
        """The data plane failed a request closed before fanning it out (below the floor)."""
        self.events.emit("no-quorum", request=request, method=method, path=path, reason=reason)

    def agreements(self, counts: Mapping[str, int]) -> None:
        """Clean agreements since the last report, per executor: they feed trust (the
        leader's too: a follower sends them on, merged while they wait), and they show it
        serving (a probe lost in a busy moment does not outweigh them)."""
        self._agreed(counts)
        counted = {name: n for name, n in counts.items() if n > 0}
        if self.follows is None or not counted:
            return
        last = self.outbox[-1] if self.outbox else None
        if isinstance(last, Agreements):
            self.outbox[-1] = Agreements(dict(Counter(last.counts) + Counter(counted)),
                                         self.now)
        else:
            self._outbox(Agreements(counted, self.now))

    def _agreed(self, counts: Mapping[str, int]) -> None:
        now = self.now
        for name, n in counts.items():
            self.trust.record_agreements(name, n)
            if n > 0:
                self._agreed_at[name] = now

    # -- the controller's actions ----------------------------------------------------------

    def _dispatch(self, event: Event) -> list[Action]:
        if self.follows is not None:  # the leader decides, on what it is told
            if isinstance(event, (VerdictReached, ProbationResult, BehaviourObserved,
                                  IdentityReport)):
                self._outbox(event)
            return []
        actions = self.controller.handle(event)
        self._execute(actions)
        return actions

    def _execute(self, actions: list[Action]) -> None:
        for action in actions:
            match action:
                case Quarantine(executor=name, reason=reason):
                    self._count(name, "quarantine")
                    self.events.emit("quarantine", executor=name, reason=reason)
                case Cleanse(executor=name):
                    self._count(name, "cleanse")
                    self.events.emit("cleanse", executor=name)
                    spawn(self._cleanse(action), name=f"endosec-cleanse-{name}")
                case Activate(executor=name):
                    self._count(name, "activate")
                    spawn(self._activate(action), name=f"endosec-activate-{name}")
                case Deactivate(executor=name, reason=reason):
                    self._count(name, "deactivate")
                    self.events.emit("rotation", executor=name, reason=reason)
                case Alert(level=level, message=message):
                    self.events.emit("alert", level=level, message=message)
                case Isolate(component=component, on=on, reason=reason):
                    self.events.emit("isolation", component=component, isolated=on,
                                     reason=reason)
                    if on:
                        self.events.emit("alert", level="warning", component=component,
                                         message=f"component {component} is isolated: at most "
                                                 f"one executor holding it votes ({reason})")
                case RequestWakeup(at=at):
                    self._wakeups = [h for h in self._wakeups if not h.cancelled()]
                    self._wakeups.append(self._loop.call_at(at, self._dispatch, Tick(at)))
                case _:
                    raise RuntimeError(f"unknown controller action {action!r}")
        self._sync()
        self.on_control()

    def _sync(self, force: bool = False) -> None:
        """Tell the data plane who votes (and who lends no support), shadows and is kept
        level, when that changed (an event can change them without any action, e.g. an
        activation that completed)."""
        sets = (self.voters, self.shadows, self.keep_level, self.discounted, self.writes_to)
        if self.plane is not None and (force or sets != self._published):
            self._published = sets
            self.plane.changed()

    def _count(self, name: str, action: str) -> None:
        self.metrics.action(name, action)

    async def _cleanse(self, action: Cleanse) -> None:
        name = action.executor
        ok, detail, retry = True, "", True
        try:
            await self.executors[name].cleanse()
            await self._attest(name, launch=True)
            await self._baseline(name)
            self._data_plane.placed(name, self.executors[name].address)
            await self._data_plane.catch_up(name)
            self._awaiting_human.discard(name)
        except HumanNeeded as exc:
            ok, detail = False, str(exc)
            if name not in self._awaiting_human:  # once, not at every retry
                self._awaiting_human.add(name)
                self.events.emit("alert", level="critical", executor=name, message=detail)
        except (RuntimeDriverError, CatchUpError) as exc:
            ok, detail = False, str(exc)
            retry = not isinstance(exc, (CannotCatchUp, AttestationFailed))
        self.events.emit("cleansed" if ok else "cleanse-failed", executor=name, detail=detail)
        self._dispatch(ActionDone(action, ok, self.now, detail, retry))

    async def _activate(self, action: Activate) -> None:
        name = action.executor
        ok, detail, retry = True, "", True
        try:
            await self._data_plane.catch_up(name)
        except CatchUpError as exc:
            ok, detail, retry = False, str(exc), not isinstance(exc, CannotCatchUp)
        self.events.emit("activated" if ok else "activate-failed", executor=name, detail=detail)
        self._dispatch(ActionDone(action, ok, self.now, detail, retry))

    async def _health_loop(self) -> None:
        interval = min(e.health.interval for e in self.config.executors)
        while True:
            await asyncio.sleep(interval)
            for name, runner in self.executors.items():
                state = self.state(name)
                if state not in (ExecutorState.ACTIVE, ExecutorState.SPARE):
                    continue
                impostor = runner.impostor() if self._attestor is not None else None
                if impostor is not None:  # not busy: someone else answers in its place
                    self._identity_failed(name, "running", f"its address is not its own: "
                                                           f"{impostor}", address=impostor)
                    continue
                healthy = runner.running and await runner.health()
                # An executor that agreed with its peers since the last round is serving: a
                # failed probe then means it is busy (its vote judges it, not the probe).
                serving = self.now - self._agreed_at.get(name, -math.inf) < 2 * interval
                if not healthy and runner.running and serving:
                    continue
                if not healthy and self.state(name) is state:
                    self.events.emit("unhealthy", executor=name)
                    self._dispatch(HealthReport(name, False, self.now))

    async def _behaviour_loop(self) -> None:
        """Sample what each executor does besides answering (its driver looks: here, or an
        agent on its host), and act on what breaks a behaviour rule
        (`endosec.core.behaviour`)."""
        interval = self.config.behaviour.interval
        lost = 0
        while True:
            await asyncio.sleep(interval)
            samples = []
            lags = self._data_plane.take_lags()
            # a busy host delays whoever the CPU reaches last: no timing then (nor, off, ever)
            b = self.config.behaviour
            timed = b.latency != "off" and self._load_sent < b.busy_above
            for name, runner in self.executors.items():
                state = self.controller.state(name)
                if state not in (ExecutorState.QUARANTINED, ExecutorState.CLEANSING):
                    sample = await runner.sample()
                    if sample is not None:
                        samples.append(replace(sample, voting=state is ExecutorState.ACTIVE,
                                               idle=state is ExecutorState.SPARE,
                                               lags=lags.get(name, {}) if timed else {}))
            for report in self._judge.judge(samples, self.now):
                self._behaviour(report)
            self._sync()  # strict voting: who is flagged may have changed
            if self._opens is not None and self._opens.lost > lost:
                self.events.emit("alert", level="warning", message=(
                    f"the kernel dropped file-open events {self._opens.lost - lost} time(s) "
                    "(its queue was full): a file read outside may have gone unseen"))
                lost = self._opens.lost

    async def _attest(self, name: str, *, launch: bool) -> None:
        """Measure ``name`` and judge it against its reference (`endosec.gateway.attestation`);
        a launch that differs is stopped and raises `AttestationFailed`."""
        if self._attestor is None:
            return
        runner = self.executors[name]
        seen = await runner.measure()
        if seen is None:
            return  # its driver cannot see it: its identity stays unmeasured
        differ, learnt = self._attestor.judge(seen, launch=launch)
        self._attestor.schedule(name, self.now)
        when = "launch" if launch else "running"
        if learnt:
            self.events.emit("attestation", executor=name, ok=True, when=when,
                             learnt=list(learnt))
        if not differ:
            self._identity_report(IdentityReport(name, True, "", self.now))
            return
        detail = ", ".join(differ)
        if self._identity_failed(name, when, detail, files=list(differ)) and launch:
            await runner.stop()
            raise AttestationFailed(f"{name}: not as attested: {detail}")

    def _identity_failed(self, name: str, when: str, detail: str, **fields: Any) -> bool:
        """Log and sign an identity failure; with ``attest.action: quarantine`` drop ``name``
        to L0 (quarantined at once) and return True, else only alert."""
        action = self.config.attest.action
        self.events.emit("attestation", executor=name, ok=False, when=when, detail=detail,
                         action=action, **fields)
        if action != "quarantine":
            self.events.emit("alert", level="warning", executor=name,
                             message=f"{name} is not as attested: {detail}")
            return False
        self._identity_report(IdentityReport(name, False, detail, self.now))
        return True

    def _identity_report(self, report: IdentityReport) -> None:
        if self.controller.started:
            self._dispatch(report)
        elif report.ok:  # at the first start, before the controller: its trust book only
            self.trust.attested(report.executor, report.now)
        else:
            self.trust.attestation_failed(report.executor)

    async def _attest_loop(self, attestor: Attestor) -> None:
        """Measure each running executor again when its random time comes."""
        while True:
            due = min(attestor.due.values(), default=self.now + 1.0)
            await asyncio.sleep(min(1.0, max(0.05, due - self.now)))
            for name in list(self.executors):
                if attestor.due.get(name, math.inf) > self.now:
                    continue
                if self.state(name) in (ExecutorState.QUARANTINED,
                                                   ExecutorState.CLEANSING):
                    attestor.due.pop(name)  # measured again at its relaunch
                    continue
                await self._attest(name, launch=False)

    async def _baseline(self, name: str) -> None:
        """A first sample as soon as a run is healthy, before it serves: its baseline holds
        what it did to start, and nothing a request made it do."""
        if self.config.behaviour.action == "off":
            return
        sample = await self.executors[name].sample()
        if sample is not None:
            for report in self._judge.judge([replace(sample, voting=False)], self.now):
                self._behaviour(report)

    def _behaviour(self, report: BehaviourReport) -> None:
        name = report.executor
        self.events.emit("behaviour", executor=name, rule=report.rule,
                         evidence=report.evidence)
        if report.rule == "connect-out":
            self.events.emit("outbound-refused", executor=name, packets=report.count)
        b = self.config.behaviour
        act = b.action == "quarantine" and (report.rule != "latency" or b.latency == "quarantine")
        self.events.emit("alert", level="warning", executor=name,
                         message=f"{name} broke the behaviour rule {report.rule}: "
                                 f"{report.evidence}" + ("; quarantined" if act else ""))
        if act:
            self._dispatch(BehaviourObserved(name, f"behaviour: {report.rule}: "
                                                   f"{report.evidence}", self.now))

    # -- admin ------------------------------------------------------------------------------

    def refusals(self, count: int) -> None:
        """The input agent refused ``count`` requests since the last report."""
        if count:
            self.threat.signal("refusal", self.now, count)

    def client_errors(self, counts: Mapping[str, int]) -> None:
        """Error answers per client since the last report: a burst from one is a scan."""
        if self._scans is None:
            return
        for client, errors in self._scans.observe(counts, self.now):
            self.threat.signal("scan", self.now)
            self.events.emit("scan", client=client, errors=errors,
                             seconds=self._scans.policy.window)

    def declare_threat(self, level: float, seconds: float,
                       components: frozenset[str] = frozenset()) -> None:
        """The operator's word: the threat is at least ``level`` for ``seconds``, and
        ``components`` are under attack (isolated) as long."""
        now = self.now
        self.threat.declare(level, now + seconds)
        self.events.emit("admin", action="threat", level=level, seconds=seconds,
                         **({"components": sorted(components)} if components else {}))
        if components:
            self._dispatch(MarkComponents(components, now + seconds, now))
        self.threat_update()

    def load(self, utilisation: float) -> None:
        """The host's CPU utilisation, told to the controller when it moved by 0.05 or more
        (a busy host defers optional rotations); before the controller starts, nothing is told
        (the next sample after it is)."""
        if self.controller.started and abs(utilisation - self._load_sent) >= 0.05:
            self._load_sent = utilisation
            self._dispatch(LoadChanged(utilisation, self.now))

    def _trust_figures(self) -> dict[str, tuple[float, int, float]]:
        now = self.now
        return {name: (self.trust.score(name), int(self.level(name, now)),
                       self.trust.points(name)) for name in self.executors}

    def review_levels(self) -> None:
        """Log and sign every change of an executor's trust level (`endosec.core.trust`)."""
        now = self.now
        for name in self.executors:
            level = self.level(name, now)
            was = self._levels.get(name)
            self._levels[name] = level
            if was is not None and level != was:
                self._level_history[name].append(self.events.emit(
                    "trust-level", executor=name, level=level.name, was=was.name,
                    points=round(self.trust.points(name), 1),
                    identity=self.trust.identity(name).value))

    def threat_update(self) -> None:
        """Tell the controller when the level moved (by 0.05 or more, or to calm), and log
        and sign every change of band."""
        now = self.now
        level = self.threat.level(now)
        if abs(level - self._threat_sent) >= THREAT_STEP or (level < 0.01 < self._threat_sent):
            self._threat_sent = level
            self._dispatch(ThreatChanged(min(1.0, level), now))
        band = band_of(level)
        if band != self._band:
            self.events.emit("threat", band=band, was=self._band, level=round(level, 3),
                             rotate_mean=self.controller.rotation_mean())
            self._band = band

    def admin(self, kind: str, executor: str) -> list[Action]:
        if executor not in self.executors:
            raise KeyError(executor)
        if self.follows is not None:
            raise NotLeading(self.follows.leader)
        self.events.emit("admin", action=kind, executor=executor)
        driver = self.executors[executor]
        if kind == "cleanse" and isinstance(driver, UrlExecutor):
            driver.acknowledge()  # the operator restored it by hand
        return self._dispatch(AdminRequest(kind, executor, self.now))  # type: ignore[arg-type]

    def status(self) -> dict[str, Any]:
        trust, now = self.trust.snapshot(), self.now
        plane = self._data_plane.status()
        flags, usage = self._judge.flags, self._judge.usage
        executors = []
        for e in self.config.executors:
            runner = self.executors[e.name]
            executors.append({
                "name": e.name,
                "state": self.state(e.name).value,
                "trust": round(trust[e.name], 4),
                "level": self.level(e.name, now).name,
                "points": round(self.trust.points(e.name), 1),
                "identity": self.trust.identity(e.name).value,
                "attested_at": self.trust.attested_at(e.name),
                "level_history": [{k: v for k, v in change.items() if k != "executor"}
                                  for change in self._level_history[e.name]],
                "profile": sorted(e.profile),
                "counters": self.controller.counters(e.name),
                "pid": runner.pid,
                "running": runner.running,
                "network": "isolated" if isinstance(runner, ProcessExecutor)
                           and runner.spec.segmented else "host",
                "address": "{}:{}".format(*runner.address),
                "synced": plane["synced"].get(e.name, 0),
                "flagged": sorted(flags.get(e.name, ())),
                "usage": usage.get(e.name),
            })
        return {
            "active": list(self.voters),
            "shadows": list(self.shadows),
            "discounted": list(self.discounted),
            "floor": self.floor,
            "strategy": self.config.arbiter.strategy,
            "levels": {level.name: meaning for level, meaning in LEVEL_MEANINGS.items()},
            "threat": {"level": round(self.threat.level(self.now), 3), "band": self._band,
                       "rotate_mean": self.controller.rotation_mean(),
                       "isolated": sorted(self.controller.isolated),
                       "suspicion": {c: round(v, 3) for c, v in sorted(
                           self.controller.suspicion(self.now).items())}},
            "journal": plane["journal"],
            "executors": executors,
            "recent_verdicts": plane["recent_verdicts"],
            "cluster": None if self.cluster is None else self.cluster(),
            "immune": self.immunity.status(),
        }
