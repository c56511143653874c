"""A data plane in Python behind the control loop's `DataPlane` seam, for DNS.

DNS queries never change executor state, so there is no journal and no write ordering here:
every query fans out to the voters and shadows in parallel, the reference arbiter
(`endosec.core.arbiter`) votes, the reply goes out as soon as the verdict is certain and the
stragglers are judged after it. Verdicts other than a clean agreement go to the gateway as the
native data plane reports them; clean agreements are counted for trust.
"""

from __future__ import annotations

import asyncio
import functools
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter
from typing import Any

from endosec.config import Config
from endosec.core.arbiter import Ballot
from endosec.core.model import Output, Verdict
from endosec.gateway.adapter import Exchange, Forward, ProtocolAdapter, Upstream
from endosec.gateway.engine import MimicGateway, VerdictReport

__all__ = ["PythonPlane"]


@dataclass(slots=True)
class _Round:
    """One query's fan-out: the ballot, the replies so far, and who is still out."""

    forward: Forward
    ballot: Ballot
    replies: dict[str, Any]
    shadow_outputs: dict[str, Output]
    errors: dict[str, str]
    respond: Callable[[bytes], None] | None  # None once the client has its reply
    outstanding: int
    started: float


class PythonPlane:
    """Fan-out, vote and reply for one `MimicGateway`, through a `ProtocolAdapter`."""

    def __init__(self, config: Config, gateway: MimicGateway, adapter: ProtocolAdapter) -> None:
        self.config = config
        self.gateway = gateway
        self.adapter = adapter
        self.upstreams: dict[str, Upstream] = {}
        self.recent: deque[dict[str, Any]] = deque(maxlen=config.gateway.recent_verdicts)
        self.metrics = gateway.metrics.serve_python()

    def placed(self, name: str, address: tuple[str, int]) -> None:
        upstream = self.upstreams.get(name)
        if upstream is not None:
            upstream.reset(address)
            return
        spec = next(e for e in self.config.executors if e.name == name)
        limits = self.config.limits
        self.upstreams[name] = self.adapter.upstream(
            address, connect_timeout=spec.connect_timeout or limits.connect_timeout,
            read_timeout=spec.read_timeout or limits.read_timeout)

    def changed(self) -> None:
        """Voters are read from the controller at every query: nothing to publish."""

    async def catch_up(self, name: str) -> None:
        """No query changes state: every executor is always level."""

    def status(self) -> dict[str, Any]:
        return {"journal": {"head": 0, "kept": 0}, "synced": {},
                "recent_verdicts": list(self.recent)}

    async def handle(self, request: Any) -> bytes:
        """Answer one client query with the consensus reply or a fail-closed refusal."""
        reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._fan_out(self.adapter.forward(request), reply.set_result)
        return await reply

    def _fan_out(self, forward: Forward, respond: Callable[[bytes], None]) -> None:
        gw = self.gateway
        voters = gw.controller.voters
        if len(voters) < gw.floor:
            reason = f"only {len(voters)} executors can vote; at least {gw.floor} are needed"
            self.metrics.outcomes["no-quorum"].inc()
            gw.refused(method=forward.label, path=forward.key, reason=reason)
            respond(self.adapter.refuse(forward, reason))
            return
        targets = voters + gw.controller.shadows
        weights = gw.trust.snapshot() if gw.weighted else None
        rnd = _Round(forward=forward, ballot=Ballot(gw.strategy, voters, weights), replies={},
                     shadow_outputs={}, errors={}, respond=respond, outstanding=len(targets),
                     started=perf_counter())
        for name in targets:
            self.upstreams[name].submit(forward, functools.partial(self._answered, rnd, name))

    def _answered(self, rnd: _Round, name: str, ex: Exchange) -> None:
        self.metrics.executor_latency.labels(name).observe(ex.latency)
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
        """Every executor has answered or timed out: judge all of them."""
        forward = rnd.forward
        final = rnd.ballot.close()
        self._respond(rnd, final)
        self.metrics.outcomes[final.outcome.value].inc()
        self.recent.append({"method": forward.label, "path": forward.key,
                            "outcome": final.outcome.value, "agreed": list(final.agreed),
                            "dissented": list(final.dissented), "failed": list(final.failed)})
        winner = final.winner
        shadows = ({name: out.agrees_with(winner) for name, out in rnd.shadow_outputs.items()}
                   if winner is not None else {})
        if final.accepted and not final.dissenters and not shadows:
            self.gateway.agreements(Counter(final.agreed))
            return
        self.gateway.verdict(
            VerdictReport(forward.label, forward.key, final.outcome, final.agreed, final.dissented,
                    final.failed, final.reason),
            digests={o.executor: o.digest.hex() for o in rnd.ballot.outputs},
            errors=rnd.errors, shadows=shadows)
