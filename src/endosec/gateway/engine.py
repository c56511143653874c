"""The mimic gateway's engine: fan a request out, vote, answer, and carry out the controller.

This is the only place that ties the pure core (arbiter, controller) to I/O: it awaits the
executors, feeds the core each event, and performs every action the controller returns. An
action kind it does not know is a bug and raises.
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from typing import Any

from endosec.config import Config
from endosec.core.arbiter import Ballot, TrustWeightedMajority, strategy_from_config
from endosec.core.controller import Controller, ControllerPolicy
from endosec.core.controller_events import (
    Action,
    ActionDone,
    Activate,
    AdminRequest,
    Alert,
    Cleanse,
    Deactivate,
    Event,
    HealthReport,
    ProbationResult,
    Quarantine,
    RequestWakeup,
    Tick,
    VerdictReached,
)
from endosec.core.model import ExecutorState, Output, Verdict
from endosec.core.scheduler import scheduler_from_config
from endosec.core.trust import TrustBook
from endosec.gateway.adapter import Exchange, Forward, ProtocolAdapter, Upstream
from endosec.gateway.journal import Journal, JournalGap
from endosec.gateway.rwlock import WriteOrderLock
from endosec.observe.events import EventLog
from endosec.observe.metrics import GatewayMetrics
from endosec.runtime.base import HealthProbe, RuntimeDriverError
from endosec.runtime.process import ExecutorSpec, ProcessExecutor
from endosec.tasks import spawn

__all__ = ["MimicGateway", "ReplayError", "StartupError"]


class StartupError(Exception):
    """Too few executors came up to serve; the message says which failed and why."""


class ReplayError(Exception):
    """A journal entry could not be replayed into an executor."""


@dataclass(slots=True)
class _Round:
    """One request's fan-out: the ballot, the responses so far, and who is still out."""

    forward: Forward
    ballot: Ballot
    replies: dict[str, Any]
    shadow_outputs: dict[str, Output]
    errors: dict[str, str]  # executor -> what its failure was, for the events
    respond: Callable[[bytes], None] | None  # None once the client has its reply
    outstanding: int
    started: float


