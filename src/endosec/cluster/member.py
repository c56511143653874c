"""One gateway's place in its boundary: membership, leadership, ledger anchors, and what it
does when the store is lost.

Keys, under ``/endosec/BOUNDARY/``:

    members/NAME     this gateway's card (JSON), under its lease: gone when it stops renewing
    leader           the leading gateway's name, under the leader's lease
    anchors/KEY      the newest anchor of the ledger signed by KEY (hex public key), kept
    control, reports/   what the leader decided and what followers tell it (`steward`)
    links/N          link N of the boundary's chain (`endosec.observe.chain`), kept for the
                     last ``chain_keep`` links; links-head: the newest link's number and digest,
                     a hint (shared stores only: on the embedded one the ledger is the chain)

Every ``lease_ttl / 3`` seconds a member renews its lease, tries to become leader (a create
that succeeds only when no one leads), refreshes its card and, when its ledger has grown and
``anchor_every`` has passed, writes an anchor of the ledger's durable head. A leader whose
lease lapses (it was cut off from the store for a whole ttl) is no longer leader, and learns
so at its next renewal; another member takes over within ``lease_ttl + lease_ttl / 3``.

When a renewal fails, the member asks whether any store member answers at all. One that
answers but cannot decide means the store lost its quorum: the gateway keeps serving (no
control change can be made meanwhile). None answering means this gateway is cut off: it keeps
serving on what it knew for ``stale_after`` seconds, then fails closed (``on_stale(True)``)
until the store answers again and it has renewed, campaigned, anchored and caught up with the
boundary's control state (``catch_up``; then ``on_stale(False)``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from endosec.cluster.store import EMBEDDED, ControlStore, StoreError
from endosec.observe.anchor import Anchor, AnchorError
from endosec.observe.chain import FIRST
from endosec.observe.events import EventLog
from endosec.observe.ledger import Ledger
from endosec.observe.ledger_format import raw_public
from endosec.observe.ledger_verify import verify_since

__all__ = ["Keys", "Member", "MemberError", "Role", "default_name"]

Role = Literal["joining", "leader", "follower", "cut-off"]


class MemberError(Exception):
    """This gateway cannot take its place (its ledger falls short of its anchor)."""


@dataclass(frozen=True, slots=True)
class Keys:
    """Where a boundary's control state lives in the store."""

    boundary: str

    @property
    def top(self) -> bytes:
        return f"/endosec/{self.boundary}/".encode()

    @property
    def members(self) -> bytes:
        return self.top + b"members/"

    @property
    def leader(self) -> bytes:
        return self.top + b"leader"

    @property
    def anchors(self) -> bytes:
        return self.top + b"anchors/"

    @property
    def control(self) -> bytes:
        return self.top + b"control"

    @property
    def reports(self) -> bytes:
        return self.top + b"reports/"

    def report(self, gateway: str, report_id: str) -> bytes:
        return self.reports + f"{gateway}/{report_id}".encode()

    @property
    def links(self) -> bytes:
        return self.top + b"links/"

    @property
    def links_head(self) -> bytes:
        return self.top + b"links-head"

    def link(self, n: int) -> bytes:
        return self.links + f"{n:020d}".encode()

    def member(self, name: str) -> bytes:
        return self.members + name.encode()

    def anchor(self, key_hex: str) -> bytes:
        return self.anchors + key_hex.encode()


async def _nothing() -> None:
    return None


def _head(raw: bytes) -> tuple[int, str] | None:
    """The number and digest the links' head names (None: unreadable)."""
    try:
        data = json.loads(raw)
        return int(data["n"]), str(data["digest"])
    except (ValueError, KeyError, TypeError):
        return None


def default_name(admin_port: int) -> str:
    return f"{socket.gethostname()}:{admin_port}"


async def anchor_of(store: ControlStore, keys: Keys, key_hex: str) -> Anchor | None:
    """The anchor kept for the ledger signed by ``key_hex`` (None: none yet)."""
    found = await store.get(keys.anchor(key_hex))
    return None if found is None else Anchor.decode(found.value)


