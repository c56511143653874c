"""Reads in parallel, writes alone: the ordering rule that keeps executors in the same state.

A write is forwarded only when no other request is in flight, and nothing else is forwarded until
every executor has answered it (or timed out), so every executor sees the same sequence of writes
and no read observes a write that some executors have applied and others not. Waiting writers
are served before newly arriving readers, so a stream of reads cannot starve a write.
"""

from __future__ import annotations

import asyncio
from collections import deque

__all__ = ["WriteOrderLock"]


class WriteOrderLock:
    __slots__ = ("_readers", "_waiting", "_writing")

    def __init__(self) -> None:
        self._readers = 0
        self._writing = False
        self._waiting: deque[tuple[bool, asyncio.Future[None]]] = deque()

    def _can_enter(self, write: bool) -> bool:
        if self._writing:
            return False
        return self._readers == 0 if write else True

    def try_acquire(self, write: bool) -> bool:
        """Enter at once if nobody waits and the lock allows it; never blocks."""
        if not self._waiting and self._can_enter(write):
            self._enter(write)
            return True
        return False

    async def acquire(self, write: bool) -> None:
        if self.try_acquire(write):
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((write, fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release(write)  # granted just as we were cancelled: give it back
            else:
                self._waiting = deque(w for w in self._waiting if w[1] is not fut)
            raise

    def _enter(self, write: bool) -> None:
        if write:
            self._writing = True
        else:
            self._readers += 1

    def release(self, write: bool) -> None:
        if write:
            self._writing = False
        else:
            self._readers -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiting:
            write, fut = self._waiting[0]
            if fut.cancelled():
                self._waiting.popleft()
                continue
            if not self._can_enter(write):
                return
            self._waiting.popleft()
            self._enter(write)
            fut.set_result(None)
            if write:
                return
