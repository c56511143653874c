"""The tamper-evident ledger: an append-only, hash-chained, Ed25519-signed record of decisions.

Every verdict, controller action, admin action and configuration load is appended as one
record. Each record carries the SHA-256 of the previous record's line and a signature, so a
record cannot be changed, removed, reordered or forged without ``verify`` naming it.

On-disk format (directory ``DIR``)::

    DIR/ledger-000001.jsonl, DIR/ledger-000002.jsonl, ...   records, one JSON object a line
    DIR/ledger.pub                                          the public key (PEM), for auditors
    DIR/.lock                                               held (flock) by the one writer
    <DIR>.key  (a sibling: DIR/../ledger.key for DIR=ledger) the private key (PEM, mode 0600)

The private key lives beside the directory, not in it, so the directory can be handed to an
auditor without handing over the power to forge. A line is exactly the canonical encoding of its
record (sorted keys, no spaces, ASCII only, no NaN) followed by ``\\n``; ``verify`` rejects any
line that is not byte-for-byte canonical, so every byte change is detected. Fields:

    v        format version (1)
    seq      1, 2, 3, ... across all files
    ts       UNIX seconds (float, microsecond precision), as passed in by the caller
    kind     "verdict", "controller-action", "admin-action", "config-load", ...
    prev     hex SHA-256 of the previous record's line (without ``\\n``); 64 zeros for #1
    payload  a JSON object, bounded in size (long fields are clipped with a marker)
    key      hex raw Ed25519 public key that signed the record
    sig      hex Ed25519 signature over ``DOMAIN + canonical(record without sig)``

Two kinds are written by the ledger itself: ``ledger-rotate`` ends a file and names the next
one, so a missing last file is reported as truncation; ``ledger-recovery`` notes that a torn
last line (from a crash) was cut off on reopen. Records are written and fsynced in small
batches; a crash loses at most the unflushed batch. Not thread-safe: one writer, one thread.
Cutting whole records off the end of the last file leaves a valid shorter ledger: keep the
reported head (seq and hash) elsewhere if that must be detected too.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

__all__ = [
    "GENESIS",
    "Entry",
    "Failure",
    "Ledger",
    "LedgerError",
    "Reason",
    "Record",
    "Recovery",
    "VerifyReport",
    "canonical",
    "fingerprint",
    "key_path",
    "ledger_files",
    "load_or_create_key",
    "load_public_key",
    "read_records",
    "verify",
]

FORMAT: Final = 1
GENESIS: Final = "0" * 64
DOMAIN: Final = b"endosec-ledger-v1\n"
PUBLIC_KEY_FILE: Final = "ledger.pub"
LOCK_FILE: Final = ".lock"
ROTATE: Final = "ledger-rotate"
RECOVERY: Final = "ledger-recovery"
MiB: Final = 1024 * 1024
TRUNCATED: Final = "_truncated"  # the payload key that marks a payload cut down to size

_FILE_RE: Final = re.compile(r"ledger-(\d{6,})\.jsonl")
_KIND_RE: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_HEX64: Final = re.compile(r"[0-9a-f]{64}")
_HEX128: Final = re.compile(r"[0-9a-f]{128}")
_FIELDS: Final = frozenset({"v", "seq", "ts", "kind", "prev", "payload", "key", "sig"})
_MAX_DEPTH: Final = 8
_MAX_ITEMS: Final = 256

log = logging.getLogger(__name__)


class LedgerError(Exception):
    """The ledger cannot be opened or written safely (locked, wrong key, damaged tail, I/O)."""


def canonical(obj: Mapping[str, Any]) -> bytes:
    """The one encoding used for hashing, signing and storing: equal values, equal bytes."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint(key: Ed25519PublicKey | str) -> str:
    """A short, printable name for a public key (or its hex raw form)."""
    raw = bytes.fromhex(key) if isinstance(key, str) else _raw_public(key)
    return "ed25519:" + _sha256(raw)[:16]


