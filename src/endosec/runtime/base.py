"""The runtime-driver seam: what the controller needs from anything that hosts an executor.

A driver starts, stops, health-checks and cleanses one executor: a local process
(`endosec.runtime.process`), an executor `endosec agent` runs on another host
(`endosec.runtime.remote`), or a service endosec does not manage (`endosec.runtime.unmanaged`);
`endosec.runtime.drivers` picks one per configured executor. Kubernetes pods would plug in the
same way: implement `RuntimeDriver`, raise these exceptions.

Exceptions form one tree, so the controller can catch every runtime failure at once::

    RuntimeDriverError
     ├── StartError    the executor did not come up healthy (spawn failed, exited, timed out)
     ├── HealthError   a running executor did not answer its health check in time
     └── CleanseError  stopping, wiping or restarting during a cleanse failed
          └── HumanNeeded  nothing here can restore it (an unmanaged service): a person must

Backend errors (``OSError`` and friends) are re-raised as one of these with ``from exc``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from endosec.attest.measure import Measurement
    from endosec.core.behaviour import Sample

__all__ = [
    "CleanseError",
    "HealthError",
    "HealthProbe",
    "HumanNeeded",
    "RuntimeDriver",
    "RuntimeDriverError",
    "StartError",
]


HealthProbe = Callable[[str, int], Awaitable[bool]]
"""A protocol's own health check: ``probe(host, port)`` is True when the executor serves."""


class RuntimeDriverError(Exception):
    """Base of every failure a runtime driver reports."""


class StartError(RuntimeDriverError):
    """The executor could not be started or never became healthy; the message carries why."""


class HealthError(RuntimeDriverError):
    """The executor did not become healthy within the time it was given."""


class CleanseError(RuntimeDriverError):
    """A cleanse (stop, wipe, restore, start) failed; the cause is chained."""


class HumanNeeded(CleanseError):
    """The executor cannot be restored from here; an operator must, then ask for a cleanse."""


@runtime_checkable
class RuntimeDriver(Protocol):
    """One executor's lifecycle, as the controller drives it."""

    @property
    def name(self) -> str:
        """The executor's name, unique within a pool."""
        ...

    @property
    def address(self) -> tuple[str, int]:
        """Where the input agent sends requests: ``(host, port)``."""
        ...

    @property
    def running(self) -> bool:
        """False once the executor has stopped or died on its own (a crash)."""
        ...

    @property
    def pid(self) -> int | None:
        """The process (group leader) serving it, where there is one to name."""
        ...

    async def start(self) -> None:
        """Bring the executor up from its pristine image; return only once it is healthy."""
        ...

    async def stop(self) -> None:
        """Stop the executor and everything it spawned; idempotent."""
        ...

    async def health(self) -> bool:
        """One bounded health check; never raises."""
        ...

    async def wait_healthy(self, timeout: float) -> None:
        """Poll `health` until it passes or raise `HealthError` after ``timeout`` seconds."""
        ...

    async def cleanse(self) -> None:
        """Stop, wipe all state, restore the pristine image and start again."""
        ...

    async def sample(self) -> Sample | None:
        """What it does now besides answering (`endosec.core.behaviour`), where the driver
        can see it (None: it cannot, or the executor does not run); never raises."""
        ...

    async def measure(self) -> Measurement | None:
        """What is running now (`endosec.attest.measure`), where the driver can see it (None:
        it cannot, or the executor does not run); never raises."""
        ...

    def impostor(self) -> str | None:
        """Who else holds the address requests go to, in words (None: nobody, or the driver
        cannot tell); never raises. Whatever took the executor's port is not the executor,
        however right its answers."""
        ...
