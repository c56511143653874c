"""The one way the gateway starts background work: named tasks whose references are kept.

asyncio keeps only weak references to tasks, so a fire-and-forget task can be collected while it
runs; and an unnamed task is impossible to find in a dump. `spawn` fixes both.
"""

from __future__ import annotations

import asyncio
import sys
import traceback
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["cancel_all", "spawn"]

T = TypeVar("T")

_running: set[asyncio.Task[Any]] = set()


def spawn(coro: Coroutine[Any, Any, T], *, name: str) -> asyncio.Task[T]:
    """Start ``coro`` as a task named ``name`` and keep it alive until it finishes."""
    task = asyncio.get_running_loop().create_task(coro, name=name)
    _running.add(task)
    task.add_done_callback(_done)
    return task


def _done(task: asyncio.Task[Any]) -> None:
    """Forget a finished task; one that failed says so on stderr (it would die silently)."""
    _running.discard(task)
    if not task.cancelled() and (exc := task.exception()) is not None:
        traceback.print_exception(exc, file=sys.stderr)
        print(f"endosec: background task {task.get_name()} failed: {exc!r}", file=sys.stderr,
              flush=True)


async def cancel_all() -> None:
    """Cancel every task started through `spawn` and wait for them (shutdown)."""
    tasks = [t for t in _running if not t.done()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
