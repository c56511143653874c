"""Assemble and run one gateway: executors, engine, client listener and admin listener."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from endosec.cluster.control import ControlError
from endosec.cluster.member import Keys, Member, MemberError, default_name
from endosec.cluster.steward import Steward
from endosec.cluster.store import EMBEDDED, StoreError, open_store
from endosec.config import Config, ExecutorConfig, parse_address
from endosec.gateway.admin import AdminHandler
from endosec.gateway.dns import dns_health_probe
from endosec.gateway.engine import MimicGateway, StartupError
from endosec.gateway.learning import OnlineLearning, load_key
from endosec.gateway.native import NativePlane
from endosec.gateway.server import ServerState, serve, submitting
from endosec.observe.events import EventLog
from endosec.observe.evidence import EvidenceStore, Redaction
from endosec.observe.ledger import Ledger
from endosec.observe.metrics import GatewayMetrics
from endosec.protocols.http import HttpLimits
from endosec.runtime.base import HealthProbe
from endosec.tasks import cancel_all, spawn

__all__ = ["Listening", "default_state_dir", "run", "run_forever"]

try:
    from uvloop import run as _run_loop
except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
    from asyncio import run as _run_loop  # type: ignore[assignment]


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/endosec``, else ``~/.local/state/endosec``."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "endosec"


@dataclass(frozen=True, slots=True)
class Listening:
    """Where the gateway ended up listening (ports may have been chosen by the system)."""

    serve_url: str
    admin_url: str
    executors: tuple[str, ...]


def _url(server: asyncio.Server) -> str:
    host, port = server.sockets[0].getsockname()[:2]
    return f"http://{_host(host)}:{port}"


Reload = Callable[[], Config]
"""Reads the configuration file again (with the command line's overrides) and validates it;
raises on anything wrong."""


async def run(config: Config, *, state_dir: Path, stop: asyncio.Event,
              on_ready: Callable[[Listening], None], reload: Reload | None = None,
              hangup: asyncio.Event | None = None) -> None:
    """Serve until ``stop`` is set, then shut everything down (executors included). Each time
    ``hangup`` is set, ``reload`` gives a new configuration and the gateway applies it."""
    state_dir.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(state_dir / "ledger")
    events = EventLog(config.gateway.events, keep=500, ledger=ledger)
    metrics = GatewayMetrics()
    limits = config.limits
    http_limits = HttpLimits(max_header_bytes=limits.max_header_bytes,
                             max_headers=limits.max_headers,
                             max_body_bytes=limits.max_request_body,
                             max_response_bytes=limits.max_response_body)
    gateway = MimicGateway(config, scratch_root=state_dir / "executors", events=events,
                           metrics=metrics, health_probe=_probe_for(config))
    ev = config.evidence
    gateway.evidence = EvidenceStore(
        state_dir / "evidence", keep=ev.keep, max_bytes=ev.max_bytes,
        redaction=Redaction(frozenset(ev.redact.headers), ev.redact.fields, ev.redact.patterns))
    native: NativePlane | None = None
    servers: list[asyncio.Server] = []
    member: Member | None = None
    try:
        member = await _member(config, state_dir, ledger, events)
        events.emit("config-loaded", executors=[e.name for e in config.executors],
                    sha256=hashlib.sha256(config.model_dump_json().encode()).hexdigest())
        spawn(_tick_ledger(ledger), name="endosec-ledger-tick")
        native = NativePlane(gateway)
        gateway.immunity.open(state_dir)
        native.changed()  # limits and journal bounds before anything else
        if config.protocol == "http":  # DNS queries never change executor state: no journal
            recovered = native.open_state(state_dir)
            events.emit("journal-opened", **recovered)
        native.attach()
        metrics.serve_native(native.figures)
        handler = AdminHandler(gateway, config.admin.resolved_token(),
                               read_token=config.admin.resolved_read_token(),
                               public_read=config.admin.public_read)
        admin = ServerState(submit=submitting(handler),
                            limits=http_limits, header_timeout=limits.client_header_timeout,
                            idle_timeout=limits.client_idle_timeout, max_connections=64)
        servers.append(await serve(admin, *parse_address(config.admin.listen)))
        steward = await _join(member, gateway, native, admin=_url(servers[-1]))
        await _start(gateway, native, steward)
        serve_url = _listen(config, native, steward)
        _learn(config, member, gateway, state_dir, ledger)
        events.emit("serving", url=serve_url, admin=_url(servers[-1]),
                    active=list(gateway.voters))
        on_ready(Listening(serve_url, _url(servers[-1]), gateway.voters))
        if reload is not None and hangup is not None:
            spawn(_reloading(gateway, handler, reload, hangup), name="endosec-reload")
        await stop.wait()
    finally:
        if native is not None:
            native.close(config.gateway.drain_timeout)
        for server in servers:
            server.close()
        await cancel_all()  # first, so no cleanse in flight restarts an executor
        await gateway.stop()
        events.emit("stopped")
        events.close()
        if member is not None:
            await member.leave()


async def _member(config: Config, state_dir: Path, ledger: Ledger,
                  events: EventLog) -> Member:
    """This gateway's membership of its boundary, its ledger checked against its anchor."""
    c = config.cluster
    try:
        store = open_store(c.store, state_dir, timeout=c.timeout)
    except StoreError as exc:
        raise StartupError(f"cluster: {exc}") from exc
    if config.immune.learn.enabled and store.url == EMBEDDED:
        await store.close()
        raise StartupError("immune.learn: learning is done with the boundary's other gateways, "
                           "through a shared cluster store (cluster.store)")
    member = Member(store, Keys(c.boundary), c.name or "", ledger=ledger, events=events, card={},
                    lease_ttl=c.lease_ttl, anchor_every=c.anchor_every, chain_keep=c.chain_keep,
                    stale_after=c.stale_after)
    try:
        await member.check()
    except (MemberError, StoreError) as exc:
        await store.close()
        raise StartupError(f"cluster: {exc}") from exc
    return member


async def _join(member: Member, gateway: MimicGateway, plane: NativePlane, *,
                admin: str) -> Steward:
    """Take this gateway's place (named, by default, after the admin port it got), before it
    starts its executors: a follower must not decide anything about them."""
    member.name = member.name or default_name(int(admin.rsplit(":", 1)[1]))
    member.card.update(admin=admin, pid=os.getpid())
    try:
        await member.join()
    except StoreError as exc:
        raise StartupError(f"cluster: {exc}") from exc
    steward = Steward(member.store, member.keys, member, gateway,
                      poll=gateway.config.cluster.poll, events=gateway.events)
    gateway.cluster = lambda: {**member.status(), **steward.status()}
    member.on_stale = plane.hold
    spawn(member.run(), name="endosec-cluster")
    return steward


async def _start(gateway: MimicGateway, plane: NativePlane, steward: Steward) -> None:
    """Start the executors: as the boundary's leader, resuming from the control state its
    previous leader left in a shared store; as a follower, by its leader's."""
    leader = steward.member.role == "leader"
    shared = steward.store.url != EMBEDDED  # the embedded store holds only this gateway's
    view = None
    if shared or not leader:
        wait = max(e.health.start_timeout for e in gateway.config.executors) + 5.0
        try:
            view = await steward.published(wait)
        except (StoreError, ControlError) as exc:
            raise StartupError(f"cluster: the control state: {exc}") from exc
        if view is None and not leader:
            raise StartupError(f"cluster: {steward.member.leader} leads the boundary but "
                               f"published no control state within {wait:g} s")
    await gateway.start(plane, leader=leader, view=view)


def _listen(config: Config, plane: NativePlane, steward: Steward) -> str:
    """Open the client listener; then, in a boundary of several gateways, take part in its
    control (the embedded store is this gateway's alone). Returns the listener's URL."""
    host, port = plane.listen(*parse_address(config.listen))
    scheme = "dns" if config.protocol == "dns" else "https" if config.tls is not None else "http"
    serve_url = f"{scheme}://{_host(host)}:{port}"
    steward.member.card["serve"] = config.cluster.advertise or serve_url
    if steward.store.url != EMBEDDED:
        plane.gateway.on_control = steward.changed
        steward.member.catch_up = steward.step
        spawn(steward.run(), name="endosec-control")
    return serve_url


def _learn(config: Config, member: Member, gateway: MimicGateway, state_dir: Path,
           ledger: Ledger) -> None:
    """Take part in the boundary's federated rounds, when ``immune.learn`` says so."""
    if config.immune.learn.enabled:
        learning = OnlineLearning(config.immune.learn, member, gateway.immunity,
                                  key=load_key(state_dir / "immune.key"), ledger=ledger)
        spawn(learning.run(), name="endosec-immune-learning")


def _probe_for(config: Config) -> Callable[[ExecutorConfig], HealthProbe | None]:
    if config.protocol == "dns":
        return lambda e: dns_health_probe(e.health.dns_query or "")
    return lambda e: None


async def _reloading(gateway: MimicGateway, admin: AdminHandler, reload: Reload,
                     hangup: asyncio.Event) -> None:
    """On every SIGHUP: read the file again; apply it, or keep the running one and say why."""
    while True:
        await hangup.wait()
        hangup.clear()
        events = gateway.events
        try:
            config = reload()
            if config.protocol != gateway.config.protocol:
                raise ValueError("protocol: a reload cannot change the protocol")
            unchanged = await gateway.reconfigure(config)
        except Exception as exc:  # a bad file must never take the running gateway down
            events.emit("reload-failed", level="warning", message=str(exc))
            continue
        admin.token = config.admin.resolved_token()
        admin.read_token = config.admin.resolved_read_token()
        admin.public_read = config.admin.public_read
        events.emit("config-loaded", executors=[e.name for e in config.executors],
                    sha256=hashlib.sha256(config.model_dump_json().encode()).hexdigest(),
                    reload=True, needs_restart=list(unchanged))


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def _tick_ledger(ledger: Ledger) -> None:
    """Let the ledger write out a batch that has waited long enough, even when traffic stops."""
    while True:
        await asyncio.sleep(0.1)
        ledger.tick(time.time())


def run_forever(config: Config, *, state_dir: Path, on_ready: Callable[[Listening], None],
                reload: Reload | None = None) -> None:
    """Run with uvloop when available, until SIGINT or SIGTERM; SIGHUP reloads."""
    async def main() -> None:
        stop, hangup = asyncio.Event(), asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, hangup.set)
        await run(config, state_dir=state_dir, stop=stop, on_ready=on_ready, reload=reload,
                  hangup=hangup)

    with contextlib.suppress(KeyboardInterrupt):
        _run_loop(main())
