"""One interface to the control-state store, whichever holds it.

A store maps keys (bytes, under one prefix per boundary) to values, with etcd's semantics
reduced to what a boundary needs: a revision per key for compare-and-swap, leases that delete
their keys when their holder stops renewing them, and a health report. `open_store` picks the
implementation from a URL: ``embedded`` (in-process, persisted in the state directory; one
gateway needs no external service) or ``etcd://HOST:PORT,HOST:PORT,...``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

__all__ = ["EMBEDDED", "ControlStore", "Health", "Item", "StoreError", "open_store",
           "parse_store_url"]

EMBEDDED = "embedded"


class StoreError(Exception):
    """The store could not be reached or refused the operation; the message says which."""


@dataclass(frozen=True, slots=True)
class Item:
    """A key's value, its revision (the store's counter when it was last written) and the
    lease it is under (0: none)."""

    key: bytes
    value: bytes
    revision: int
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Health:
    """What the store says of itself: each member's endpoint and whether it answered, and
    which one leads (for etcd; the embedded store is one member that always leads), and its
    count of writes (etcd's raft index, the embedded store's revision)."""

    kind: str
    members: tuple[tuple[str, str, bool], ...]  # (name, endpoint, answered)
    leader: str | None
    index: int

    @property
    def ok(self) -> bool:
        return self.leader is not None


class ControlStore(Protocol):
    """What a boundary needs of a store. Every call raises `StoreError` when the store cannot
    answer; none blocks for longer than the store's timeout."""

    url: str

    async def get(self, key: bytes) -> Item | None: ...

    async def prefix(self, prefix: bytes) -> list[Item]:
        """Every key under ``prefix``, in key order."""

    async def put(self, key: bytes, value: bytes, *, lease: int | None = None) -> int:
        """Write; the new revision. A key under a lease goes when the lease does."""

    async def create(self, key: bytes, value: bytes, *, lease: int | None = None) -> Item:
        """Write ``key`` only if it does not exist; either way, the item now there."""

    async def delete(self, key: bytes) -> None: ...

    async def grant(self, ttl: int) -> int:
        """A new lease of ``ttl`` seconds; its id."""

    async def refresh(self, lease: int) -> bool:
        """Renew a lease for another ttl; False when it has already expired."""

    async def revoke(self, lease: int) -> None:
        """End a lease now, deleting its keys."""

    async def health(self) -> Health: ...

    async def reachable(self) -> bool:
        """Whether any member answers at all: after a failed call, True means the store lost
        its quorum (a member answers but cannot decide), False that it is out of reach."""

    async def close(self) -> None: ...


def parse_store_url(url: str) -> tuple[str, tuple[tuple[str, int], ...]]:
    """``embedded`` or ``etcd://HOST:PORT,...``: the kind and the endpoints; ValueError with
    the reason for anything else."""
    if url == EMBEDDED:
        return EMBEDDED, ()
    parts = urlsplit(url)
    if parts.scheme != "etcd" or not parts.netloc or parts.path not in ("", "/") \
            or parts.query or parts.fragment:
        raise ValueError(f"{url!r}: expected 'embedded' or etcd://HOST:PORT[,HOST:PORT...]")
    endpoints = []
    for member in parts.netloc.split(","):
        host, sep, port = member.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{url!r}: {member!r} is not HOST:PORT")
        endpoints.append((host, int(port)))
    return "etcd", tuple(endpoints)


def open_store(url: str, state_dir: Path, *, timeout: float = 2.0) -> ControlStore:
    """The store ``url`` names; the embedded one lives at ``state_dir/control.json``."""
    kind, endpoints = parse_store_url(url)
    # Imported here: each implementation imports this module, and only etcd needs gRPC.
    if kind == EMBEDDED:
        from endosec.cluster.embedded import EmbeddedStore  # noqa: PLC0415
        return EmbeddedStore(state_dir / "control.json")
    from endosec.cluster.etcd import EtcdStore  # noqa: PLC0415
    return EtcdStore(endpoints, timeout=timeout)
