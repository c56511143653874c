"""An executor that `endosec agent` runs on another host, driven over the agent's API.

Only the control path goes through the agent (start, stop, cleanse, health, and the samples and
measurements the agent takes of the executor on its host): requests go from the data plane
straight to the address the agent reports. The API is HTTPS with the agent's certificate
pinned (the configured PEM is the only one trusted; host names are not checked, since agents
are usually reached by address); never plain text. Before any call the gateway and the agent
admit each other (`endosec.identity.handshake`): each proves it holds its identity key, the
gateway gets a session, and proves itself again at random times before the admission ends, or
at once when the agent no longer knows the session.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import ssl
import time
from collections.abc import Callable
from typing import Any

from endosec.attest.measure import Measurement
from endosec.config import AgentRef, parse_address
from endosec.core.behaviour import Sample
from endosec.identity.admission import Refusal, Verifier
from endosec.identity.handshake import Initiator
from endosec.identity.keys import IdentityError, load_identity, load_trust
from endosec.protocols.http import Response
from endosec.runtime.base import CleanseError, HealthError, RuntimeDriverError, StartError
from endosec.runtime.wire import WireError, exchange

__all__ = ["AgentExecutor", "credential_problems", "pinned"]

_POLL = 0.2  # seconds between health polls while waiting
_RENEW_BEFORE = 0.9  # prove again at the latest this far into the admission
_DIGEST = re.compile(r"[0-9a-f]{64}")  # as `endosec.attest.measure` writes them


def pinned(ca: str) -> ssl.SSLContext:
    """A client context that trusts exactly the given certificate (or what it signed)."""
    context = ssl.create_default_context(cafile=ca)
    context.check_hostname = False
    return context


def _initiator(ref: AgentRef) -> Initiator:
    identity = load_identity(ref.identity, ref.certificate)
    return Initiator(identity, Verifier(identity.public, load_trust(ref.keys, ref.authority),
                                        role="agent"))


def credential_problems(ref: AgentRef) -> list[str]:
    """What keeps the gateway from admitting the agent or being admitted, by setting."""
    try:
        _initiator(ref)
    except IdentityError as exc:
        return [f"agent.{exc}"]
    return []


class AgentExecutor:
    """A `RuntimeDriver` for one executor on an agent."""

    def __init__(self, name: str, ref: AgentRef, *, start_timeout: float,
                 health_timeout: float, clock: Callable[[], float] = time.time,
                 rng: random.Random | None = None) -> None:
        self._name = name
        self._remote = ref.executor or name
        self._host, self._port = parse_address(ref.url.partition("://")[2].rstrip("/"))
        self._tls = pinned(str(ref.ca))
        self._initiator = _initiator(ref)
        self._reprove_every = ref.reprove_every
        self._clock = clock
        self._rng = rng or random.SystemRandom()
        self._admitting = asyncio.Lock()
        self._session: bytes | None = None
        self._renew_at = 0.0
        self._start_timeout = start_timeout
        self._health_timeout = health_timeout
        self._address: tuple[str, int] = (self._host, 0)
        self._running = False
        self._pid: int | None = None

    @property
    def name(self) -> str:
        return self._name

    @property
    def address(self) -> tuple[str, int]:
        return self._address

    @property
    def running(self) -> bool:
        """As the agent last reported it (an agent out of reach is not known to be down)."""
        return self._running

    @property
    def pid(self) -> int | None:
        return self._pid

    async def _post(self, path: str, message: dict[str, Any]) -> dict[str, Any]:
        """One admission step; `RuntimeDriverError` naming why when the agent refuses."""
        reply = await exchange(self._host, self._port, "POST", path, tls=self._tls,
                               body=json.dumps(message).encode(),
                               headers=((b"content-type", b"application/json"),))
        info = self._json(reply)
        if reply.status != 200:
            raise RuntimeDriverError(f"{self._name}: the agent refused admission: "
                                     f"{info.get('error', reply.status)}")
        return info

    async def _admit(self) -> None:
        """Admit the agent and be admitted by it: a new session, and when to renew it."""
        self._session = None
        answer = await self._post("/admission/nonce", self._initiator.hello(self._clock()))
        try:
            message = self._initiator.proof(answer, self._clock())
        except ValueError as exc:
            raise RuntimeDriverError(f"{self._name}: the agent's admission answer is "
                                     f"malformed: {exc}") from exc
        if isinstance(message, Refusal):
            raise RuntimeDriverError(f"{self._name}: the agent did not prove its identity: "
                                     f"{message}")
        welcome = await self._post("/admission/proof", message)
        try:
            session, lasts = bytes.fromhex(welcome["session"]), float(welcome["for"])
        except (KeyError, TypeError, ValueError) as exc:
            raise RuntimeDriverError(f"{self._name}: the agent's admission answer is "
                                     f"malformed: {exc!r}") from exc
        self._session = session
        self._renew_at = self._clock() + min(self._rng.expovariate(1 / self._reprove_every),
                                             _RENEW_BEFORE * lasts)

    async def _session_for_call(self, stale: bytes | None = None) -> bytes:
        """A live session: the current one, or a new admission when it is due, or when
        ``stale`` (refused by the agent) is still the current one."""
        async with self._admitting:
            if self._session is None or self._session == stale \
                    or self._clock() >= self._renew_at:
                await self._admit()
            assert self._session is not None
            return self._session

    async def _exchange(self, method: str, path: str) -> Response:
        """The call under a session; an agent that no longer knows it (expired, or the agent
        restarted) gets one new admission and the call again."""
        session = await self._session_for_call()
        reply = await self._send(method, path, session)
        if reply.status == 401:
            reply = await self._send(method, path, await self._session_for_call(stale=session))
        return reply

    async def _send(self, method: str, path: str, session: bytes) -> Response:
        return await exchange(self._host, self._port, method, path, tls=self._tls,
                              headers=((b"authorization", b"Session " + session.hex().encode()),))

    def _json(self, reply: Response) -> dict[str, Any]:
        try:
            info = json.loads(reply.body)
        except ValueError as exc:
            raise RuntimeDriverError(f"{self._name}: the agent answered {reply.status} "
                                     "without JSON") from exc
        if not isinstance(info, dict):
            raise RuntimeDriverError(f"{self._name}: the agent answered {reply.status} "
                                     "with JSON that is not an object")
        return info

    async def _call(self, method: str, action: str, timeout: float) -> dict[str, Any]:
        path = f"/executors/{self._remote}" + (f"/{action}" if action else "")
        async with asyncio.timeout(timeout):
            reply = await self._exchange(method, path)
        info = self._json(reply)
        if reply.status != 200:
            raise RuntimeDriverError(f"{self._name}: the agent refused {action or 'status'}: "
                                     f"{info.get('error', reply.status)}")
        self._address = (str(info["host"]), int(info["port"]))
        self._running = bool(info["running"])
        self._pid = info.get("pid")
        return info

    async def start(self) -> None:
        try:
            await self._call("POST", "start", self._start_timeout + 5)
        except (WireError, TimeoutError, RuntimeDriverError) as exc:
            raise StartError(f"{self._name}: {exc or 'the agent did not answer in time'}") \
                from exc

    async def stop(self) -> None:
        try:
            await self._call("POST", "stop", self._start_timeout)
        except (WireError, TimeoutError) as exc:
            raise RuntimeDriverError(f"{self._name}: cannot reach the agent to stop it: "
                                     f"{exc}") from exc

    async def health(self) -> bool:
        try:
            info = await self._call("GET", "", self._health_timeout)
        except (WireError, TimeoutError, RuntimeDriverError):
            return False
        return bool(info["healthy"])

    async def sample(self) -> Sample | None:
        """The agent's sample of the executor on its host (None: none, or out of reach)."""
        try:
            info = await self._call("GET", "sample", self._health_timeout)
            return None if info.get("sample") is None \
                else Sample.from_dict(self._name, info["sample"])
        except (WireError, TimeoutError, RuntimeDriverError, ValueError, KeyError, TypeError):
            return None

    def impostor(self) -> str | None:
        """Nothing: the agent checks whose socket it is when it starts the executor."""
        return None

    async def measure(self) -> Measurement | None:
        """The agent's measurement of the executor on its host, under this executor's name
        (None: none, out of reach, or not a well-formed measurement of it)."""
        try:
            # the agent hashes every file the executor runs from: allow what a start may take
            info = await self._call("GET", "measure", self._start_timeout)
            return None if info.get("measurement") is None \
                else self._measurement(info["measurement"])
        except (WireError, TimeoutError, RuntimeDriverError, ValueError, KeyError, TypeError):
            return None

    def _measurement(self, data: Any) -> Measurement:
        """The agent's ``{"executor", "digests"}`` as a `Measurement` (ValueError when it is
        not one of this executor: what the gateway judges must be well-formed)."""
        if not isinstance(data, dict) or data.get("executor") != self._remote:
            raise ValueError("not a measurement of this executor")
        digests = data.get("digests")
        if not isinstance(digests, dict) or not all(
                isinstance(label, str) and isinstance(digest, str) and _DIGEST.fullmatch(digest)
                for label, digest in digests.items()):
            raise ValueError("digests must map labels to SHA-256 hex digests")
        return Measurement(self._name, dict(digests))

    async def wait_healthy(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not await self.health():
            if loop.time() >= deadline:
                raise HealthError(f"{self._name}: not healthy on its agent within {timeout} s")
            await asyncio.sleep(_POLL)

    async def cleanse(self) -> None:
        try:
            await self._call("POST", "cleanse", self._start_timeout + 10)
        except (WireError, TimeoutError, RuntimeDriverError) as exc:
            raise CleanseError(f"{self._name}: remote cleanse failed: "
                               f"{exc or 'the agent did not answer in time'}") from exc