class MimicGateway:
    """One mimic boundary: its executors, the core objects deciding about them, and the I/O."""

    def __init__(self, config: Config, adapter: ProtocolAdapter, *, scratch_root: Path,
                 events: EventLog, metrics: GatewayMetrics | None = None,
                 health_probes: Mapping[str, HealthProbe] | None = None) -> None:
        self.config = config
        self.adapter = adapter
        self.events = events
        self.metrics = metrics or GatewayMetrics()
        a = config.arbiter
        self.strategy = strategy_from_config(a.strategy, k=a.k, min_support=a.min_support)
        self._weighted = isinstance(self.strategy, TrustWeightedMajority)
        names = [e.name for e in config.executors]
        self.trust = TrustBook(names)
        c = config.controller
        self.floor = c.effective_floor
        self.controller = Controller(
            [e.as_profile() for e in config.executors],
            ControllerPolicy(
                active_size=c.active, floor=self.floor, quarantine_after=c.quarantine_after,
                dissent_window=c.dissent_window, probation_agreements=c.probation_agreements,
                rotate_every=c.rotate_every, rotate_count=c.rotate_count,
                cleanse_on_rotate=c.cleanse_on_rotate,
                failures_are_dissent=c.failures_are_dissent,
            ),
            scheduler_from_config(config.scheduler.policy),
            self.trust,
            random.Random(config.scheduler.seed),
        )
        self.executors = {
            e.name: ProcessExecutor(ExecutorSpec(
                name=e.name, argv=list(e.argv), cwd=e.cwd, env=dict(e.env), port=e.port,
                health_path=e.health.path, health_probe=(health_probes or {}).get(e.name),
                health_timeout=e.health.timeout,
                start_timeout=e.health.start_timeout, template=e.template,
                scratch_root=scratch_root, sandbox=e.sandbox,
            ))
            for e in config.executors
        }
        self.stateless = {e.name for e in config.executors if e.stateless}
        self._specs = {e.name: e for e in config.executors}
        self.upstreams: dict[str, Upstream] = {}
        self.journal = Journal(config.journal.max_entries, config.journal.max_bytes)
        self.synced = dict.fromkeys(names, 0)
        self.lock = WriteOrderLock()
        self.recent: deque[dict[str, Any]] = deque(maxlen=config.gateway.recent_verdicts)
        self._health_task: asyncio.Task[None] | None = None
        self._bound_loop: asyncio.AbstractEventLoop | None = None
        self.series = {name: self.metrics.executor(name) for name in names}
        self.metrics.watch(voters=lambda: len(self.controller.voters),
                           trust=self.trust.snapshot)
        self._wakeups: list[asyncio.TimerHandle] = []

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

    async def start(self) -> None:
        """Start every executor, let the controller choose the active set, wait until it votes.

        An executor that fails to start is quarantined and retried by cleansing; serving starts
        once the active set is full, or, at the latest, one start timeout later with at least
        the floor.
        """
        ready_timeout = max(e.health.start_timeout for e in self.config.executors) + 5.0
        results = await asyncio.gather(
            *(self._start_one(name) for name in self.executors), return_exceptions=True)
        self._execute(self.controller.start(self.now))
        for name, result in zip(self.executors, results, strict=True):
            if isinstance(result, BaseException):  # quarantined and retried by cleansing
                self.events.emit("start-failed", executor=name, detail=str(result))
                self._dispatch(HealthReport(name, False, self.now))
        self._health_task = spawn(self._health_loop(), name="endosec-health")
        deadline = self.now + ready_timeout
        while len(self.controller.voters) < min(self.config.controller.active,
                                                len(self.executors)) and self.now < deadline:
            await asyncio.sleep(0.05)
        if len(self.controller.voters) < self.floor:
            failed = [e["executor"] + ": " + e["detail"] for e in self.events.recent
                      if e["event"] == "start-failed"]
            raise StartupError(
                f"only {len(self.controller.voters)} executors became active; the floor is "
                f"{self.floor}" + "".join(f"\n  {line}" for line in failed))

    async def _start_one(self, name: str) -> None:
        runner = self.executors[name]
        await runner.start()
        self._reset_pool(name)

    def _reset_pool(self, name: str) -> None:
        address = self.executors[name].address
        upstream = self.upstreams.get(name)
        if upstream is None:
            spec, limits = self._specs[name], self.config.limits
            self.upstreams[name] = self.adapter.upstream(
                address, connect_timeout=spec.connect_timeout or limits.connect_timeout,
                read_timeout=spec.read_timeout or limits.read_timeout)
        else:
            upstream.reset(address)

    async def stop(self) -> None:
        for handle in self._wakeups:
            handle.cancel()
        if self._health_task is not None:
            self._health_task.cancel()
        await asyncio.gather(*(r.stop() for r in self.executors.values()),
                             return_exceptions=True)

    # -- requests ---------------------------------------------------------------------------

    def submit(self, request: Any, respond: Callable[[bytes], None]) -> None:
        """Answer one client request: ``respond`` is called once, with the consensus reply or a
        fail-closed refusal. Uncontended requests go out without creating a task."""
        forward = self.adapter.forward(request)
        if self.lock.try_acquire(forward.write):
            self._fan_out(forward, respond)
        else:
            spawn(self._queued(forward, respond), name="endosec-queued-request")

    async def _queued(self, forward: Forward, respond: Callable[[bytes], None]) -> None:
        await self.lock.acquire(forward.write)
        self._fan_out(forward, respond)

    async def handle(self, request: Any) -> bytes:
        """`submit`, awaitable."""
        reply: asyncio.Future[bytes] = self._loop.create_future()
        self.submit(request, reply.set_result)
        return await reply

    def _fan_out(self, forward: Forward, respond: Callable[[bytes], None]) -> None:
        """With the write-order lock held: send to every voter and shadow, then let go."""
        voters = self.controller.voters
        if len(voters) < self.floor:
            self.lock.release(forward.write)
            reason = (f"only {len(voters)} executors can vote; at least {self.floor} are "
                      "needed")
            self.metrics.outcomes["no-quorum"].inc()
            self.events.emit("no-quorum", method=forward.label, path=forward.key, reason=reason)
            respond(self.adapter.refuse(forward, reason))
            return
        write = forward.write
        if write:
            self.journal.append(forward)
        targets = voters + self.controller.shadows
        weights = self.trust.snapshot() if self._weighted else None
        rnd = _Round(forward=forward, ballot=Ballot(self.strategy, voters, weights), replies={},
                     shadow_outputs={}, errors={}, respond=respond, outstanding=len(targets),
                     started=perf_counter())
        for name in targets:
            if write and name not in self.stateless:
                self.synced[name] = self.journal.head
            self.upstreams[name].submit(forward, functools.partial(self._answered, rnd, name))

    def _answered(self, rnd: _Round, name: str, ex: Exchange) -> None:
        self.series[name].latency.observe(ex.latency)
        if ex.error is None:
            output = self.adapter.output(name, ex.reply, rnd.forward, ex.latency)
            rnd.replies[name] = ex.reply
        else:
            output = self.adapter.failure(name, ex.error, rnd.forward, ex.latency)
            if ex.detail:
                rnd.errors[name] = ex.detail
        if name in rnd.ballot.pending:
            started = perf_counter()
            early = rnd.ballot.add(output)
            self.metrics.arbiter_seconds.observe(perf_counter() - started)
            if early is not None:
                self._respond(rnd, early)
        else:
            rnd.shadow_outputs[name] = output
        rnd.outstanding -= 1
        if rnd.outstanding == 0:
            self._conclude(rnd)

    def _respond(self, rnd: _Round, verdict: Verdict) -> None:
        respond = rnd.respond
        if respond is None:
            return
        rnd.respond = None
        if verdict.winner is None:
            reply = self.adapter.refuse(rnd.forward, verdict.reason)
        else:
            reply = self.adapter.reply(rnd.forward, verdict, rnd.replies[verdict.winner.executor],
                                       verdict_headers=self.config.gateway.verdict_headers)
        self.metrics.latency.observe(perf_counter() - rnd.started)
        respond(reply)

    def _conclude(self, rnd: _Round) -> None:
        """Every executor has answered or timed out: judge all of them, then let go."""
        forward = rnd.forward
        self.lock.release(forward.write)
        final = rnd.ballot.close()
        self._respond(rnd, final)
        now = self._loop.time()
        self.metrics.outcomes[final.outcome.value].inc()
        summary = {"method": forward.label, "path": forward.key,
                   "outcome": final.outcome.value, "agreed": list(final.agreed),
                   "dissented": list(final.dissented), "failed": list(final.failed)}
        self.recent.append(summary)
        if final.dissenters or not final.accepted:
            digests = {o.executor: o.digest.hex() for o in rnd.ballot.outputs}
            self.events.emit("dissent" if final.accepted else final.outcome.value,
                             **summary, reason=final.reason, digests=digests,
                             **({"errors": rnd.errors} if rnd.errors else {}))
            for name in final.dissenters:
                self.series[name].dissents.inc()
        events: list[Event] = [VerdictReached(final, now)]
        if final.winner is not None:
            winner = final.winner
            events += [ProbationResult(name, out.agrees_with(winner), now)
                       for name, out in rnd.shadow_outputs.items()]
        for event in events:
            self._dispatch(event)

    # -- the controller's actions ----------------------------------------------------------

    def _dispatch(self, event: Event) -> list[Action]:
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
                case RequestWakeup(at=at):
                    self._wakeups = [h for h in self._wakeups if not h.cancelled()]
                    loop = asyncio.get_running_loop()
                    self._wakeups.append(loop.call_at(at, self._dispatch, Tick(at)))
                case _:
                    raise RuntimeError(f"unknown controller action {action!r}")

    def _count(self, name: str, action: str) -> None:
        self.metrics.action(name, action)

    async def _cleanse(self, action: Cleanse) -> None:
        name = action.executor
        ok, detail = True, ""
        try:
            await self.executors[name].cleanse()
            self._reset_pool(name)
            self.synced[name] = 0
            await self._catch_up(name)
        except (RuntimeDriverError, JournalGap, ReplayError) as exc:
            ok, detail = False, str(exc)
        self.events.emit("cleansed" if ok else "cleanse-failed", executor=name, detail=detail)
        self._dispatch(ActionDone(action, ok, self.now, detail))

    async def _activate(self, action: Activate) -> None:
        name = action.executor
        ok, detail = True, ""
        try:
            if name not in self.upstreams:
                raise ReplayError("executor was never started")
            await self._catch_up(name)
        except (JournalGap, ReplayError) as exc:
            ok, detail = False, str(exc)
        self.events.emit("activated" if ok else "activate-failed", executor=name, detail=detail)
        self._dispatch(ActionDone(action, ok, self.now, detail))

    async def _catch_up(self, name: str) -> None:
        """Replay the writes ``name`` missed; returns with it level with the journal head.

        The last check and the caller's dispatch run without an await in between, so no write
        can slip in between "caught up" and "votes".
        """
        if name in self.stateless:
            return
        upstream = self.upstreams[name]
        started = self.now
        while self.synced[name] < self.journal.head:
            for entry in list(self.journal.since(self.synced[name])):
                ex = await upstream.exchange(entry.forward)
                if ex.error is not None:
                    raise ReplayError(f"replaying write #{entry.seq} failed: {ex.error}")
                self.synced[name] = max(self.synced[name], entry.seq)
                self.series[name].replays.inc()
        self.metrics.replay_seconds.observe(self.now - started)

    async def _health_loop(self) -> None:
        interval = min(e.health.interval for e in self.config.executors)
        while True:
            await asyncio.sleep(interval)
            for name, runner in self.executors.items():
                state = self.controller.state(name)
                if state not in (ExecutorState.ACTIVE, ExecutorState.SPARE):
                    continue
                healthy = runner.running and await runner.health()
                if not healthy and self.controller.state(name) is state:
                    self.events.emit("unhealthy", executor=name)
                    self._dispatch(HealthReport(name, False, self.now))

    # -- admin ------------------------------------------------------------------------------

    def admin(self, kind: str, executor: str) -> list[Action]:
        if executor not in self.executors:
            raise KeyError(executor)
        self.events.emit("admin", action=kind, executor=executor)
        return self._dispatch(AdminRequest(kind, executor, self.now))  # type: ignore[arg-type]

    def status(self) -> dict[str, Any]:
        trust = self.trust.snapshot()
        executors = []
        for e in self.config.executors:
            runner = self.executors[e.name]
            executors.append({
                "name": e.name,
                "state": self.controller.state(e.name).value,
                "trust": round(trust[e.name], 4),
                "profile": sorted(e.profile),
                "counters": self.controller.counters(e.name),
                "pid": runner.pid,
                "running": runner.running,
                "synced": self.synced[e.name],
            })
        return {
            "active": list(self.controller.voters),
            "shadows": list(self.controller.shadows),
            "floor": self.floor,
            "strategy": self.config.arbiter.strategy,
            "journal": {"head": self.journal.head, "kept": len(self.journal)},
            "executors": executors,
            "recent_verdicts": list(self.recent),
        }