class Member:
    """The membership task of one gateway (driven by `run`, ended by `leave`)."""

    def __init__(self, store: ControlStore, keys: Keys, name: str, *, ledger: Ledger,
                 events: EventLog, card: dict[str, Any], lease_ttl: int,
                 anchor_every: float, stale_after: float | None = None,
                 chain_keep: int = 10_000,
                 on_stale: Callable[[bool], None] = lambda stale: None) -> None:
        self.store, self.keys, self.name = store, keys, name
        self.ledger, self.events, self.card = ledger, events, card
        self.lease_ttl, self.anchor_every = lease_ttl, anchor_every
        self.chain_keep = chain_keep
        self.linked = 0  # the number of the newest link this gateway appended
        self.stale_after, self.on_stale = stale_after, on_stale
        self.catch_up: Callable[[], Awaitable[None]] = _nothing  # before serving again
        self.role: Role = "joining"
        self.leader: str | None = None
        self.anchored = 0  # seq of the newest anchor written
        self.stale = False  # failed closed: cut off from the store for stale_after
        self._lease: int | None = None
        self._anchored_at = -float("inf")
        self._lost_at: float | None = None  # monotonic time the store stopped answering
        self._unreachable_since: float | None = None  # ... and no member answered at all
        self._renewed_at = -float("inf")  # monotonic time of the last renewal sent
        self.key_hex = raw_public(ledger.public_key).hex()
        self.unanchored = 0  # records the ledger held at start with no anchor in the store

    @property
    def lease(self) -> int | None:
        """The lease this gateway is a member (and leads) under: a leader's term."""
        return self._lease

    async def check(self) -> None:
        """Raise `MemberError` unless the ledger still holds, with its hash, the record the
        store's anchor names, and its chain from there on is intact (records were removed or
        rewritten since it was anchored); `StoreError` when the store does not answer."""
        try:
            anchor = await anchor_of(self.store, self.keys, self.key_hex)
        except AnchorError as exc:
            raise MemberError(f"{self.store.url}: the ledger's anchor is unreadable: "
                              f"{exc}") from exc
        if anchor is None:
            self.unanchored = self.ledger.durable[0]
            return
        report = verify_since(self.ledger.directory, anchor, public_key=self.ledger.public_key)
        if not report.ok:
            raise MemberError(
                f"the ledger in {self.ledger.directory} does not hold what {self.store.url} "
                f"anchored (#{anchor.seq}, written by {anchor.gateway} at {anchor.ts:.0f}): "
                f"{report.summary()}. `endosec ledger verify --anchor` says the same; to start "
                f"a new ledger on purpose, delete {self.keys.anchor(self.key_hex).decode()} "
                "from the store")
        self.anchored = anchor.seq

    async def join(self) -> None:
        """Register and campaign once (`StoreError` when the store does not answer;
        `MemberError` when another live gateway is a member under this name)."""
        deadline = time.monotonic() + self.lease_ttl + 1
        while (card := await self.store.get(self.keys.member(self.name))) is not None:
            if time.monotonic() > deadline:  # not a previous life's card, lapsing: a namesake
                raise MemberError(f"another gateway is a member of {self.keys.boundary!r} as "
                                  f"{self.name!r} (lease {card.lease}); set cluster.name")
            await asyncio.sleep(0.2)
        await self._register()
        self.events.emit("cluster-joined", store=self.store.url, boundary=self.keys.boundary,
                         gateway=self.name, anchored=self.anchored)
        if self.unanchored:
            self.events.emit("alert", level="warning", message=(
                f"the ledger's {self.unanchored} records have no anchor in {self.store.url}: "
                "this store is new to it, or its anchor was removed"))
        await self._campaign()

    async def run(self) -> None:
        """Renew, campaign and anchor every ttl/3 seconds until cancelled."""
        while True:
            await asyncio.sleep(self.lease_ttl / 3)
            try:
                await self.round()
            except StoreError as exc:
                await self._lost(str(exc))
            except Exception as exc:  # a fault must not end renewals (and fail-closed) silently
                self.events.emit("alert", level="error", message=f"cluster round: {exc!r}")
                await self._lost(repr(exc))

    async def round(self) -> None:
        """One renewal: lease, leadership, card, anchor."""
        started = time.monotonic()
        if self._lease is None or not await self.store.refresh(self._lease):
            await self._register()  # the lease lapsed: a new one, and no longer leader
        self._renewed_at = started
        await self._campaign()
        await self._anchor()
        if self._lost_at is not None:
            self.events.emit("cluster-store-back", store=self.store.url,
                             seconds=round(time.monotonic() - self._lost_at, 3),
                             failed_closed=self.stale)
            self._lost_at = self._unreachable_since = None
        if self.stale:  # caught up: renewed, campaigned, anchored, and the control state
            await self.catch_up()
            self.stale = False
            self.on_stale(False)

    async def leave(self) -> None:
        """A last anchor (the ledger is closed, so everything is on disk), then give up the
        lease: the card and the leadership go at once, not a ttl later."""
        try:
            await self._anchor(force=True)
            if self._lease is not None:
                await self.store.revoke(self._lease)
        except StoreError:
            pass  # the lease lapses by itself
        finally:
            await self.store.close()

    def status(self) -> dict[str, Any]:
        return {"store": self.store.url, "boundary": self.keys.boundary, "gateway": self.name,
                "role": self.role, "leader": self.leader, "anchored": self.anchored,
                "store_lost_for": None if self._lost_at is None
                else round(time.monotonic() - self._lost_at, 3),
                "store_reachable": self._unreachable_since is None, "stale": self.stale}

    async def _register(self) -> None:
        self._renewed_at = time.monotonic()
        self._lease = await self.store.grant(self.lease_ttl)  # the card follows in _campaign

    async def _card(self) -> None:
        seq, _ = self.ledger.durable
        card = {**self.card, "gateway": self.name, "role": self.role, "ledger_key": self.key_hex,
                "ledger_seq": seq, "at": round(time.time(), 3)}
        await self.store.put(self.keys.member(self.name), json.dumps(card).encode(),
                             lease=self._lease)

    async def _campaign(self) -> None:
        held = await self.store.create(self.keys.leader, self.name.encode(), lease=self._lease)
        if held.value == self.name.encode() and held.lease != self._lease:
            # Our name under another lease: this gateway's previous life (killed, its lease
            # not yet lapsed). Take over now rather than a ttl later.
            await self.store.delete(self.keys.leader)
            held = await self.store.create(self.keys.leader, self.name.encode(),
                                           lease=self._lease)
        self.leader = held.value.decode(errors="replace")
        mine = self.leader == self.name and held.lease == self._lease
        role: Role = "leader" if mine else "follower"
        if role != self.role:
            self.role = role
            self.events.emit(f"cluster-{role}", store=self.store.url, gateway=self.name,
                             leader=self.leader)
        await self._card()

    async def _anchor(self, *, force: bool = False) -> None:
        now = time.monotonic()
        seq, _ = self.ledger.durable
        if seq > self.anchored and (force or now - self._anchored_at >= self.anchor_every):
            anchor = self.ledger.anchor(self.name, time.time())
            await self.store.put(self.keys.anchor(self.key_hex), anchor.encode())
            self.anchored, self._anchored_at = anchor.seq, now
            if self.store.url != EMBEDDED:
                await self._link(anchor)

    async def _link(self, anchor: Anchor) -> None:
        """Append ``anchor`` to the boundary's chain: after the newest link, which the head
        hints at (a link created meanwhile by another gateway moves this one further on)."""
        hint = await self.store.get(self.keys.links_head)
        found = None if hint is None else _head(hint.value)
        if found is None:  # none yet, or unreadable: the newest kept link, if any
            kept = await self.store.prefix(self.keys.links)
            found = (0, FIRST) if not kept else (
                int(kept[-1].key.rsplit(b"/", 1)[1]), hashlib.sha256(kept[-1].value).hexdigest())
        n, prev = found
        while True:
            link = self.ledger.link(n + 1, prev, anchor)
            held = await self.store.create(self.keys.link(n + 1), link.encode())
            n, prev = n + 1, hashlib.sha256(held.value).hexdigest()
            if held.value == link.encode():
                break
        self.linked = n
        await self.store.put(self.keys.links_head,
                             json.dumps({"n": n, "digest": prev}).encode())
        if n > self.chain_keep:
            await self.store.delete(self.keys.link(n - self.chain_keep))

    async def _lost(self, reason: str) -> None:
        """A round failed: tell a store without quorum from one out of reach, and fail
        closed once out of reach for ``stale_after``."""
        reachable = await self.store.reachable()
        now = time.monotonic()
        if self._lost_at is None:
            self._lost_at = now
            self.events.emit("cluster-store-lost", level="warning", store=self.store.url,
                             reachable=reachable, message=reason)
        self._unreachable_since = None if reachable else (self._unreachable_since or now)
        if self.role != "leader" or now - self._renewed_at >= self.lease_ttl:
            self.role = "cut-off"  # a leader's lease has lapsed: someone else may lead
        if (self.stale_after is not None and not self.stale
                and self._unreachable_since is not None
                and now - self._unreachable_since >= self.stale_after):
            self.stale = True
            self.events.emit("cluster-stale", level="error", store=self.store.url,
                             seconds=round(now - self._unreachable_since, 3),
                             message="cut off from the store: failing closed")
            self.on_stale(True)
