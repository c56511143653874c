"""The default store: in the gateway's own process, persisted in its state directory.

One gateway needs no external service: its control state and its ledger anchors live in
``control.json``, rewritten atomically (write, fsync, rename) on every change, in a worker
thread so that the gateway's event loop never waits on the disk. Keys under a lease are not
persisted: a lease is liveness, and a restarted gateway is a new holder.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from endosec.cluster.store import EMBEDDED, Health, Item, StoreError
from endosec.observe.ledger_format import fsync_dir

__all__ = ["EmbeddedStore"]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class EmbeddedStore:
    """A `ControlStore` in a dict, with leases timed by ``clock`` (seconds)."""

    url = EMBEDDED

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._clock = clock
        self._items: dict[bytes, tuple[bytes, int, int]] = {}  # key -> (value, revision, lease)
        self._leases: dict[int, tuple[int, float]] = {}  # lease -> (ttl, expiry)
        self._revision = 0
        self._saved = 0  # the revision control.json holds
        self._saving = asyncio.Lock()
        self._next_lease = 1
        try:
            self._load()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"{path}: cannot read the control state: {exc}") from exc

    def _load(self) -> None:
        if not self.path.exists():
            return
        data: dict[str, Any] = json.loads(self.path.read_text())
        self._revision = int(data["revision"])
        for key, (value, revision) in data["items"].items():
            self._items[base64.b64decode(key)] = (base64.b64decode(value), int(revision), 0)

    async def _save(self) -> None:
        """Write the unleased keys out, unless a later write already has; returns once the
        file holds this revision or a newer one."""
        revision = self._revision
        data = {"revision": revision,
                "items": {_b64(k): [_b64(v), r] for k, (v, r, lease) in sorted(
                    self._items.items()) if lease == 0}}
        async with self._saving:
            if self._saved >= revision:
                return
            await asyncio.to_thread(self._write_file, data)
            self._saved = revision

    def _write_file(self, data: dict[str, Any]) -> None:
        tmp = self.path.with_suffix(".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with tmp.open("w") as f:
                json.dump(data, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            fsync_dir(self.path.parent)
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot write the control state: {exc}") from exc

    def _expire(self) -> None:
        now = self._clock()
        gone = {lease for lease, (_, expiry) in self._leases.items() if expiry <= now}
        if gone:
            for lease in gone:
                del self._leases[lease]
            self._items = {k: e for k, e in self._items.items() if e[2] not in gone}

    async def _write(self, key: bytes, value: bytes, lease: int | None) -> int:
        self._expire()
        if lease is not None and lease not in self._leases:
            raise StoreError(f"lease {lease} has expired or was never granted")
        self._revision += 1
        replaced = self._items.get(key)
        self._items[key] = (value, self._revision, lease or 0)
        if not lease or (replaced is not None and replaced[2] == 0):
            revision = self._revision
            await self._save()  # a leased key is not kept on disk: writing one changes no file
            return revision
        return self._revision

    async def get(self, key: bytes) -> Item | None:
        self._expire()
        found = self._items.get(key)
        return None if found is None else Item(key, *found)

    async def prefix(self, prefix: bytes) -> list[Item]:
        self._expire()
        return [Item(k, *e) for k, e in sorted(self._items.items()) if k.startswith(prefix)]

    async def put(self, key: bytes, value: bytes, *, lease: int | None = None) -> int:
        return await self._write(key, value, lease)

    async def create(self, key: bytes, value: bytes, *, lease: int | None = None) -> Item:
        self._expire()
        found = self._items.get(key)
        if found is not None:
            return Item(key, *found)
        return Item(key, value, await self._write(key, value, lease), lease or 0)

    async def delete(self, key: bytes) -> None:
        self._expire()
        if self._items.pop(key, None) is not None:
            self._revision += 1
            await self._save()

    async def grant(self, ttl: int) -> int:
        if ttl < 1:
            raise StoreError("a lease lasts at least 1 s")
        lease, self._next_lease = self._next_lease, self._next_lease + 1
        self._leases[lease] = (ttl, self._clock() + ttl)
        return lease

    async def refresh(self, lease: int) -> bool:
        self._expire()
        if lease not in self._leases:
            return False
        ttl = self._leases[lease][0]
        self._leases[lease] = (ttl, self._clock() + ttl)
        return True

    async def revoke(self, lease: int) -> None:
        self._leases.pop(lease, None)
        self._items = {k: e for k, e in self._items.items() if e[2] != lease}

    async def health(self) -> Health:
        return Health(EMBEDDED, (("embedded", str(self.path), True),), "embedded",
                      self._revision)

    async def reachable(self) -> bool:
        return True

    async def close(self) -> None:
        return None
