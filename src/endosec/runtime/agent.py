"""`endosec agent`: runs executors on its own host for a gateway elsewhere.

The agent starts, stops, cleanses, health-checks, samples and measures local executors exactly
as the gateway does for its own (`endosec.runtime.process`: templates, sandbox, supervisor),
and offers that over HTTPS to the gateway's `endosec.runtime.remote` driver. It is only the
control path: requests go from the gateway straight to each executor's address. The gateway
pins the agent's certificate; the two admit each other by proving possession of their identity
keys (`endosec.identity.handshake`), and every call but ``/healthz`` and the admission itself
carries the session the gateway was given (``Authorization: Session ID``). Every refusal is
logged as an event. Executors die with the agent.

API (JSON; ``NAME`` is an executor of this agent):

* ``POST /admission/nonce``, then ``POST /admission/proof``: the two steps of admission (401
  with the reason when refused);
* ``GET /executors``: every executor's state; ``GET /executors/NAME``: one, with ``healthy``;
* ``GET /executors/NAME/sample`` and ``/measure``: its state with what it does now
  (``sample``, `endosec.core.behaviour`) or what it runs (``measurement``: ``{"executor",
  "digests": {label: digest}}``, `endosec.attest.measure`), measured on this host; null when
  it does not run;
* ``POST /executors/NAME/start|stop|cleanse``: do it, answer once done (start and cleanse once
  healthy) with the executor's ``host``, ``port``, ``running``, ``pid``;
* ``GET /healthz``: the agent is alive.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from endosec.config import Admitting, ExecutorConfig, TlsConfig, parse_address
from endosec.configfile import ConfigError, expand, read_yaml, readable_tls, validate
from endosec.gateway.server import ServerState, serve, submitting
from endosec.identity.admission import Admission, Refusal, Verifier
from endosec.identity.handshake import Responder
from endosec.identity.keys import IdentityError, load_identity, load_trust
from endosec.observe.events import EventLog
from endosec.protocols.http import HttpLimits, Request, Response, encode_response
from endosec.runtime.base import RuntimeDriverError
from endosec.runtime.drivers import local_spec
from endosec.runtime.opens import watch_opens
from endosec.runtime.process import ProcessExecutor, reap_leftovers

__all__ = ["AgentConfig", "AgentHandler", "load_agent_config", "serve_agent"]


class AgentConfig(Admitting):
    """The agent's file: where it listens, its certificate, its identity and whom it admits
    (``identity`` is the agent's key, ``keys`` or ``authority`` say which gateways), its
    executors."""

    nobody_admitted = ("give keys (the gateways' public keys) or authority (a CA that "
                       "certifies gateways' keys): nothing else admits a gateway")

    listen: str = "127.0.0.1:8443"
    tls: TlsConfig
    admit_for: float = Field(default=3600.0, gt=0,
                             description="seconds a gateway stays admitted after its proof")
    executors: list[ExecutorConfig] = Field(min_length=1)

    @field_validator("listen")
    @classmethod
    def _address(cls, v: str) -> str:
        parse_address(v)
        return v

    @field_validator("executors")
    @classmethod
    def _local(cls, v: list[ExecutorConfig]) -> list[ExecutorConfig]:
        names = [e.name for e in v]
        for i, e in enumerate(v):
            if e.argv is None:
                raise ValueError(f"[{i}] ({e.name}): an agent runs argv executors only")
            if names.count(e.name) > 1:
                raise ValueError(f"executor names must be unique; repeated: {e.name}")
        return v


def _responder(config: AgentConfig) -> Responder:
    """The agent's side of admission, from its settings (`IdentityError` naming the setting)."""
    identity = load_identity(config.identity, config.certificate)
    verifier = Verifier(identity.public, load_trust(config.keys, config.authority),
                        role="gateway")
    return Responder(identity, Admission(verifier, admit_for=config.admit_for))


def load_agent_config(path: Path) -> AgentConfig:
    data, locate = read_yaml(path)
    here = path.resolve().parent
    config = validate(AgentConfig, expand(data, here), str(path), locate)
    executors = [e.model_copy(update={
        "cwd": here / e.cwd if e.cwd is not None else here,
        "template": here / e.template if e.template is not None else None}) for e in
        config.executors]
    tls = TlsConfig(cert=here / config.tls.cert, key=here / config.tls.key)
    readable_tls(tls, str(path))
    config = config.model_copy(update={"executors": executors, "tls": tls,
                                       **config.files_under(here)})
    try:
        _responder(config)
    except IdentityError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return config


def _json(status: int, payload: Any) -> bytes:
    response = Response(status, b"", ((b"content-type", b"application/json"),
                                      (b"cache-control", b"no-store")),
                        json.dumps(payload).encode())
    return encode_response(response, keep_alive=False, head_only=False)


class AgentHandler:
    """The API over this host's executors (one operation at a time per executor), open to a
    gateway once admitted. Admissions and refusals go to ``log`` (JSON-lines events)."""

    def __init__(self, executors: dict[str, ProcessExecutor], door: Responder, *,
                 clock: Callable[[], float] = time.time,
                 log: Callable[..., object] | None = None) -> None:
        self.executors = executors
        self._door = door
        self._clock = clock
        self._log = log or EventLog().emit
        self._locks = {name: asyncio.Lock() for name in executors}

    def _refused(self, status: int, peer: str, step: str, refusal: Refusal) -> bytes:
        self._log("admission-refused", peer=peer, step=step, reason=refusal.reason,
                  detail=refusal.detail, key=refusal.key.hex() or None)
        return _json(status, {"error": f"refused: {refusal}"})

    def _admission(self, step: str, request: Request, peer: str) -> bytes:
        """One step of admission: the nonce (and the agent's own proof), or the proof."""
        now = self._clock()
        try:
            message = json.loads(request.body)
            if not isinstance(message, dict):
                raise ValueError("not a JSON object")
            if step == "nonce":
                answer = self._door.hello(message, now)
                if isinstance(answer, Refusal):
                    return self._refused(401, peer, step, answer)
                return _json(200, answer)
            admitted = self._door.admit(message, now)
        except (ValueError, RecursionError) as exc:
            return self._refused(400, peer, step, Refusal("malformed", str(exc), b""))
        if isinstance(admitted, Refusal):
            return self._refused(401, peer, step, admitted)
        self._log("admitted", peer=peer, key=admitted.key.hex(), until=admitted.until)
        return _json(200, Responder.welcome(admitted, now))

    def _session(self, request: Request) -> bytes | None:
        scheme, _, value = (request.header(b"authorization") or b"").partition(b" ")
        try:
            session = bytes.fromhex(value.strip().decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            return None
        if scheme.lower() != b"session":
            return None
        return self._door.admission.session(session, self._clock())

    async def __call__(self, request: Request, peer: str) -> bytes:
        path = request.target.decode("latin-1").partition("?")[0].strip("/").split("/")
        if path == ["healthz"]:
            return _json(200, {"alive": True})
        if path[0] == "admission" and path[1:] in (["nonce"], ["proof"]) \
                and request.method == b"POST":
            return self._admission(path[1], request, peer)
        if self._session(request) is None:
            return self._refused(401, peer, "call", Refusal(
                "no-session", "the session is unknown or expired: prove again", b""))
        if path == ["executors"] and request.method == b"GET":
            return _json(200, [self._state(e) for e in self.executors.values()])
        if len(path) < 2 or path[0] != "executors" or path[1] not in self.executors:
            return _json(404, {"error": "no such executor"})
        executor = self.executors[path[1]]
        if len(path) == 2 and request.method == b"GET":
            return _json(200, {**self._state(executor), "healthy": await executor.health()})
        if path[2:] == ["sample"] and request.method == b"GET":
            sample = await executor.sample()
            return _json(200, {**self._state(executor),
                               "sample": None if sample is None else sample.as_dict()})
        if path[2:] == ["measure"] and request.method == b"GET":
            measured = await executor.measure()
            return _json(200, {**self._state(executor), "measurement": None if measured is None
                               else {"executor": measured.executor,
                                     "digests": dict(measured.digests)}})
        actions: dict[str, Callable[[], Any]] = {
            "start": executor.start, "stop": executor.stop, "cleanse": executor.cleanse}
        if len(path) != 3 or path[2] not in actions or request.method != b"POST":
            return _json(404, {"error": "not found"})
        async with self._locks[executor.name]:
            try:
                if path[2] == "start" and executor.running:
                    await executor.stop()  # a gateway starting afresh wants a pristine one
                await actions[path[2]]()
            except RuntimeDriverError as exc:
                return _json(502, {"error": str(exc)})
        return _json(200, self._state(executor))

    @staticmethod
    def _state(executor: ProcessExecutor) -> dict[str, Any]:
        host, port = executor.address
        return {"name": executor.name, "host": host, "port": port,
                "running": executor.running, "pid": executor.pid}


def server_tls(tls: TlsConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.cert, tls.key)
    return context


async def serve_agent(config: AgentConfig, state_dir: Path, *, stop: asyncio.Event,
                      on_ready: Callable[[str], None]) -> None:
    """Serve the API until ``stop`` is set, then stop every executor."""
    isolated = [e.name for e in config.executors if e.network == "isolated"]
    if isolated:  # the gateway reaches them on this host's address, not through a segment
        raise ValueError(f"network: isolated is for executors a gateway runs itself, not an "
                         f"agent's ({', '.join(isolated)})")
    scratch = state_dir / "executors"
    stale = reap_leftovers(scratch)
    if stale:
        print(f"endosec agent: stopped executors an earlier run left: {'; '.join(stale)}",
              file=sys.stderr, flush=True)
    opens, unwatched = watch_opens()
    if unwatched is not None:
        print(f"endosec agent: {unwatched}: the rule read-outside does not apply here",
              file=sys.stderr, flush=True)
    executors = {e.name: ProcessExecutor(local_spec(e, scratch_root=scratch, health_probe=None),
                                         opens)
                 for e in config.executors}
    state = ServerState(submit=submitting(AgentHandler(executors, _responder(config))),
                        limits=HttpLimits(), header_timeout=10.0, idle_timeout=60.0,
                        max_connections=64)
    host, port = parse_address(config.listen)
    server = await serve(state, host, port, tls=server_tls(config.tls))
    try:
        bound = server.sockets[0].getsockname()
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        on_ready(f"https://{shown}:{bound[1]}")
        await stop.wait()
    finally:
        server.close()
        await asyncio.gather(*(e.stop() for e in executors.values()), return_exceptions=True)
        if opens is not None:
            opens.close()
