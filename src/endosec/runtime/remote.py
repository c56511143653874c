"""An executor that `endosec agent` runs on another host, driven over the agent's API.

Only the control path goes through the agent (start, stop, cleanse, health): requests go from
the data plane straight to the address the agent reports. The API is HTTPS with the agent's
certificate pinned (the configured PEM is the only one trusted; host names are not checked,
since agents are usually reached by address) and a bearer token; never plain text.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from typing import Any

from endosec.config import AgentRef, parse_address
from endosec.core.behaviour import Sample
from endosec.runtime.base import CleanseError, HealthError, RuntimeDriverError, StartError
from endosec.runtime.wire import WireError, exchange

__all__ = ["AgentExecutor", "pinned"]

_POLL = 0.2  # seconds between health polls while waiting


def pinned(ca: str) -> ssl.SSLContext:
    """A client context that trusts exactly the given certificate (or what it signed)."""
    context = ssl.create_default_context(cafile=ca)
    context.check_hostname = False
    return context


class AgentExecutor:
    """A `RuntimeDriver` for one executor on an agent."""

    def __init__(self, name: str, ref: AgentRef, *, start_timeout: float,
                 health_timeout: float) -> None:
        self._name = name
        self._remote = ref.executor or name
        self._host, self._port = parse_address(ref.url.partition("://")[2].rstrip("/"))
        self._tls = pinned(str(ref.ca))
        token = ref.resolved_token()
        if token is None:
            raise ValueError(f"{name}: no agent token (agent.token, or ${ref.token_env})")
        self._auth = ((b"authorization", b"Bearer " + token.encode()),)
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

    async def _call(self, method: str, action: str, timeout: float) -> dict[str, Any]:
        path = f"/executors/{self._remote}" + (f"/{action}" if action else "")
        async with asyncio.timeout(timeout):
            reply = await exchange(self._host, self._port, method, path, headers=self._auth,
                                   tls=self._tls)
        try:
            info: dict[str, Any] = json.loads(reply.body)
        except ValueError as exc:
            raise RuntimeDriverError(f"{self._name}: the agent answered {reply.status} "
                                     "without JSON") from exc
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
