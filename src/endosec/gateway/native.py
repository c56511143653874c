"""The native data plane behind the control loop's `DataPlane` seam.

Down: after every controller action the gateway asks for a new snapshot (`changed`), which is
built from the controller's sets and the runtimes' addresses and published to the data plane
in one call. Up: the data plane writes a byte to a pipe when events are waiting; the event loop
wakes, drains them in a batch and hands each verdict to the gateway. Clean agreements are not
events: they are counted natively and taken every ``PUMP_SECONDS``, which also re-publishes
trust weights for a trust-weighted arbiter.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from endosec import _native
from endosec.config import Config, checkpoints_possible
from endosec.core.immune import Antigen
from endosec.core.lag import Lags
from endosec.core.model import Outcome
from endosec.gateway.checkpoint import Checkpoints
from endosec.gateway.engine import CannotCatchUp, CatchUpError, MimicGateway, VerdictReport
from endosec.gateway.snapshot import Placement, build_snapshot
from endosec.observe.load import CpuLoad
from endosec.runtime.state import StateError
from endosec.tasks import spawn

__all__ = ["PUMP_SECONDS", "NativePlane"]

PUMP_SECONDS = 0.25
_LOAD_EVERY = 4  # pumps between CPU samples (one a second)
_EVENT_CAPACITY = 65536
_DRAIN_BATCH = 4096


class NativePlane:
    """`endosec._native.DataPlane`, driven by one `MimicGateway`."""

    def __init__(self, gateway: MimicGateway) -> None:
        self.gateway = gateway
        config = gateway.config
        self._wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            self.native = _native.DataPlane(config.gateway.effective_threads, _EVENT_CAPACITY,
                                            wake_w)
        finally:
            os.close(wake_w)  # the data plane holds its own duplicate
        gateway.immunity.self_counts = self.native.self_counts
        self._placements: dict[str, Placement] = {}
        self._epoch = 0
        self._tickets: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next_ticket = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pump: asyncio.Task[None] | None = None
        self.checkpoints: Checkpoints | None = None
        self._checkpointing: asyncio.Task[None] | None = None
        self._last_checkpoint = 0.0
        self._catching_up: Counter[str] = Counter()
        self._stuck: dict[str, int] = {}  # executor -> where its last catch-up failed
        self._held = False  # failed closed (`hold`)

    @property
    def config(self) -> Config:
        """The gateway's configuration, reloads included."""
        return self.gateway.config

    # -- life cycle -------------------------------------------------------------------------

    def attach(self) -> None:
        """Start hearing events on the running loop."""
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._wake_r, self._on_wake)
        self._pump = spawn(self._pumping(), name="endosec-native-pump")

    def open_state(self, state_dir: Path) -> dict[str, int]:
        """Keep the write journal and the checkpoints under ``state_dir``; what an earlier run
        left is recovered (returned: what the journal held)."""
        j = self.config.journal
        recovered = self.native.open_journal(state_dir / "journal", j.sync_interval,
                                             j.segment_bytes)
        if checkpoints_possible(self.config):
            self.checkpoints = Checkpoints(self.config, state_dir / "checkpoints")
            if self.checkpoints.latest is not None:
                recovered["checkpoint"] = self.checkpoints.latest.seq
        return recovered

    def listen(self, host: str, port: int) -> tuple[str, int]:
        """Serve the configured protocol: HTTP (TLS when configured), or DNS over UDP and
        TCP on one port."""
        if self.config.protocol == "dns":
            return self.native.listen_dns(host, port)
        tls = self.config.tls
        return self.native.listen_http(host, port, tls.cert if tls else None,
                                       tls.key if tls else None)

    def close(self, drain_timeout: float) -> None:
        """Stop accepting, let requests in flight finish, shut the runtime down."""
        self.native.stop(drain_timeout)
        if self._pump is not None:
            self._pump.cancel()
        if self._loop is not None:
            self._loop.remove_reader(self._wake_r)
        self.native.close()
        os.close(self._wake_r)
        for fut in self._tickets.values():
            if not fut.done():
                fut.cancel()

    # -- the seam ---------------------------------------------------------------------------

    def placed(self, name: str, address: tuple[str, int]) -> None:
        self._epoch += 1
        self._placements[name] = Placement(address[0], address[1], self._epoch)
        self.changed()

    def forget(self, name: str) -> None:
        self._placements.pop(name, None)

    def hold(self, held: bool) -> None:
        """Fail closed (no executor votes, so every request gets the fail-closed answer) while
        ``held``: the gateway no longer knows that what it would ask is still the boundary's."""
        self._held = held
        self.changed()

    def changed(self) -> None:
        gw = self.gateway
        voters, shadows = ((), ()) if self._held else (gw.voters, gw.shadows)
        self.native.publish(build_snapshot(
            self.config, voters=voters, shadows=shadows, keep_level=gw.keep_level,
            placements=self._placements,
            weights=gw.trust.weights(gw.now) if gw.weighted else None, discounted=gw.discounted,
            refused_clients=gw.attribution.refused(gw.now)
            if gw.config.attribution.refuse else (),
            writes_to=None if self._held else gw.writes_to, memories=gw.immunity.specs(),
            detector=gw.immunity.detector, keep_samples=bool(gw.immunity.selves.maxlen)))

    async def catch_up(self, name: str) -> None:
        """Restore ``name`` from the latest checkpoint if it is behind it, then replay the
        journal after that. Raises `CannotCatchUp` when another attempt would fail the same
        way: writes it needs are gone from the journal, or replay failed at the same write as
        on the attempt before (each attempt starts from a pristine executor)."""
        place = self._placements.get(name)
        if place is None:
            raise CatchUpError(f"{name} was never started")
        self._catching_up[name] += 1
        try:
            latest = self.checkpoints.latest if self.checkpoints is not None else None
            synced = self.native.synced().get(name, 0)
            # (a pristine one also when the checkpoint is at #0: one a new leader adopted)
            if latest is not None and (synced < latest.seq or synced == 0):
                assert self.checkpoints is not None
                try:
                    seq = await self.checkpoints.restore(name, (place.host, place.port))
                except StateError as exc:
                    raise CatchUpError(str(exc)) from exc
                self.native.restored(name, seq)
                self.gateway.events.emit("restored", executor=name, seq=seq,
                                         sha256=latest.sha256)
            result = await self._ticket(lambda ticket: self.native.catch_up(name, ticket))
        finally:
            self._catching_up -= Counter([name])
        if result["ok"]:
            self._stuck.pop(name, None)
            return
        at = self.native.synced().get(name, 0)
        head, _, oldest, _ = self.native.journal()
        if at + 1 < oldest:
            raise CannotCatchUp(f"the journal keeps only #{oldest}..#{head} and no checkpoint "
                                f"covers #{at + 1}..#{oldest - 1}")
        if self._stuck.get(name) == at:
            raise CannotCatchUp(f"{result['detail']}, at the same write as the attempt before")
        self._stuck[name] = at
        raise CatchUpError(str(result["detail"]))

    async def _ticket(self, order: Callable[[int], None]) -> dict[str, Any]:
        """Give the data plane an order that answers with an event carrying a ticket."""
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._next_ticket += 1
        ticket = self._next_ticket
        self._tickets[ticket] = fut
        try:
            order(ticket)
            return await fut
        finally:
            self._tickets.pop(ticket, None)

    # -- checkpoints ------------------------------------------------------------------------

    def _checkpoint_due(self, now: float) -> bool:
        cps = self.checkpoints
        if cps is None or (self._checkpointing is not None and not self._checkpointing.done()):
            return False
        head = self.native.journal()[0]
        done = cps.latest.seq if cps.latest is not None else 0
        c = self.config.checkpoint
        return head - done >= c.every_writes or (
            head > done and now - self._last_checkpoint >= c.every_seconds)

    async def adopt(self) -> None:
        """This gateway comes to lead a boundary: the writes the voters hold are in the
        previous leader's journal, not in this one's. What they hold becomes its checkpoint at
        its own journal's head, and the voters that agree on it are level with its journal
        from there, so an executor cleansed from now on is restored from it."""
        if self.checkpoints is None:
            self.gateway.events.emit("alert", level="warning", message=(
                "leading without checkpoints (no checkpoint section, or an executor without "
                "state export): an executor cleansed from now on gets only the writes this "
                "gateway journals"))
            return
        await self._take_checkpoint(adopt=True)

    async def _take_checkpoint(self, *, adopt: bool = False) -> None:
        """Hold writes, have the voters export, vote, keep the winner, truncate the journal
        (``adopt``: even at the seq of the latest, and the voters agreeing are level)."""
        cps, gw = self.checkpoints, self.gateway
        assert cps is not None
        hold = self.config.checkpoint.hold
        self._last_checkpoint = asyncio.get_running_loop().time()
        try:
            async with asyncio.timeout(hold):
                paused = await self._ticket(lambda t: self.native.pause_writes(t, hold))
                seq = int(paused["seq"])
                voters = [v for v in gw.voters if v in self._placements]
                if not cps.can_take(voters) or (
                        not adopt and cps.latest and cps.latest.seq >= seq):
                    return
                addresses = {v: (self._placements[v].host, self._placements[v].port)
                             for v in voters}
                taken = await cps.take(seq, addresses, gw.strategy,
                                       gw.trust.weights(gw.now) if gw.weighted else None,
                                       gw.discounted)
        except TimeoutError:
            gw.events.emit("alert", level="warning",
                           message=f"a checkpoint took longer than {hold:g}s and was abandoned")
            return
        finally:
            self.native.resume_writes()
        v = taken.verdict
        gw.events.emit("checkpoint", seq=seq, outcome=v.outcome.value, agreed=list(v.agreed),
                       dissented=list(v.dissented), failed=list(v.failed),
                       sha256=taken.checkpoint.sha256 if taken.checkpoint else None,
                       digests=taken.digests)
        if v.dissented or v.failed or not v.accepted:
            gw.verdict(VerdictReport(method="CHECKPOINT", path=f"#{seq}", outcome=v.outcome,
                                     agreed=v.agreed, dissented=v.dissented, failed=v.failed,
                                     reason=v.reason),
                       digests=taken.digests, errors=taken.errors, shadows={})
        if taken.checkpoint is not None:
            if adopt:
                for name in v.agreed:
                    self.native.restored(name, seq)
            self._truncate(seq + 1)

    def _truncate(self, seq: int) -> None:
        """Forget the journal before ``seq``, but never a write that an executor being brought
        level still needs (it was restored from an older checkpoint): the next checkpoint
        takes the rest."""
        synced = self.native.synced()
        needed = (synced.get(name, 0) + 1 for name in self._catching_up)
        self.native.truncate_journal(min([seq, *needed]))

    def status(self) -> dict[str, Any]:
        head, kept, oldest, in_doubt = self.native.journal()
        return {"journal": {"head": head, "kept": kept, "oldest": oldest,
                            "in_doubt": in_doubt},
                "synced": self.native.synced(),
                "recent_verdicts": self.native.recent()}

    def take_lags(self) -> dict[str, Lags]:
        width, side = _native.LAG_BIN_US, _native.LAG_SIDE
        return {name: {route: {((i - side) + 0.5) * width: n for i, n in enumerate(counts) if n}
                       for route, counts in routes.items()}
                for name, routes in self.native.take_lags().items()}

    def figures(self) -> dict[str, Any]:
        """Every native counter and histogram, for the metrics endpoint."""
        return self.native.metrics()

    # -- events up --------------------------------------------------------------------------

    def _on_wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self._wake_r, 4096)
        self._drain()

    def _drain(self) -> None:
        self.gateway.agreements(self.native.take_agreements())
        for event in self.native.drain(_DRAIN_BATCH):
            if event["kind"] in ("catch-up", "paused"):
                fut = self._tickets.get(int(event["ticket"]))
                if fut is not None and not fut.done():
                    fut.set_result(event)
            elif event["kind"] == "in-doubt":
                self.gateway.events.emit("in-doubt", seq=event["seq"], request=event["request"],
                                         method=event["method"],
                                         path=event["path"], status=event["status"],
                                         reason=event["reason"])
            elif event["refused"]:
                self.gateway.refused(method=event["method"], path=event["path"],
                                     reason=event["reason"], request=event["request"])
            else:
                report = _report(event)
                self.gateway.verdict(report, digests=event["digests"],
                                     errors=event["errors"], shadows=event["shadows"],
                                     evidence=event.get("evidence"))
                if report.dissented and event["features"]:
                    self._antigen(report, event["features"])

    def _antigen(self, report: VerdictReport, features: list[int]) -> None:
        """A request after which executors dissented: remembered, unless the dissent was a
        client's doing (attributed divergence is no attack on the executors)."""
        gw = self.gateway
        if gw.attribution.held(report.client, gw.now):
            return
        sampled, counts = self.native.self_counts(features)
        gw.immunity.antigen(Antigen(tuple(features), tuple(counts), sampled, report.dissented,
                                    gw.now))

    async def _pumping(self) -> None:
        weights: Mapping[str, float] | None = None
        loop = asyncio.get_running_loop()
        self._last_checkpoint = loop.time()
        refused, ticks, cpu = 0, 0, CpuLoad()
        while True:
            await asyncio.sleep(PUMP_SECONDS)
            self._drain()
            total = sum(self.figures()["rejected"].values())
            self.gateway.refusals(total - refused)
            refused = total
            self.gateway.client_errors(self.native.take_client_errors())
            self.gateway.threat_update()  # evidence fades: the level falls back
            self.gateway.review_levels()
            immunity = self.gateway.immunity
            for tally in self.native.take_matches():
                immunity.matched(tally, self.gateway.now)
            immunity.review(self.gateway.now)
            if immunity.selves.maxlen:
                immunity.sampled(self.native.take_self_samples())
            ticks += 1
            if ticks % _LOAD_EVERY == 0:
                utilisation = cpu.sample()
                if utilisation is not None:
                    self.gateway.load(utilisation)
            if self._checkpoint_due(loop.time()):
                self._checkpointing = spawn(self._take_checkpoint(), name="endosec-checkpoint")
            if self.gateway.weighted:
                current = self.gateway.trust.weights(self.gateway.now)
                if current != weights:
                    weights = current
                    self.changed()


def _report(event: Mapping[str, Any]) -> VerdictReport:
    client = event.get("client")
    return VerdictReport(method=event["method"], path=event["path"],
                         outcome=Outcome(event["outcome"]), agreed=tuple(event["agreed"]),
                         dissented=tuple(event["dissented"]), failed=tuple(event["failed"]),
                         reason=event["reason"], request=event.get("request"),
                         client=client.rpartition(":")[0].strip("[]") if client else None)
