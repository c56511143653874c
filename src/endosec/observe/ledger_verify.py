"""Auditing a ledger: check the chain and every signature, and name the first bad record.

Needs only the directory (or one file) and, ideally, the public key: never the private key.
`verify` reports the likeliest reason (modified, removed, reordered, truncated, wrong key);
`read_records` lists the lines as parsed, for reading rather than judging.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from endosec.observe.anchor import Anchor, AnchorError
from endosec.observe.ledger_format import (
    GENESIS,
    PUBLIC_KEY_FILE,
    ROTATE,
    BadRecord,
    Record,
    file_number,
    fingerprint,
    ledger_files,
    load_public_key,
    parse_record,
    raw_public,
    sha256_hex,
)

__all__ = ["Entry", "Failure", "Reason", "VerifyReport", "read_records", "verify",
           "verify_since"]


class Reason(StrEnum):
    """The likeliest explanation of the first bad record."""

    MODIFIED = "modified"
    REMOVED = "removed"
    REORDERED = "reordered"
    TRUNCATED = "truncated"
    WRONG_KEY = "wrong key"


@dataclass(frozen=True, slots=True)
class Failure:
    """The first bad record: its position in the chain (#index) and where it sits on disk."""

    index: int
    file: Path
    line: int
    reason: Reason
    detail: str


@dataclass(frozen=True, slots=True)
class VerifyReport:
    records: int  # records that verified before the failure (all of them when ok)
    files: int
    key: str | None  # fingerprint of the key the records were checked against
    last_seq: int
    last_hash: str
    failure: Failure | None

    @property
    def ok(self) -> bool:
        return self.failure is None

    def summary(self) -> str:
        if self.failure is None:
            return f"ok: {self.records} records, chain intact, signatures valid"
        f = self.failure
        return f"FAIL at record #{f.index} ({f.file.name}:{f.line}): {f.reason}: {f.detail}"


@dataclass(frozen=True, slots=True)
class _Line:
    file: Path
    number: int
    raw: bytes
    torn: bool  # no line end: the file stops mid-record


def _lines(files: list[Path]) -> Iterator[_Line]:
    for path in files:
        parts = path.read_bytes().split(b"\n")
        for i, raw in enumerate(parts[:-1], start=1):
            yield _Line(path, i, raw, False)
        if parts[-1]:
            yield _Line(path, len(parts), parts[-1], True)


@dataclass(frozen=True, slots=True)
class Entry:
    """A line as ``read_records`` found it: a record, or why it is not one."""

    file: Path
    line: int
    record: Record | None
    problem: str | None


def _targets(path: Path) -> tuple[list[Path], Path, bool]:
    """The files to read, the directory holding them, and whether this is a whole ledger."""
    if path.is_dir():
        return ledger_files(path), path, True
    return [path], path.parent, False


def read_records(path: Path) -> Iterator[Entry]:
    """Every line of a ledger (directory or file), parsed but not verified."""
    for line in _lines(_targets(path)[0]):
        if line.torn:
            yield Entry(line.file, line.number, None, "file ends mid-record")
            continue
        try:
            yield Entry(line.file, line.number, parse_record(line.raw), None)
        except BadRecord as exc:
            yield Entry(line.file, line.number, None, str(exc))


def verify(path: Path, *, public_key: Ed25519PublicKey | None = None,
           anchor: Anchor | None = None) -> VerifyReport:
    """Check the whole chain and every signature of a ledger directory or a single file.

    The records are checked against ``public_key``, else the directory's ``ledger.pub``, else
    the key of the first record. The first bad record is reported with the likeliest reason.
    With an ``anchor`` (signed by that same key), the ledger must also reach the anchored
    record with the anchored hash: a ledger whose last records were cut off fails.
    """
    files, directory, whole = _targets(path)
    expected: str | None = None
    if public_key is not None:
        expected = raw_public(public_key).hex()
    elif (directory / PUBLIC_KEY_FILE).is_file():
        expected = raw_public(load_public_key(directory / PUBLIC_KEY_FILE)).hex()
    return _Verifier(files, whole, expected, anchor).run()


def verify_since(directory: Path, anchor: Anchor, *,
                 public_key: Ed25519PublicKey) -> VerifyReport:
    """`verify` against ``anchor`` from the file holding the anchored record on: what a
    gateway checks at every start, at a cost that does not grow with the ledger's age."""
    files = ledger_files(directory)
    start = 0
    for i, path in enumerate(files):
        with path.open("rb") as f, contextlib.suppress(ValueError, UnicodeDecodeError):
            first = json.loads(f.readline())
            if isinstance(first, dict) and isinstance(first.get("seq"), int) \
                    and first["seq"] <= anchor.seq:
                start = i
    checker = _Verifier(files[start:], True, raw_public(public_key).hex(), anchor)
    checker.anchored = start == 0  # a later file starts mid-chain: its first record anchors
    return checker.run()


class _Verifier:
    __slots__ = ("anchor", "anchored", "at_anchor", "count", "expected", "files", "last_hash",
                 "last_seq", "next_file", "whole")

    def __init__(self, files: list[Path], whole: bool, expected: str | None,
                 anchor: Anchor | None = None) -> None:
        self.files, self.expected, self.whole = files, expected, whole
        self.anchor = anchor
        self.at_anchor: str | None = None  # the hash of the record the anchor names
        # a single file other than the first starts mid-chain: its first record is the anchor
        self.anchored = whole or file_number(files[0]) == 1
        self.count, self.last_seq, self.last_hash = 0, 0, GENESIS
        self.next_file: str | None = None  # named by a rotation record, must come next

    def run(self) -> VerifyReport:
        if not self.files:
            return self._report(Failure(1, Path("ledger-000001.jsonl"), 0, Reason.TRUNCATED,
                                        "no ledger files"))
        for line in _lines(self.files):
            failure = self._step(line)
            if failure is not None:
                return self._report(failure)
        if self.next_file is not None and self.whole:
            return self._report(self._fail(Path(self.next_file), 1, Reason.TRUNCATED,
                                           f"{self.next_file} is missing (the previous file "
                                           "ends with a rotation record)"))
        return self._report(self._against_anchor())

    def _against_anchor(self) -> Failure | None:
        """Whether the verified chain reaches the anchored record, with its hash."""
        anchor = self.anchor
        if anchor is None:
            return None
        where = self.files[-1]
        end = len(where.read_bytes().splitlines()) + 1  # where the next record would be
        try:
            anchor.check()
        except AnchorError as exc:
            return self._fail(where, end, Reason.WRONG_KEY, str(exc))
        if self.expected is not None and anchor.key != self.expected:
            return self._fail(where, end, Reason.WRONG_KEY,
                              f"the anchor is signed by {fingerprint(anchor.key)}, the ledger by "
                              f"{fingerprint(self.expected)}")
        if self.last_seq < anchor.seq:
            return Failure(self.last_seq + 1, where, end, Reason.TRUNCATED,
                           f"the ledger ends at #{self.last_seq}, but {anchor.gateway} anchored "
                           f"#{anchor.seq} at {anchor.ts:.0f}: records "
                           f"#{self.last_seq + 1}..#{anchor.seq} are gone")
        if anchor.seq > 0 and self.at_anchor != anchor.head:
            return Failure(anchor.seq, where, end, Reason.MODIFIED,
                           f"record #{anchor.seq} is not the one {anchor.gateway} anchored")
        return None

    def _report(self, failure: Failure | None) -> VerifyReport:
        key = fingerprint(self.expected) if self.expected is not None else None
        return VerifyReport(self.count, len(self.files), key, self.last_seq, self.last_hash,
                            failure)

    def _fail(self, file: Path, line: int, reason: Reason, detail: str) -> Failure:
        return Failure(self.last_seq + 1, file, line, reason, detail)

    def _step(self, line: _Line) -> Failure | None:
        if line.torn:
            return self._fail(line.file, line.number, Reason.TRUNCATED,
                              f"file ends mid-record ({len(line.raw)} bytes without a line end)")
        try:
            record = parse_record(line.raw)
        except BadRecord as exc:
            return self._fail(line.file, line.number, Reason.MODIFIED, str(exc))
        failure = self._check_signature(line, record)
        if failure is None:
            failure = self._check_position(line, record)
        if failure is None:
            self.count += 1
            self.last_seq, self.last_hash = record.seq, sha256_hex(line.raw)
            if self.anchor is not None and record.seq == self.anchor.seq:
                self.at_anchor = self.last_hash
            self.next_file = str(record.payload.get("next")) if record.kind == ROTATE else None
        return failure

    def _check_signature(self, line: _Line, record: Record) -> Failure | None:
        if not record.signed_by(record.key):
            if (self.expected is not None and self.expected != record.key
                    and replace(record, key=self.expected).signed_by(self.expected)):
                detail = "the key field was altered"
            else:
                detail = "signature does not match the record"
            return self._fail(line.file, line.number, Reason.MODIFIED, detail)
        if self.expected is None:
            self.expected = record.key
        if record.key != self.expected:
            return self._fail(line.file, line.number, Reason.WRONG_KEY,
                              f"signed by {fingerprint(record.key)}, "
                              f"expected {fingerprint(self.expected)}")
        return None

    def _check_position(self, line: _Line, record: Record) -> Failure | None:
        if not self.anchored:
            self.anchored = True
            self.last_seq, self.last_hash = record.seq - 1, record.prev
        expect = self.last_seq + 1
        where = (line.file, line.number)
        if record.seq < expect:
            return self._fail(*where, Reason.REORDERED,
                              f"found #{record.seq} after #{self.last_seq}")
        if record.seq > expect:
            later = self._find_later(expect, line)
            if later is not None:
                return self._fail(*where, Reason.REORDERED,
                                  f"found #{record.seq} where #{expect} belongs "
                                  f"(#{expect} is at {later})")
            gone = f"#{expect}" if record.seq == expect + 1 else f"#{expect}..#{record.seq - 1}"
            missing = ""
            if self.next_file is not None and self.next_file != line.file.name:
                missing = f" ({self.next_file} is missing)"
            return self._fail(*where, Reason.REMOVED, f"record {gone} missing{missing}")
        if record.prev != self.last_hash:
            return self._fail(*where, Reason.MODIFIED,
                              "previous-record hash does not match (chain broken)")
        starts_file = line.number == 1 and self.count > 0
        if self.next_file is not None and (line.file.name != self.next_file or line.number != 1):
            return self._fail(*where, Reason.REORDERED,
                              f"record belongs at the start of {self.next_file}")
        if self.next_file is None and starts_file:
            return self._fail(*where, Reason.REORDERED,
                              "a new file starts without a rotation record before it")
        return None

    def _find_later(self, seq: int, after: _Line) -> str | None:
        passed = False
        for line in _lines(self.files):
            if passed:
                with contextlib.suppress(ValueError, UnicodeDecodeError):
                    obj = json.loads(line.raw)
                    if isinstance(obj, dict) and obj.get("seq") == seq:
                        return f"{line.file.name}:{line.number}"
            passed = passed or (line.file == after.file and line.number == after.number)
        return None
