"""Carries control between one gateway and its boundary's leader, through the store.

Keys, under ``/endosec/BOUNDARY/`` (next to those `endosec.cluster.member` keeps):

    control                 the leader's newest `ControlView`, kept when the leader goes
    reports/GATEWAY/ID      a follower's `Report` for the leader, deleted once handled

Every ``cluster.poll`` seconds (and at once when its controller acted) a leading gateway
takes in its followers' reports, feeds them to its controller, and publishes the view when it
changed; a following gateway applies the newest view its leader published and sends what its
data plane reported. A gateway that comes to lead resumes from the newest view (the store's,
else the last it applied); one that stops leading (another leads, or its lease lapsed) stops
deciding at once and keeps serving by the last view until its leader's arrives.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import replace
from typing import Any, Protocol

from endosec.cluster.control import (
    ControlError,
    ControlView,
    Forwarded,
    decode_report,
    encode_report,
)
from endosec.cluster.member import Keys, Member
from endosec.cluster.store import ControlStore, StoreError
from endosec.observe.events import EventLog

__all__ = ["Controlled", "Steward"]

#: Seconds between views published for a change of trust alone (every agreement changes it).
_TRUST_EVERY = 5.0


class Controlled(Protocol):
    """The gateway as the steward drives it (`endosec.gateway.engine.MimicGateway`)."""

    follows: ControlView | None
    outbox: deque[Forwarded]

    @property
    def now(self) -> float: ...

    def follow(self, view: ControlView) -> None: ...

    async def take_over(self, view: ControlView | None) -> None: ...

    def forwarded(self, event: Forwarded) -> None: ...

    def control_view(self, leader: str, term: int, seq: int, serve: str) -> ControlView: ...

    def reported(self, way: str, count: int) -> None: ...


class Steward:
    """The control task of one gateway (driven by `run`, until cancelled)."""

    def __init__(self, store: ControlStore, keys: Keys, member: Member, gateway: Controlled,
                 *, poll: float, events: EventLog) -> None:
        self.store, self.keys, self.member, self.gateway = store, keys, member, gateway
        self.poll, self.events = poll, events
        self.view: ControlView | None = None  # the newest view applied or published here
        self.applied_at: float | None = None  # wall-clock time self.view came to hold here
        self._wake = asyncio.Event()
        self._sent = 0
        self._published_at = -float("inf")

    def changed(self) -> None:
        """The controller acted: publish without waiting for the next poll."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self.poll):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.step()
            except StoreError:
                pass  # the member's renewals tell a store without quorum from one cut off
            except Exception as exc:  # a fault must not end control silently
                self.events.emit("alert", level="error", message=f"cluster control: {exc!r}")

    async def step(self) -> None:
        """One exchange with the store, by this gateway's role."""
        gw = self.gateway
        if self.member.role == "leader":
            if gw.follows is not None or self.view is None:
                await self._take_over()
            await self._collect()
            await self._publish()
            return
        if gw.follows is None:  # no longer leads: decide nothing more, write as before
            last = self.view or gw.control_view(self.member.name, self.member.lease or 0, 0, "")
            gw.follow(replace(last, serve=""))
        if self.member.role == "follower":
            await self._fetch()
            await self._send()

    async def published(self, timeout: float) -> ControlView | None:
        """The leader's newest view, waiting up to ``timeout`` seconds for one while this
        gateway follows (a leader starting at the same time publishes once it has started);
        None when none is published."""
        deadline = time.monotonic() + timeout
        while True:
            if (view := await self._stored()) is not None:
                return view
            if self.member.role == "leader" or time.monotonic() >= deadline:
                return None
            await asyncio.sleep(self.poll)

    def status(self) -> dict[str, Any]:
        v = self.view
        return {"control": None if v is None else {
            "leader": v.leader, "term": v.term, "seq": v.seq, "applied_at": self.applied_at},
            "reports_waiting": len(self.gateway.outbox)}

    async def _stored(self) -> ControlView | None:
        """The view in the store (None: none); `ControlError` when it is unreadable."""
        found = await self.store.get(self.keys.control)
        return None if found is None else ControlView.decode(found.value)

    async def _take_over(self) -> None:
        try:
            view = await self._stored() or self.view
        except ControlError as exc:
            view = self.view
            self.events.emit("alert", level="error", message=f"the published control state "
                             f"is unreadable, resuming from this gateway's: {exc}")
        if self.gateway.follows is not None:
            await self.gateway.take_over(view)
            self.events.emit("cluster-resumed", gateway=self.member.name,
                             previous=None if view is None else view.leader,
                             seq=None if view is None else view.seq)
        self.view = None  # published afresh in this term

    async def _collect(self) -> None:
        for item in await self.store.prefix(self.keys.reports):
            try:
                self.gateway.forwarded(decode_report(item.value, self.gateway.now))
            except ValueError as exc:
                self.events.emit("alert", level="warning", message=f"ignored the report "
                                 f"{item.key.decode(errors='replace')}: {exc}")
            await self.store.delete(item.key)
            self.gateway.reported("received", 1)

    async def _publish(self) -> None:
        term = self.member.lease or 0
        last = self.view
        seq = 1 if last is None or last.term != term else last.seq + 1
        view = self.gateway.control_view(self.member.name, term, seq,
                                         str(self.member.card.get("serve", "")))
        now = time.monotonic()
        # The same decisions whatever the numbering; the same trust and memories' matches, or
        # published lately.
        if last is not None and replace(view, seq=last.seq, trust=last.trust,
                                        memories=last.memories) == last \
                and view.memory_specs() == last.memory_specs() and (
                (view.trust, view.memories) == (last.trust, last.memories)
                or now - self._published_at < _TRUST_EVERY):
            return
        await self.store.put(self.keys.control, view.encode())
        self._hold(view)
        self._published_at = now

    async def _fetch(self) -> None:
        try:
            view = await self._stored()
        except ControlError as exc:
            self.events.emit("alert", level="error",
                             message=f"the published control state is unreadable: {exc}")
            return
        if view is None:
            return
        # Only the current leader's: a deposed one may still write before it learns it is.
        if view.leader != self.member.leader:
            leading = await self.store.get(self.keys.leader)
            if leading is None or leading.value.decode(errors="replace") != view.leader:
                return
            self.member.leader = view.leader  # a new leader: known before the next renewal
        if view.newer_than(self.view) or self.gateway.follows is None:
            self.gateway.follow(view)
            self._hold(view)

    async def _send(self) -> None:
        outbox = self.gateway.outbox
        while outbox:
            self._sent += 1
            key = self.keys.report(self.member.name, f"{time.time_ns():020d}-{self._sent}")
            await self.store.put(key, encode_report(outbox[0]))
            outbox.popleft()
            self.gateway.reported("sent", 1)

    def _hold(self, view: ControlView) -> None:
        self.view, self.applied_at = view, round(time.time(), 3)
        self.member.card["control"] = {"term": view.term, "seq": view.seq}

