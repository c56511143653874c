"""A service the operator runs and endosec does not manage: probed, voted on, never started.

Starting it means finding it healthy; stopping it does nothing. Cleansing runs the configured
command or calls the configured webhook, then waits until it is healthy again. Without either,
nothing here can restore it: the cleanse fails with `HumanNeeded` (the gateway raises an alert)
until an operator has restored it and asks for a cleanse (``POST /executors/NAME/cleanse``),
which `acknowledge` turns into a health check.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from urllib.parse import urlsplit

from endosec.attest.measure import Measurement
from endosec.config import UnmanagedCleanse, parse_address
from endosec.core.behaviour import Sample
from endosec.runtime.base import CleanseError, HealthError, HealthProbe, HumanNeeded, StartError
from endosec.runtime.wire import WireError, exchange

__all__ = ["UrlExecutor"]

_POLL = 0.2


class UrlExecutor:
    """A `RuntimeDriver` for an unmanaged ``url:`` executor."""

    def __init__(self, name: str, url: str, *, cleanse: UnmanagedCleanse | None,
                 health_path: str, health_probe: HealthProbe | None, health_timeout: float,
                 start_timeout: float) -> None:
        self._name = name
        self._address = parse_address(url.partition("://")[2].rstrip("/"))
        self._cleanse = cleanse
        self._health_path = health_path
        self._probe = health_probe
        self._health_timeout = health_timeout
        self._start_timeout = start_timeout
        self._acknowledged = False

    @property
    def name(self) -> str:
        return self._name

    @property
    def address(self) -> tuple[str, int]:
        return self._address

    @property
    def running(self) -> bool:
        return True  # not ours to know: health says whether it serves

    @property
    def pid(self) -> int | None:
        return None

    @property
    def needs_a_human(self) -> bool:
        return self._cleanse is None

    def acknowledge(self) -> None:
        """An operator says the service was restored: the next cleanse checks its health."""
        self._acknowledged = True

    async def start(self) -> None:
        try:
            await self.wait_healthy(self._start_timeout)
        except HealthError as exc:
            raise StartError(str(exc)) from exc

    async def stop(self) -> None:
        """Not ours to stop."""

    async def sample(self) -> Sample | None:
        """Nothing: its processes are not endosec's to look at."""
        return None

    async def measure(self) -> Measurement | None:
        """Nothing: what it runs is not endosec's to look at."""
        return None

    def impostor(self) -> str | None:
        """Nothing: whose socket it is cannot be seen from here."""
        return None

    async def health(self) -> bool:
        host, port = self._address
        try:
            async with asyncio.timeout(self._health_timeout):
                if self._probe is not None:
                    return await self._probe(host, port)
                reply = await exchange(host, port, "GET", self._health_path)
        except (WireError, TimeoutError, OSError):
            return False
        return 200 <= reply.status < 300

    async def wait_healthy(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not await self.health():
            if loop.time() >= deadline:
                raise HealthError(f"{self._name}: not healthy at {self._address[0]}:"
                                  f"{self._address[1]}{self._health_path} within {timeout} s")
            await asyncio.sleep(_POLL)

    async def cleanse(self) -> None:
        how = self._cleanse
        if how is None:
            if not self._acknowledged:
                raise HumanNeeded(f"{self._name} is not managed by endosec and has no "
                                  "cleanse command or webhook: a human must restore it, then "
                                  f"POST /executors/{self._name}/cleanse")
            self._acknowledged = False
        else:
            try:
                async with asyncio.timeout(how.timeout):
                    await (_run(how.command) if how.command is not None
                           else _call(how.webhook or ""))
            except (OSError, WireError, TimeoutError, CleanseError) as exc:
                raise CleanseError(f"{self._name}: cleanse failed: {exc}") from exc
        try:
            await self.wait_healthy(self._start_timeout)
        except HealthError as exc:
            raise CleanseError(str(exc)) from exc


async def _run(command: list[str]) -> None:
    proc = await asyncio.create_subprocess_exec(*command, stdin=asyncio.subprocess.DEVNULL)
    try:
        code = await proc.wait()
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    if code != 0:
        raise CleanseError(f"cleanse command {command[0]!r} exited with status {code}")


async def _call(webhook: str) -> None:
    url = urlsplit(webhook)
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    tls = ssl.create_default_context() if url.scheme == "https" else None
    reply = await exchange(host, port, "POST", url.path or "/", tls=tls)
    if not 200 <= reply.status < 300:
        raise CleanseError(f"cleanse webhook answered {reply.status}")