@dataclass(frozen=True, slots=True)
class Record:
    """One ledger record exactly as stored; ``line`` is its canonical encoding."""

    seq: int
    ts: float
    kind: str
    payload: Mapping[str, Any]
    prev: str
    key: str
    sig: str

    def body(self) -> dict[str, Any]:
        """The signed fields (everything but ``sig``)."""
        return {"v": FORMAT, "seq": self.seq, "ts": self.ts, "kind": self.kind,
                "prev": self.prev, "payload": self.payload, "key": self.key}

    def line(self) -> bytes:
        return canonical({**self.body(), "sig": self.sig})

    def digest(self) -> str:
        """What the next record carries as ``prev``."""
        return _sha256(self.line())

    def signed_by(self, key_hex: str) -> bool:
        """Whether ``sig`` is this record's signature under the key with this hex raw form."""
        try:
            key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(key_hex))
            key.verify(bytes.fromhex(self.sig), DOMAIN + canonical(self.body()))
        except (InvalidSignature, ValueError):
            return False
        return True


class _Bad(Exception):
    """A line that is not a well-formed, canonical record."""


def _field(obj: Mapping[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = obj[name]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise _Bad(f"field {name!r} has the wrong type")
    return value


def _parse(raw: bytes) -> Record:
    """Parse one line strictly: exact field set, exact types, byte-for-byte canonical."""
    try:
        obj = json.loads(raw.decode("ascii"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError, _Bad) as exc:
        raise _Bad("not a JSON record") from exc
    if not isinstance(obj, dict) or set(obj) != _FIELDS:
        raise _Bad("not a ledger record (wrong fields)")
    if _field(obj, "v", int) != FORMAT:
        raise _Bad(f"unknown format version {obj['v']!r}")
    seq, ts = _field(obj, "seq", int), _field(obj, "ts", (int, float))
    kind, payload = _field(obj, "kind", str), _field(obj, "payload", dict)
    prev, key, sig = (_field(obj, name, str) for name in ("prev", "key", "sig"))
    if seq < 1 or not _KIND_RE.fullmatch(kind):
        raise _Bad("bad seq or kind")
    if not (_HEX64.fullmatch(prev) and _HEX64.fullmatch(key) and _HEX128.fullmatch(sig)):
        raise _Bad("bad hash, key or signature field")
    try:
        if canonical(obj) != raw:
            raise _Bad("not in canonical encoding")
    except ValueError as exc:
        raise _Bad("not encodable") from exc
    return Record(seq, ts, kind, payload, prev, key, sig)


def _no_constant(name: str) -> Any:
    raise _Bad(f"non-finite number {name}")


# --- bounded payloads ------------------------------------------------------------------------


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...[truncated {len(text) - limit} chars]"


def _bounded(value: object, limit: int, depth: int = 0) -> Any:
    """A plain-JSON copy of ``value`` with long strings, big containers and bytes cut down."""
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
        return f"<{len(data)} bytes sha256:{_sha256(data)}>"
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


# --- keys and files --------------------------------------------------------------------------


def key_path(directory: Path) -> Path:
    """Where the private key of a ledger directory lives: ``<directory>.key``, beside it."""
    directory = directory.absolute()
    return directory.with_name(directory.name + ".key")


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """Load the PEM private key at ``path``, or generate one there (mode 0600) on first run."""
    if path.exists():
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise LedgerError(f"{path}: not a PEM private key without a password") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise LedgerError(f"{path}: not an Ed25519 private key")
        return key
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        _write_all(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    _fsync_dir(path.parent)
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Read a public key from a PEM public key, a PEM private key, or 64 hex characters."""
    data = path.read_bytes()
    text = data.strip().decode("ascii", "replace")
    if _HEX64.fullmatch(text.lower()):
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(text.lower()))
    loaded: object
    try:
        if b"PRIVATE KEY" in data:
            loaded = serialization.load_pem_private_key(data, password=None).public_key()
        else:
            loaded = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise LedgerError(f"{path}: not a PEM or hex Ed25519 key") from exc
    if not isinstance(loaded, Ed25519PublicKey):
        raise LedgerError(f"{path}: not an Ed25519 key")
    return loaded


def ledger_files(directory: Path) -> list[Path]:
    """The ledger files of ``directory`` in chain order."""
    found = [(int(m.group(1)), p) for p in directory.iterdir()
             if (m := _FILE_RE.fullmatch(p.name)) and p.is_file()]
    return [p for _, p in sorted(found)]


def _file_name(number: int) -> str:
    return f"ledger-{number:06d}.jsonl"


def _file_number(path: Path) -> int | None:
    m = _FILE_RE.fullmatch(path.name)
    return int(m.group(1)) if m else None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _last_line(data: bytes) -> bytes:
    """The last complete line of ``data`` (which ends with a newline), without the newline."""
    return data[:-1].rsplit(b"\n", 1)[-1]


# --- the writer ------------------------------------------------------------------------------


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

    __slots__ = ("_batch_records", "_batch_seconds", "_broken", "_buffer", "_fd", "_file_no",
                 "_head", "_key", "_key_hex", "_lock_fd", "_max_field_chars", "_max_file_bytes",
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
            self._key_hex = _raw_public(self._key.public_key()).hex()
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
            if _raw_public(load_public_key(path)) != _raw_public(public):
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
        if not files:
            self._start_file(1)
            return
        last = files[-1]
        data = last.read_bytes()
        cut = data.rfind(b"\n") + 1
        if cut < len(data):
            torn = data[cut:]
            self.recovered = Recovery(last.name, cut, len(torn), _sha256(torn))
            self._pending_note = True
            log.warning("ledger %s: cut off a torn last record (%d bytes at offset %d)",
                        last, len(torn), cut)
            with last.open("r+b") as f:
                f.truncate(cut)
                os.fsync(f.fileno())
            data = data[:cut]
        number = _file_number(last)
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
        if data and record is not None and record.kind == ROTATE:
            if record.payload.get("next") != _file_name(number + 1):
                raise LedgerError(f"{last.name} ends by naming an unexpected next file")
            self._start_file(number + 1)  # the crash came between rotation and the new file
        else:
            self._open_file(last, number)

    def _trusted(self, line: bytes, path: Path) -> Record:
        try:
            record = _parse(line)
        except _Bad as exc:
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
        self._open_file(self.directory / _file_name(number), number)
        _fsync_dir(self.directory)

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
    def public_key(self) -> Ed25519PublicKey:
        return self._key.public_key()

    @property
    def path(self) -> Path:
        """The file being appended to."""
        return self.directory / _file_name(self._file_no)

    def append(self, kind: str, payload: Mapping[str, Any], *, now: float) -> Record:
        """Sign and buffer one record; written and fsynced by the batch policy."""
        if not _KIND_RE.fullmatch(kind) or kind.startswith("ledger-"):
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
            _write_all(self._fd, b"".join(self._buffer))
            os.fsync(self._fd)
        except OSError as exc:
            self._broken = exc  # a partial write may be on disk: never write after it
            raise LedgerError(f"writing {self.path} failed: {exc}") from exc
        self._buffer.clear()
        self._oldest = None

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
            kept[TRUNCATED] = {"bytes": len(whole), "sha256": _sha256(whole),
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
        self._seq, self._head = record.seq, _sha256(line)
        if self._oldest is None:
            self._oldest = now
        if len(self._buffer) >= self._batch_records or now - self._oldest >= self._batch_seconds:
            self.flush()
        return record

    def _rotate(self, now: float) -> None:
        self._emit(ROTATE, {"next": _file_name(self._file_no + 1)}, now)
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


# --- reading and verifying -------------------------------------------------------------------


class Reason(StrEnum):
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
            yield Entry(line.file, line.number, _parse(line.raw), None)
        except _Bad as exc:
            yield Entry(line.file, line.number, None, str(exc))


def verify(path: Path, *, public_key: Ed25519PublicKey | None = None) -> VerifyReport:
    """Check the whole chain and every signature of a ledger directory or a single file.

    The records are checked against ``public_key``, else the directory's ``ledger.pub``, else
    the key of the first record. The first bad record is reported with the likeliest reason.
    """
    files, directory, whole = _targets(path)
    expected: str | None = None
    if public_key is not None:
        expected = _raw_public(public_key).hex()
    elif (directory / PUBLIC_KEY_FILE).is_file():
        expected = _raw_public(load_public_key(directory / PUBLIC_KEY_FILE)).hex()
    return _Verifier(files, whole, expected).run()


class _Verifier:
    __slots__ = ("anchored", "count", "expected", "files", "last_hash", "last_seq", "next_file",
                 "whole")

    def __init__(self, files: list[Path], whole: bool, expected: str | None) -> None:
        self.files, self.expected, self.whole = files, expected, whole
        # a single file other than the first starts mid-chain: its first record is the anchor
        self.anchored = whole or _file_number(files[0]) == 1
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
        return self._report(None)

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
            record = _parse(line.raw)
        except _Bad as exc:
            return self._fail(line.file, line.number, Reason.MODIFIED, str(exc))
        failure = self._check_signature(line, record)
        if failure is None:
            failure = self._check_position(line, record)
        if failure is None:
            self.count += 1
            self.last_seq, self.last_hash = record.seq, _sha256(line.raw)
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
