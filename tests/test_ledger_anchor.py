"""Ledger anchors: a ledger whose tail was cut verifies as a chain but not against its anchor."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from endosec.cluster.embedded import EmbeddedStore
from endosec.cluster.member import Keys
from endosec.observe.anchor import Anchor, AnchorError, sign_anchor
from endosec.observe.ledger import Ledger
from endosec.observe.ledger_cli import ledger as ledger_group
from endosec.observe.ledger_format import (
    key_path,
    ledger_files,
    load_or_create_key,
    load_public_key,
    sha256_hex,
)
from endosec.observe.ledger_verify import Reason, read_records, verify, verify_since
from endosec.redteam.evidence import tail_cut

T0 = 1_700_000_000.0


def build(directory: Path, n: int, *, gateway: str = "gw") -> Anchor:
    """A ledger of ``n`` records, and the anchor its writer would keep for it."""
    with Ledger(directory) as led:
        for i in range(n):
            led.append("verdict", {"i": i}, now=T0 + i)
        led.flush()
        return led.anchor(gateway, T0 + n)


def cut(directory: Path, records: int) -> None:
    path = ledger_files(directory)[-1]
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:len(lines) - records]))


def test_an_anchor_covers_only_what_is_on_disk(tmp_path: Path) -> None:
    with Ledger(tmp_path / "ledger", batch_records=100, batch_seconds=1e9) as led:
        led.append("verdict", {"i": 0}, now=T0)
        assert led.anchor("gw", T0).seq == 0  # buffered, not yet durable
        led.flush()
        assert led.anchor("gw", T0).seq == 1


def test_an_anchor_round_trips_and_its_signature_is_checked(tmp_path: Path) -> None:
    anchor = build(tmp_path / "ledger", 3)
    assert Anchor.decode(anchor.encode()) == anchor
    anchor.check()
    with pytest.raises(AnchorError, match="not signed"):
        replace(anchor, seq=2).check()
    with pytest.raises(AnchorError, match="not an anchor"):
        Anchor.decode(b'{"seq": 1}')


def test_a_cut_tail_passes_as_a_chain_but_fails_against_its_anchor(tmp_path: Path) -> None:
    directory = tmp_path / "ledger"
    anchor = build(directory, 10)
    assert verify(directory, anchor=anchor).ok
    cut(directory, 3)
    assert verify(directory).ok  # the chain alone cannot tell
    report = verify(directory, anchor=anchor)
    assert report.failure is not None and report.failure.reason == Reason.TRUNCATED
    assert "ends at #7" in report.failure.detail and "#8..#10 are gone" in report.failure.detail


def test_an_anchor_by_another_key_or_a_rewritten_record_fails(tmp_path: Path) -> None:
    directory = tmp_path / "ledger"
    anchor = build(directory, 4)
    other = sign_anchor(Ed25519PrivateKey.generate(), gateway="gw", seq=4, head=anchor.head,
                        ts=T0)
    report = verify(directory, anchor=other)
    assert report.failure is not None and report.failure.reason == Reason.WRONG_KEY
    # The writer's key rewrites the last record: a valid chain, but not the anchored record.
    cut(directory, 1)
    with Ledger(directory) as led:
        led.append("verdict", {"i": "rewritten"}, now=T0 + 9)
    report = verify(directory, anchor=anchor)
    assert report.failure is not None and report.failure.reason == Reason.MODIFIED
    assert "#4 is not the one gw anchored" in report.failure.detail


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 12), removed=st.integers(0, 12), added=st.integers(0, 3))
def test_verify_with_an_anchor_fails_exactly_when_anchored_records_are_gone(
        tmp_path_factory: pytest.TempPathFactory, n: int, removed: int, added: int) -> None:
    directory = tmp_path_factory.mktemp("anchored") / "ledger"
    anchor = build(directory, n)
    removed = min(removed, n)
    cut(directory, removed)
    if removed == 0:
        with Ledger(directory) as led:  # records after the anchor are fine
            for i in range(added):
                led.append("verdict", {"later": i}, now=T0 + n + i)
    report = verify(directory, anchor=anchor)
    assert report.ok == (removed == 0)


def test_the_command_reads_the_anchor_from_the_embedded_store(tmp_path: Path) -> None:
    state = tmp_path / "state"
    anchor = build(state / "ledger", 6)
    store = EmbeddedStore(state / "control.json")
    asyncio.run(store.put(Keys("endosec").anchor(anchor.key), anchor.encode()))
    runner = CliRunner()
    ok = runner.invoke(ledger_group, ["verify", str(state / "ledger"), "--anchor"])
    assert ok.exit_code == 0, ok.output
    assert "anchor #6 by gw" in ok.output
    cut(state / "ledger", 2)
    assert runner.invoke(ledger_group, ["verify", str(state / "ledger")]).exit_code == 0
    bad = runner.invoke(ledger_group, ["verify", str(state / "ledger"), "--anchor"])
    assert bad.exit_code == 1
    assert "truncated" in bad.output and "#5..#6 are gone" in bad.output
    other = runner.invoke(ledger_group, ["verify", str(state / "ledger"), "--anchor",
                                         "--boundary", "elsewhere"])
    assert other.exit_code == 1 and "keeps no anchor" in other.output


def test_the_red_team_tail_cut_is_caught_only_with_an_anchor(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with Ledger(state / "ledger") as led:
        for i, event in enumerate(["config-loaded", "dissent", "quarantine", "cleanse",
                                   "cleansed", "alert"]):
            led.append("controller-action", {"event": event}, now=T0 + i)
        led.flush()
        anchor = led.anchor("gw", T0 + 9)
    cut_case = asyncio.run(tail_cut(state, tmp_path / "unanchored", store_url="embedded",
                                    boundary="redteam"))
    assert not cut_case.detected and "none kept" in cut_case.notes[-1]
    asyncio.run(EmbeddedStore(state / "control.json").put(
        Keys("redteam").anchor(anchor.key), anchor.encode()))
    caught = asyncio.run(tail_cut(state, tmp_path / "anchored", store_url="embedded",
                                  boundary="redteam"))
    assert caught.detected and caught.suppressed, caught.notes
    assert "cut from #3 (alert, cleanse, cleansed, quarantine)" in caught.notes[-1]
    assert "the chain alone: ok" in caught.notes[-1] and "truncated" in caught.notes[-1]
    assert verify(state / "ledger", anchor=anchor).ok  # the original was left alone


def test_a_check_from_the_anchored_file_on_sees_a_cut_across_rotated_files(
        tmp_path: Path) -> None:
    directory = tmp_path / "ledger"
    with Ledger(directory, max_file_bytes=4096, max_record_bytes=1024) as led:
        for i in range(60):
            led.append("verdict", {"i": i, "pad": "x" * 100}, now=T0 + i)
        led.flush()
        last = led.anchor("gw", T0 + 99)
    files = ledger_files(directory)
    assert len(files) >= 3
    thirtieth = next(e for e in read_records(directory)
                     if e.record is not None and e.record.seq == 30)
    raw = thirtieth.file.read_bytes().splitlines()[thirtieth.line - 1]
    middle = sign_anchor(load_or_create_key(key_path(directory)), gateway="gw", seq=30,
                         head=sha256_hex(raw), ts=T0 + 30)
    public = load_public_key(directory / "ledger.pub")
    assert verify_since(directory, middle, public_key=public).ok
    assert verify_since(directory, last, public_key=public).ok
    files[-1].unlink()  # the newest file gone: the one before it names it as next
    report = verify_since(directory, last, public_key=public)
    assert report.failure is not None and report.failure.reason == Reason.TRUNCATED
    one_file = CliRunner().invoke(ledger_group, ["verify", str(files[0]), "--anchor"])
    assert one_file.exit_code == 1 and "give its directory" in one_file.output


def test_the_red_team_tail_rewrite_is_caught_by_the_anchor(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with Ledger(state / "ledger") as led:
        for i, event in enumerate(["config-loaded", "quarantine", "cleanse", "alert"]):
            led.append("controller-action", {"event": event}, now=T0 + i)
        led.flush()
        anchor = led.anchor("gw", T0 + 9)
    asyncio.run(EmbeddedStore(state / "control.json").put(
        Keys("redteam").anchor(anchor.key), anchor.encode()))
    case = asyncio.run(tail_cut(state, tmp_path / "case", store_url="embedded",
                                boundary="redteam", rewrite=True))
    assert case.name == "tail-rewrite" and case.detected and case.suppressed, case.notes
    assert "8 records written over it" in case.notes[-1]  # #2..#9: past the anchor's #4
    assert "the chain alone: ok" in case.notes[-1] and "modified" in case.notes[-1]
