"""The control-state store (embedded and a real three-member etcd on loopback), membership and
leader election, and ledger anchors."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from endosec.cluster.embedded import EmbeddedStore
from endosec.cluster.etcd import EtcdStore
from endosec.cluster.member import Keys, Member, MemberError
from endosec.cluster.store import ControlStore, StoreError, open_store, parse_store_url
from endosec.observe.chain import FIRST, Link, check_chain
from endosec.observe.events import EventLog
from endosec.observe.ledger import Ledger
from endosec.observe.ledger_verify import verify_since
from tests.etcd_cluster import EtcdCluster


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    cluster = EtcdCluster(tmp_path_factory.mktemp("etcd"))
    yield cluster
    cluster.stop()


@pytest.fixture(params=["embedded", "etcd"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ControlStore]:
    if request.param == "embedded":
        opened: ControlStore = EmbeddedStore(tmp_path / "control.json")
    else:
        opened = open_store(request.getfixturevalue("etcd").url, tmp_path)
    yield opened
    await opened.close()


def test_store_urls_are_parsed_or_refused_with_the_reason() -> None:
    assert parse_store_url("embedded") == ("embedded", ())
    assert parse_store_url("etcd://127.0.0.1:2379,[::1]:2380") == (
        "etcd", (("127.0.0.1", 2379), ("::1", 2380)))
    for bad in ("etcd://", "etcd://host", "etcd://h:0", "http://h:1", "etcd://h:1/x", "e"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            parse_store_url(bad)


async def test_the_store_creates_once_puts_lists_and_deletes(store: ControlStore) -> None:
    prefix = f"/t/{time.monotonic_ns()}/".encode()
    first = await store.create(prefix + b"leader", b"a")
    again = await store.create(prefix + b"leader", b"b")
    assert (first.value, again.value) == (b"a", b"a")  # the second create finds the first
    assert again.revision == first.revision
    later = await store.put(prefix + b"x", b"1")
    assert later > first.revision
    await store.put(prefix + b"y", b"2")
    assert [(i.key, i.value) for i in await store.prefix(prefix)] == [
        (prefix + b"leader", b"a"), (prefix + b"x", b"1"), (prefix + b"y", b"2")]
    await store.delete(prefix + b"x")
    assert await store.get(prefix + b"x") is None
    health = await store.health()
    assert health.ok and all(answered for _, _, answered in health.members)


async def test_a_revoked_lease_takes_its_keys_and_cannot_be_renewed(store: ControlStore) -> None:
    key = f"/t/{time.monotonic_ns()}/member".encode()
    lease = await store.grant(5)
    await store.put(key, b"here", lease=lease)
    assert await store.refresh(lease)
    await store.revoke(lease)
    assert await store.get(key) is None
    assert not await store.refresh(lease)


async def test_an_etcd_lease_left_to_lapse_deletes_its_keys(etcd: EtcdCluster,
                                                          tmp_path: Path) -> None:
    store = open_store(etcd.url, tmp_path)
    try:
        lease = await store.grant(2)
        await store.put(b"/t/lapse", b"1", lease=lease)
        deadline = time.monotonic() + 10
        while await store.get(b"/t/lapse") is not None:
            assert time.monotonic() < deadline, "the lease never lapsed"
            await asyncio.sleep(0.2)
        assert not await store.refresh(lease)
    finally:
        await store.close()


async def test_the_embedded_store_keeps_what_is_not_leased_across_a_restart(
        tmp_path: Path) -> None:
    now = [0.0]
    path = tmp_path / "control.json"
    store = EmbeddedStore(path, clock=lambda: now[0])
    lease = await store.grant(3)
    await store.put(b"/kept", b"1")
    await store.put(b"/leased", b"2", lease=lease)
    now[0] = 2.9
    assert await store.get(b"/leased") is not None
    now[0] = 3.0
    assert await store.get(b"/leased") is None  # lapsed
    reopened = EmbeddedStore(path)
    kept = await reopened.get(b"/kept")
    assert kept is not None and kept.value == b"1"
    path.write_text("{not json")
    with pytest.raises(StoreError, match=r"control\.json"):
        EmbeddedStore(path)


async def test_an_unreachable_etcd_is_a_store_error_within_the_timeout(tmp_path: Path) -> None:
    store = EtcdStore((("127.0.0.1", 9),), timeout=1.0)
    started = time.monotonic()
    with pytest.raises(StoreError, match=r"etcd://127\.0\.0\.1:9"):
        await store.get(b"/x")
    assert time.monotonic() - started < 5
    await store.close()


def _member(store: ControlStore, root: Path, name: str, boundary: str,
            ttl: int = 2) -> Member:
    ledger = Ledger(root / name / "ledger", batch_records=1)
    events = EventLog(root / name / "events.jsonl", ledger=ledger)
    return Member(store, Keys(boundary), name, ledger=ledger, events=events,
                  card={"serve": f"http://{name}"}, lease_ttl=ttl, anchor_every=0.1)


async def _joined(etcd: EtcdCluster, root: Path, boundary: str) -> list[Member]:
    """Members gw-a, gw-b and gw-c of ``boundary`` on ``etcd``, checked and joined in order."""
    members = [_member(open_store(etcd.url, root), root, f"gw-{c}", boundary) for c in "abc"]
    for m in members:
        await m.check()
        await m.join()
    return members


async def _leader(store: ControlStore, keys: Keys) -> str | None:
    found = await store.get(keys.leader)
    return None if found is None else found.value.decode()


async def test_one_member_leads_and_another_takes_over_when_its_lease_lapses(
        etcd: EtcdCluster, tmp_path: Path) -> None:
    boundary = f"b{time.monotonic_ns()}"
    members = await _joined(etcd, tmp_path, boundary)
    assert [m.role for m in members] == ["leader", "follower", "follower"]
    tasks = [asyncio.ensure_future(m.run()) for m in members]
    try:
        # The leader stops renewing without a word (as after kill -9): its lease lapses.
        tasks[0].cancel()
        started = time.monotonic()
        keys = Keys(boundary)
        while (leader := await _leader(members[1].store, keys)) in (None, "gw-a"):
            assert time.monotonic() - started < 10, "no one took over"
            await asyncio.sleep(0.1)
        took = time.monotonic() - started
        assert took <= 2 + 2 / 3 + 1.0, took  # lease_ttl + a round, and some slack
        await asyncio.sleep(1.0)
        roles = {m.name: m.role for m in members[1:]}
        assert sorted(roles.values()) == ["follower", "leader"] and roles[leader] == "leader"
        cards = {json.loads(i.value)["gateway"] for i in await members[1].store.prefix(
            keys.members)}
        assert cards == {"gw-b", "gw-c"}  # gw-a's card went with its lease
    finally:
        for t in tasks:
            t.cancel()
        for m in members:
            m.events.close()
            await m.leave()


async def test_members_ride_out_the_loss_of_one_etcd_member(tmp_path: Path) -> None:
    etcd = EtcdCluster(tmp_path / "etcd")
    try:
        # Room for a raft election: the member killed may be etcd's leader (about 1 s).
        store = open_store(etcd.url, tmp_path, timeout=5.0)
        member = _member(store, tmp_path, "gw-a", "kill-one")
        await member.check()
        await member.join()
        etcd.kill(0)  # the member the client was talking to (gRPC picks the first)
        for _ in range(3):
            await member.round()
        assert member.role == "leader" and member.status()["store_lost_for"] is None
        health = await store.health()
        assert health.ok
        assert [a for _, _, a in health.members].count(False) == 1
        member.events.close()
        await member.leave()
    finally:
        etcd.stop()


async def test_a_ledger_cut_below_its_anchor_is_refused_at_join(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "control.json")
    member = _member(store, tmp_path, "gw-a", "cut")
    await member.check()
    await member.join()
    for i in range(5):
        member.events.emit("alert", message=f"m{i}")
    await member.round()
    assert member.anchored == member.ledger.durable[0] >= 5
    member.events.close()
    await member.leave()
    ledger_file = tmp_path / "gw-a" / "ledger" / "ledger-000001.jsonl"
    lines = ledger_file.read_bytes().splitlines(keepends=True)
    ledger_file.write_bytes(b"".join(lines[:-2]))
    again = _member(EmbeddedStore(tmp_path / "control.json"), tmp_path, "gw-a", "cut")
    with pytest.raises(MemberError, match=r"does not hold what .* anchored .* truncated"):
        await again.check()
    again.events.close()


async def test_a_tail_cut_then_written_over_is_refused_at_join(tmp_path: Path) -> None:
    """Cut below the anchor, then more records than were cut, signed with the ledger's own
    key: longer than the anchor, but the anchored record is not there."""
    store = EmbeddedStore(tmp_path / "control.json")
    member = _member(store, tmp_path, "gw-a", "rewrite")
    await member.check()
    await member.join()
    for i in range(6):
        member.events.emit("alert", message=f"m{i}")
    await member.round()
    anchored = member.anchored
    member.events.close()
    await member.leave()
    ledger_file = tmp_path / "gw-a" / "ledger" / "ledger-000001.jsonl"
    lines = ledger_file.read_bytes().splitlines(keepends=True)
    ledger_file.write_bytes(b"".join(lines[:-3]))
    with Ledger(tmp_path / "gw-a" / "ledger") as forged:
        for i in range(10):
            forged.append("verdict", {"forged": i}, now=time.time())
        forged.flush()
        assert forged.durable[0] > anchored
    again = _member(EmbeddedStore(tmp_path / "control.json"), tmp_path, "gw-a", "rewrite")
    with pytest.raises(MemberError, match=rf"#{anchored} is not the one gw-a anchored"):
        await again.check()
    again.events.close()


async def test_a_live_namesake_is_refused_and_a_ledger_without_anchor_raises_an_alert(
        etcd: EtcdCluster, tmp_path: Path) -> None:
    boundary = f"n{time.monotonic_ns()}"
    first = _member(open_store(etcd.url, tmp_path), tmp_path / "1", "gw-a", boundary)
    first.events.emit("alert", message="before any anchor")
    first.ledger.flush()
    await first.check()
    await first.join()
    alerts = [e for e in first.events.recent if e["event"] == "alert"]
    assert any("no anchor" in e["message"] for e in alerts), alerts
    second = _member(open_store(etcd.url, tmp_path), tmp_path / "2", "gw-a", boundary)
    await second.check()
    task = asyncio.ensure_future(first.run())  # it stays alive: its card never lapses
    try:
        with pytest.raises(MemberError, match="another gateway is a member"):
            await second.join()
    finally:
        task.cancel()
        for m in (first, second):
            m.events.close()
            await m.leave()


async def test_etcd_endpoints_may_be_names_of_one_address_family(etcd: EtcdCluster) -> None:
    named = EtcdStore(tuple(("localhost", p) for p in etcd.clients))
    try:
        await named.put(b"/t/named", b"1")
        found = await named.get(b"/t/named")
        assert found is not None and found.value == b"1"
    finally:
        await named.close()
    with pytest.raises(StoreError, match="one family"):
        EtcdStore((("127.0.0.1", 1), ("::1", 2)))


async def test_the_ledgers_of_a_boundary_take_one_chain_on_etcd(
        etcd: EtcdCluster, tmp_path: Path) -> None:
    """Three members anchoring at once: their links take one order, numbered without a gap,
    each bound to the one before; each ledger holds what its newest link says; and a
    tampered, missing or reordered link is named."""
    boundary = f"c{time.monotonic_ns()}"
    members = await _joined(etcd, tmp_path, boundary)
    try:
        for i in range(4):
            for m in members:
                m.events.emit("alert", message=f"{m.name} {i}")
                m._anchored_at = -float("inf")  # anchor at every round here
            await asyncio.gather(*(m.round() for m in members))
        keys = Keys(boundary)
        links = [Link.decode(i.value) for i in await members[0].store.prefix(keys.links)]
        assert [link.n for link in links] == list(range(1, len(links) + 1))
        assert len(links) >= 3 * 4 and {link.gateway for link in links} == {"gw-a", "gw-b",
                                                                              "gw-c"}
        assert check_chain(links) == []
        for m in members:
            newest = max((link for link in links if link.gateway == m.name),
                         key=lambda link: link.n)
            assert newest.seq == m.anchored
            assert verify_since(m.ledger.directory, newest.anchor(),
                                public_key=m.ledger.public_key).ok
        forged = replace(links[3], seq=links[3].seq + 1)
        swapped = [*links[:2], links[3], links[2], *links[4:]]
        assert any("not signed" in p for p in check_chain([*links[:3], forged, *links[4:]]))
        assert any("missing" in p for p in check_chain([*links[:2], *links[3:]]))
        assert any("does not follow" in p or "missing" in p for p in check_chain(swapped))
    finally:
        for m in members:
            m.events.close()
            await m.leave()


def test_a_chain_whose_ledger_goes_back_is_named(tmp_path: Path) -> None:
    with Ledger(tmp_path / "l") as ledger:
        ledger.append("alert", {"m": 1}, now=1.0)
        ledger.flush()
        first = ledger.link(1, FIRST, ledger.anchor("gw-a", 1.0))
        back = ledger.link(2, first.digest, replace(ledger.anchor("gw-a", 2.0), seq=0))
    assert Link.decode(first.encode()) == first
    assert check_chain([first]) == []
    assert any("goes back" in p for p in check_chain([first, back]))
