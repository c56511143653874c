"""Red-team class ``evidence``: hiding what the gateway saw by cutting its ledger's tail.

An intruder who holds the gateway's host may remove the newest records of its ledger, the
quarantine that names his implant among them, after the gateway stopped (or in the copy an
auditor is handed): ``tail-cut``. Holding the host, he also holds the ledger's signing key, so
he may write innocent records over what he cut, more of them than he removed: ``tail-rewrite``.
Either way the chain is valid, so `ledger verify` alone cannot tell; the anchor kept in the
control-state store can (truncated, or the anchored record is not there). The cases work on a
copy of the main phase's state directory, so the report's own ledger stays as written.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from endosec.cluster.member import Keys, anchor_of
from endosec.cluster.store import StoreError, open_store
from endosec.observe.anchor import AnchorError
from endosec.observe.ledger import Ledger
from endosec.observe.ledger_format import (
    LedgerError,
    ledger_files,
    load_public_key,
    raw_public,
)
from endosec.observe.ledger_verify import Reason, read_records, verify
from endosec.redteam.drill import CaseResult

__all__ = ["EVIDENCE", "tail_cut"]

#: Records written over a cut tail in ``tail-rewrite``: more than were cut.
_OVER = 5

EVIDENCE = "evidence"


def _last_seq(ledger: Path) -> int:
    return max((e.record.seq for e in read_records(ledger) if e.record is not None), default=0)


def _cut_from(ledger: Path) -> tuple[int, list[str]]:
    """Cut the ledger from its newest quarantine (else its last three records) to the end;
    the first sequence number removed and the kinds of what went."""
    entries = [e for e in read_records(ledger) if e.record is not None]
    if not entries:
        raise ValueError("the ledger holds no record to cut")
    quarantines = [e for e in entries
                   if e.record is not None and e.record.payload.get("event") == "quarantine"]
    start = quarantines[-1] if quarantines else entries[max(0, len(entries) - 3)]
    assert start.record is not None
    kinds = sorted({str(e.record.payload.get("event", e.record.kind)) for e in entries
                    if e.record is not None and e.record.seq >= start.record.seq})
    for path in ledger_files(ledger):
        if path.name > start.file.name:
            path.unlink()
    lines = start.file.read_bytes().splitlines(keepends=True)
    start.file.write_bytes(b"".join(lines[:start.line - 1]))
    return start.record.seq, kinds


async def tail_cut(state: Path, root: Path, *, store_url: str, boundary: str,
                   rewrite: bool = False) -> CaseResult:
    result = CaseResult(
        "tail-rewrite" if rewrite else "tail-cut", EVIDENCE,
        "the ledger's newest records (from the last quarantine on) cut away after the "
        "gateway stopped" + (", and innocent ones signed with its key written over them"
                             if rewrite else ""), ["ledger"], True)
    clock = time.monotonic()
    copy = root / "state"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(state / "ledger", copy / "ledger")
    for kept in ("control.json", "ledger.key"):
        if (state / kept).exists():
            shutil.copy2(state / kept, copy / kept)
    anchor = None
    try:
        first, kinds = _cut_from(copy / "ledger")
        if rewrite:
            with Ledger(copy / "ledger") as forger:  # the key beside the directory
                left = forger.durable[0]
                for i in range(_OVER + max(0, _last_seq(state / "ledger") - left)):
                    forger.append("verdict", {"event": "agreed", "n": i}, now=time.time())
        key = raw_public(load_public_key(copy / "ledger" / "ledger.pub")).hex()
        store = open_store(store_url, copy)
        try:
            anchor = await anchor_of(store, Keys(boundary), key)
        finally:
            await store.close()
    except (OSError, ValueError, LedgerError, StoreError, AnchorError) as exc:
        result.notes.append(f"the case could not run: {exc}")
        result.seconds = time.monotonic() - clock
        return result
    result.fired = 1
    alone = verify(copy / "ledger")
    anchored = None if anchor is None else verify(copy / "ledger", anchor=anchor)
    caught = anchored is not None and anchored.failure is not None \
        and anchored.failure.reason == (Reason.MODIFIED if rewrite else Reason.TRUNCATED)
    result.detected = result.suppressed = caught
    result.notes.append(
        f"cut from #{first} ({', '.join(kinds)})"
        + (f", {_last_seq(copy / 'ledger') - first + 1} records written over it" if rewrite
           else "") + "; the chain alone: "
        f"{'ok' if alone.ok else alone.summary()}; against the anchor: "
        + ("none kept" if anchored is None else
           f"#{anchor.seq if anchor else '?'}: {anchored.summary()}"))
    result.seconds = time.monotonic() - clock
    return result
