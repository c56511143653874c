"""The bounded journal of writes that lets a cleansed executor rejoin with the right state.

Consistency model: an executor's state is a function of the sequence of write requests it has
received. Every write the gateway forwards is appended here, in the order it was forwarded (the
gateway forwards one write at a time). A cleansed executor starts from its pristine image and is
fed the whole journal; a spare that sat out some writes is fed the ones it missed. The journal is
bounded: an executor that has fallen behind its oldest entry cannot be brought up to date and is
kept out of voting (the operator is alerted). Executors declared ``stateless`` skip all of this.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from endosec.gateway.adapter import Forward

__all__ = ["Journal", "JournalEntry", "JournalGap"]


@dataclass(frozen=True, slots=True)
class JournalEntry:
    seq: int
    forward: Forward  # what was sent, byte for byte, to every executor


class JournalGap(Exception):
    """The entries an executor needs have already been dropped from the bounded journal."""


class Journal:
    """Append-only, bounded by entry count and total bytes; sequence numbers start at 1."""

    __slots__ = ("_bytes", "_entries", "head", "max_bytes", "max_entries")

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("journal limits must be positive")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: deque[JournalEntry] = deque()
        self._bytes = 0
        self.head = 0  # seq of the newest entry; 0 when nothing was ever written

    def append(self, forward: Forward) -> JournalEntry:
        self.head += 1
        entry = JournalEntry(self.head, forward)
        self._entries.append(entry)
        self._bytes += len(forward.payload)
        while len(self._entries) > self.max_entries or (
            self._bytes > self.max_bytes and len(self._entries) > 1
        ):
            dropped = self._entries.popleft()
            self._bytes -= len(dropped.forward.payload)
        return entry

    def since(self, synced: int) -> Iterator[JournalEntry]:
        """The entries after ``synced``; raises JournalGap if some were already dropped."""
        if synced >= self.head:
            return iter(())
        oldest = self._entries[0].seq if self._entries else self.head + 1
        if synced + 1 < oldest:
            raise JournalGap(
                f"needs writes from #{synced + 1} but the journal keeps only #{oldest}"
                f"..#{self.head}; raise journal.max_entries/max_bytes or declare it stateless")
        return (e for e in self._entries if e.seq > synced)

    def __len__(self) -> int:
        return len(self._entries)
