"""Online exchange of sealed models through the boundary's control store, and the ledger
record of each round.

Keys, under ``/endosec/BOUNDARY/immune/``:

    updates/GATEWAY/ROUND   GATEWAY's sealed update for ROUND (`seal.seal_update`)
    aggregates/ROUND        the round's sealed aggregate (`seal.seal_aggregate`)

Rounds are written zero-padded, so a prefix listing returns them in order. Each gateway
publishes its own update; the aggregator collects and opens a round's updates, decides
(`endosec.immune.clonal.aggregate`), publishes the aggregate and records it in its ledger.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from endosec.cluster.store import ControlStore
from endosec.immune.detector import Vector, from_bytes, to_bytes
from endosec.immune.federation import Round
from endosec.immune.seal import SealError, open_update, seal_update
from endosec.observe.ledger import Ledger
from endosec.observe.ledger_format import Record

__all__ = ["RECORD_KIND", "Collected", "Exchange", "record_round"]

RECORD_KIND: Final = "immune-round"
# Gateway names as the cluster gives them (``host:port`` by default), boundaries as configured.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


def _checked(name: str, what: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError(f"{what} {name!r}: letters, digits, '.', '_', ':' and '-' only")
    return name


@dataclass(frozen=True, slots=True)
class Collected:
    """A round's updates that opened, and the gateways whose update did not (unknown
    sender, or a seal that failed: a forged or altered update is dropped, not trusted)."""

    models: Mapping[str, Vector]
    refused: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Exchange:
    """One boundary's immune keys in a store."""

    store: ControlStore
    boundary: str

    def __post_init__(self) -> None:
        _checked(self.boundary, "boundary")

    @property
    def top(self) -> bytes:
        return f"/endosec/{self.boundary}/immune/".encode()

    def update_key(self, gateway: str, number: int) -> bytes:
        return self.top + f"updates/{_checked(gateway, 'gateway')}/{number:010d}".encode()

    def aggregate_key(self, number: int) -> bytes:
        return self.top + f"aggregates/{number:010d}".encode()

    async def publish_update(self, gateway: str, key: X25519PrivateKey,
                             server: X25519PublicKey, number: int, model: Vector) -> None:
        """Seal ``model`` for the server and publish it as ``gateway``'s for round ``number``."""
        sealed = seal_update(key, server, gateway, number, to_bytes(model))
        await self.store.put(self.update_key(gateway, number), sealed)

    async def collect(self, number: int, server: X25519PrivateKey,
                      clients: Mapping[str, X25519PublicKey]) -> Collected:
        """Open every update published for round ``number``."""
        suffix = f"/{number:010d}".encode()
        models: dict[str, Vector] = {}
        refused = []
        for item in await self.store.prefix(self.top + b"updates/"):
            if not item.key.endswith(suffix):
                continue
            gateway = item.key[len(self.top) + len(b"updates/"):-len(suffix)].decode()
            try:
                if gateway not in clients:
                    raise SealError(f"unknown gateway {gateway!r}")
                models[gateway] = from_bytes(open_update(server, clients[gateway], gateway,
                                                         number, item.value))
            except (SealError, ValueError):
                refused.append(gateway)
        return Collected(models, tuple(sorted(refused)))

    async def publish_aggregate(self, number: int, sealed: bytes) -> None:
        await self.store.put(self.aggregate_key(number), sealed)

    async def forget(self, number: int) -> None:
        """Delete the updates of rounds up to ``number`` (collected) and the aggregates before
        ``number - 1`` (adopted): the store keeps only what a round still needs."""
        for item in await self.store.prefix(self.top + b"updates/"):
            if _round_of(item.key) <= number:
                await self.store.delete(item.key)
        for item in await self.store.prefix(self.top + b"aggregates/"):
            if _round_of(item.key) < number - 1:
                await self.store.delete(item.key)

    async def aggregate(self, number: int) -> bytes | None:
        """The sealed aggregate of round ``number``, if published."""
        item = await self.store.get(self.aggregate_key(number))
        return None if item is None else item.value


def _round_of(key: bytes) -> int:
    """The round a key names (a key that names none counts as round 0: it goes)."""
    last = key.rsplit(b"/", 1)[-1]
    return int(last) if last.isdigit() else 0


def record_round(ledger: Ledger, scheme: str, outcome: Round, *, now: float) -> Record:
    """Append the round's aggregate (by SHA-256 of its bytes), eta and decisions."""
    return ledger.append(RECORD_KIND, {
        "scheme": scheme, "round": outcome.number, "aggregate_sha256": outcome.digest,
        "eta": outcome.eta, "kept": outcome.kept, "accuracy": outcome.accuracy,
        "accepted": list(outcome.accepted), "rejected": list(outcome.rejected),
        "aggregated": list(outcome.aggregated)}, now=now)
