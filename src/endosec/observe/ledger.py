"""The tamper-evident ledger: an append-only, hash-chained, Ed25519-signed record of decisions.

Every verdict, controller action, admin action and configuration load is appended as one
record. Each record carries the SHA-256 of the previous record's line and a signature, so a
record cannot be changed, removed, reordered or forged without ``verify`` (in
`endosec.observe.ledger_verify`) naming it. The on-disk format is in
`endosec.observe.ledger_format`; this module is the one writer.

Records are written and fsynced in small batches; a crash loses at most the unflushed batch,
and a torn last line is cut off on reopen and noted in a ``ledger-recovery`` record. Not
thread-safe: one writer, one thread. Cutting whole records off the end of the last file leaves
a valid shorter ledger: keep the reported head (seq and hash) elsewhere if that must be
detected too.
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from endosec.observe.anchor import Anchor, sign_anchor
from endosec.observe.chain import Link, sign_link
from endosec.observe.ledger_format import (
    DOMAIN,
    GENESIS,
    KIND_RE,
    PUBLIC_KEY_FILE,
    RECOVERY,
    ROTATE,
    BadRecord,
    LedgerError,
    Record,
    canonical,
    file_name,
    file_number,
    fingerprint,
    fsync_dir,
    key_path,
    ledger_files,
    load_or_create_key,
    load_public_key,
    parse_record,
    raw_public,
    sha256_hex,
    write_all,
)

__all__ = ["TRUNCATED", "Ledger", "Recovery"]

LOCK_FILE: Final = ".lock"
MiB: Final = 1024 * 1024
TRUNCATED: Final = "_truncated"  # the payload key that marks a payload cut down to size
_MAX_DEPTH: Final = 8
_MAX_ITEMS: Final = 256

log = logging.getLogger(__name__)


# --- bounded payloads ------------------------------------------------------------------------


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...[truncated {len(text) - limit} chars]"


def _bounded(value: object, limit: int, depth: int = 0) -> Any:
    """A plain-JSON copy of ``value`` with long strings, big containers and bytes cut down."""
    # Plain str and dict first, by exact type (every record passes through here); the same
    # result as the general case below, which subclasses and mappings still take.
    if type(value) is str:
        return value if len(value) <= limit else _clip(value, limit)
    if type(value) is dict and len(value) <= _MAX_ITEMS and depth < _MAX_DEPTH:
        return {(k if type(k) is str and len(k) <= limit else _clip(str(k), limit)):
                _bounded(v, limit, depth + 1) for k, v in value.items()}
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value) if value.bit_length() <= 64 else f"<int of {value.bit_length()} bits>"
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else repr(float(value))
    if isinstance(value, str):
        return _clip(str.__str__(value), limit)
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        return f"<{len(data)} bytes sha256:{sha256_hex(data)}>"
    if depth >= _MAX_DEPTH:
        return "<nested too deep>"
    if isinstance(value, Mapping):
        items = list(value.items())
        out = {_clip(str(k), limit): _bounded(v, limit, depth + 1) for k, v in items[:_MAX_ITEMS]}
        if len(items) > _MAX_ITEMS:
            out["...truncated"] = f"{len(items) - _MAX_ITEMS} more keys"
        return out
    if isinstance(value, list | tuple | set | frozenset):
        seq = sorted(value, key=repr) if isinstance(value, set | frozenset) else list(value)
        out_list = [_bounded(v, limit, depth + 1) for v in seq[:_MAX_ITEMS]]
        if len(seq) > _MAX_ITEMS:
            out_list.append(f"...[truncated {len(seq) - _MAX_ITEMS} items]")
        return out_list
    return _clip(str(value), limit)


# --- the writer ------------------------------------------------------------------------------


def _last_line(data: bytes) -> bytes:
    """The last complete line of ``data`` (which ends with a newline), without the newline."""
    return data[:-1].rsplit(b"\n", 1)[-1]


@dataclass(frozen=True, slots=True)
class Recovery:
    """A torn last line cut off on reopen (a crash mid-write); noted in the ledger itself."""

    file: str
    offset: int
    dropped_bytes: int
    sha256: str

    def payload(self) -> dict[str, Any]:
        return {"file": self.file, "offset": self.offset,
                "dropped_bytes": self.dropped_bytes, "sha256": self.sha256}


class Ledger:
    """The single writer of a ledger directory.

    Example::

        with Ledger(state_dir / "ledger") as ledger:
            ledger.append("verdict", {"outcome": "agreed"}, now=time.time())

    Parameters:

    * **directory** - holds the ``ledger-NNNNNN.jsonl`` files; created if missing.
    * **key** - the signing key; by default loaded from (or created at) ``key_path(directory)``.
      An existing ledger must be continued with the key that signed it.
    * **batch_records**, **batch_seconds** - write and fsync once this many records are
      buffered, or once the oldest buffered record is this old (by the ``now`` passed to
      ``append``/``tick``); ``flush()`` and ``close()`` write at once.
    * **max_file_bytes** - start the next file when a record would take a file past this.
    * **max_field_chars**, **max_record_bytes** - bounds on payload strings and whole records.
    """

    __slots__ = ("_batch_records", "_batch_seconds", "_broken", "_buffer", "_durable", "_fd",
                 "_file_no", "_head", "_key", "_key_hex", "_lock_fd", "_max_field_chars",
                 "_max_file_bytes",
                 "_max_record_bytes", "_oldest", "_pending_note", "_seq", "_size", "directory",
                 "recovered")

    def __init__(self, directory: Path, *, key: Ed25519PrivateKey | None = None,
                 batch_records: int = 32, batch_seconds: float = 0.5,
                 max_file_bytes: int = 16 * MiB, max_field_chars: int = 1024,
                 max_record_bytes: int = 64 * 1024) -> None:
        if batch_records < 1 or not batch_seconds >= 0:
            raise ValueError("batch_records must be >= 1 and batch_seconds >= 0")
        if max_field_chars < 16 or max_record_bytes < 1024 or max_file_bytes < max_record_bytes:
            raise ValueError("need max_field_chars >= 16, max_record_bytes >= 1024 and "
                             "max_file_bytes >= max_record_bytes")
        self.directory = directory
        self._batch_records, self._batch_seconds = batch_records, batch_seconds
        self._max_file_bytes, self._max_field_chars = max_file_bytes, max_field_chars
        self._max_record_bytes = max_record_bytes
        self._buffer: list[bytes] = []
        self._oldest: float | None = None
        self._broken: BaseException | None = None
        self.recovered: Recovery | None = None
        self._pending_note = False
        directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _lock(directory)
        self._fd = -1
        try:
            self._key = key if key is not None else load_or_create_key(key_path(directory))
            self._key_hex = raw_public(self._key.public_key()).hex()
            self._check_public_key_file()
            self._open_tail()
        except BaseException:
            self._release()
            raise

    # -- opening

    def _check_public_key_file(self) -> None:
        path = self.directory / PUBLIC_KEY_FILE
        public = self._key.public_key()
        if path.exists():
            if raw_public(load_public_key(path)) != raw_public(public):
                raise LedgerError(f"{path} names key {fingerprint(load_public_key(path))}, "
                                  f"but the ledger was opened with {fingerprint(public)}")
            return
        pem = public.public_bytes(serialization.Encoding.PEM,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
        tmp = path.with_suffix(".pub.tmp")
        tmp.write_bytes(pem)
        os.replace(tmp, path)

    def _open_tail(self) -> None:
        """Find where the chain ends; cut off a torn last line; reopen the last file."""
        files = ledger_files(self.directory)
        self._seq, self._head = 0, GENESIS
        self._durable = (0, GENESIS)
        if not files:
            self._start_file(1)
            return
        last = files[-1]
        data = last.read_bytes()
        cut = data.rfind(b"\n") + 1
        if cut < len(data):
            torn = data[cut:]
            self.recovered = Recovery(last.name, cut, len(torn), sha256_hex(torn))
            self._pending_note = True
            log.warning("ledger %s: cut off a torn last record (%d bytes at offset %d)",
                        last, len(torn), cut)
            with last.open("r+b") as f:
                f.truncate(cut)
                os.fsync(f.fileno())
            data = data[:cut]
        number = file_number(last)
        assert number is not None
        if data:
            record = self._trusted(_last_line(data), last)
        elif len(files) > 1:
            record = self._trusted(_last_line(files[-2].read_bytes()), files[-2])
            if record.kind != ROTATE or record.payload.get("next") != last.name:
                raise LedgerError(f"{last.name} is empty but {files[-2].name} does not "
                                  "end by naming it; run `endosec ledger verify`")
        else:
            record = None
        if record is not None:
            self._seq, self._head = record.seq, record.digest()
        self._durable = (self._seq, self._head)
        if data and record is not None and record.kind == ROTATE:
            if record.payload.get("next") != file_name(number + 1):
                raise LedgerError(f"{last.name} ends by naming an unexpected next file")
            self._start_file(number + 1)  # the crash came between rotation and the new file
        else:
            self._open_file(last, number)

    def _trusted(self, line: bytes, path: Path) -> Record:
        try:
            record = parse_record(line)
        except BadRecord as exc:
            raise LedgerError(f"{path.name}: the last record is damaged ({exc}); "
                              "run `endosec ledger verify`") from exc
        if not record.signed_by(record.key):
            raise LedgerError(f"{path.name}: the last record has a bad signature; "
                              "run `endosec ledger verify`")
        if record.key != self._key_hex:
            raise LedgerError(f"the ledger is signed by {fingerprint(record.key)}; it cannot "
                              f"be continued with {fingerprint(self._key_hex)}")
        return record

    def _open_file(self, path: Path, number: int) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._file_no = number
        self._size = os.fstat(self._fd).st_size

    def _start_file(self, number: int) -> None:
        self._open_file(self.directory / file_name(number), number)
        fsync_dir(self.directory)

    # -- writing

    @property
    def seq(self) -> int:
        """The sequence number of the newest record (0 when empty)."""
        return self._seq

    @property
    def head(self) -> str:
        """The hash of the newest record: an anchor to keep elsewhere."""
        return self._head

    @property
    def durable(self) -> tuple[int, str]:
        """The sequence number and hash of the newest record written and fsynced."""
        return self._durable

    def anchor(self, gateway: str, now: float) -> Anchor:
        """A signed anchor of the durable head, to keep away from the ledger (a crash can
        lose what is buffered, so only what is on disk is anchored)."""
        seq, head = self._durable
        return sign_anchor(self._key, gateway=gateway, seq=seq, head=head, ts=now)

    def link(self, n: int, prev: str, anchor: Anchor) -> Link:
        """Link ``n`` of the boundary's chain, after ``prev``, for what ``anchor`` (this
        ledger's) says: signed with this ledger's key (`endosec.observe.chain`)."""
        return sign_link(self._key, n=n, prev=prev, anchor=anchor)

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._key.public_key()

    @property
    def path(self) -> Path:
        """The file being appended to."""
        return self.directory / file_name(self._file_no)

    def append(self, kind: str, payload: Mapping[str, Any], *, now: float) -> Record:
        """Sign and buffer one record; written and fsynced by the batch policy."""
        if not KIND_RE.fullmatch(kind) or kind.startswith("ledger-"):
            raise ValueError(f"bad record kind {kind!r} (lowercase, <= 64 chars, not 'ledger-*')")
        if not math.isfinite(now):
            raise ValueError("now must be a finite UNIX time")
        if not isinstance(payload, Mapping):
            raise TypeError("payload must be a mapping")
        self._check_open()
        if self._pending_note and self.recovered is not None:
            self._pending_note = False
            self._emit(RECOVERY, self.recovered.payload(), now)
        return self._emit(kind, _bounded(payload, self._max_field_chars), now)

    def tick(self, now: float) -> None:
        """Write the buffer if its oldest record has waited ``batch_seconds``; call on a timer."""
        if self._oldest is not None and now - self._oldest >= self._batch_seconds:
            self.flush()

    def flush(self) -> None:
        """Write and fsync every buffered record."""
        if not self._buffer:
            return
        self._check_open()
        try:
            write_all(self._fd, b"".join(self._buffer))
            os.fsync(self._fd)
        except OSError as exc:
            self._broken = exc  # a partial write may be on disk: never write after it
            raise LedgerError(f"writing {self.path} failed: {exc}") from exc
        self._buffer.clear()
        self._oldest = None
        self._durable = (self._seq, self._head)

    def close(self) -> None:
        """Flush, then release the file and the lock; safe to call twice."""
        try:
            if self._fd >= 0 and self._broken is None:
                self.flush()
        finally:
            self._release()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._broken is not None:
            raise LedgerError(f"the ledger stopped after a write error: {self._broken}")
        if self._fd < 0:
            raise LedgerError("the ledger is closed")

    def _release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # closing drops the flock
            self._lock_fd = -1

    def _sign(self, kind: str, payload: Mapping[str, Any], ts: float) -> Record:
        unsigned = Record(self._seq + 1, ts, kind, payload, self._head, self._key_hex, "")
        sig = self._key.sign(DOMAIN + canonical(unsigned.body())).hex()
        return Record(self._seq + 1, ts, kind, payload, self._head, self._key_hex, sig)

    def _build(self, kind: str, payload: Mapping[str, Any], ts: float) -> tuple[Record, bytes]:
        """Sign the next record; one too big keeps its small fields and a digest of the rest."""
        record = self._sign(kind, payload, ts)
        line = record.line()
        if len(line) > self._max_record_bytes:
            whole = canonical(payload)
            budget = self._max_record_bytes - (len(line) - len(whole)) - 600
            kept: dict[str, Any] = {}
            for size, k in sorted((len(canonical({k: v})), k) for k, v in payload.items()):
                if size > budget:
                    break
                kept[k] = payload[k]
                budget -= size + 1
            dropped = sorted(set(payload) - set(kept))
            kept[TRUNCATED] = {"bytes": len(whole), "sha256": sha256_hex(whole),
                               "dropped": [_clip(k, 32) for k in dropped[:8]]}
            record = self._sign(kind, kept, ts)
            line = record.line()
        return record, line

    def _emit(self, kind: str, payload: Mapping[str, Any], now: float) -> Record:
        ts = round(float(now), 6)
        record, line = self._build(kind, payload, ts)
        if kind != ROTATE and self._size > 0 and self._size + len(line) + 1 > self._max_file_bytes:
            self._rotate(now)
            record, line = self._build(kind, payload, ts)
        self._buffer.append(line + b"\n")
        self._size += len(line) + 1
        self._seq, self._head = record.seq, sha256_hex(line)
        if self._oldest is None:
            self._oldest = now
        if len(self._buffer) >= self._batch_records or now - self._oldest >= self._batch_seconds:
            self.flush()
        return record

    def _rotate(self, now: float) -> None:
        self._emit(ROTATE, {"next": file_name(self._file_no + 1)}, now)
        self.flush()
        os.close(self._fd)
        self._fd = -1
        self._start_file(self._file_no + 1)


def _lock(directory: Path) -> int:
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        os.close(fd)
        raise LedgerError(f"{directory} is already open for writing by another process") from exc
    return fd
