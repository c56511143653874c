"""What a ledger is on disk: the record encoding, the file names and the keys.

Shared by the writer (`endosec.observe.ledger`) and the auditor (`endosec.observe.ledger_verify`)
so both agree on every byte. Layout of a ledger directory ``DIR``::

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
last line (from a crash) was cut off on reopen.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

__all__ = [
    "DOMAIN",
    "FORMAT",
    "GENESIS",
    "KIND_RE",
    "PUBLIC_KEY_FILE",
    "RECOVERY",
    "ROTATE",
    "BadRecord",
    "LedgerError",
    "Record",
    "canonical",
    "file_name",
    "file_number",
    "fingerprint",
    "fsync_dir",
    "key_path",
    "ledger_files",
    "load_or_create_key",
    "load_public_key",
    "parse_record",
    "raw_public",
    "sha256_hex",
    "write_all",
]

FORMAT: Final = 1
GENESIS: Final = "0" * 64
DOMAIN: Final = b"endosec-ledger-v1\n"
PUBLIC_KEY_FILE: Final = "ledger.pub"
ROTATE: Final = "ledger-rotate"
RECOVERY: Final = "ledger-recovery"

_FILE_RE: Final = re.compile(r"ledger-(\d{6,})\.jsonl")
KIND_RE: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_HEX64: Final = re.compile(r"[0-9a-f]{64}")
_HEX128: Final = re.compile(r"[0-9a-f]{128}")
_FIELDS: Final = frozenset({"v", "seq", "ts", "kind", "prev", "payload", "key", "sig"})


class LedgerError(Exception):
    """The ledger cannot be opened or written safely (locked, wrong key, damaged tail, I/O)."""


def canonical(obj: Mapping[str, Any]) -> bytes:
    """The one encoding used for hashing, signing and storing: equal values, equal bytes."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint(key: Ed25519PublicKey | str) -> str:
    """A short, printable name for a public key (or its hex raw form)."""
    raw = bytes.fromhex(key) if isinstance(key, str) else raw_public(key)
    return "ed25519:" + sha256_hex(raw)[:16]


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
        return sha256_hex(self.line())

    def signed_by(self, key_hex: str) -> bool:
        """Whether ``sig`` is this record's signature under the key with this hex raw form."""
        try:
            key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(key_hex))
            key.verify(bytes.fromhex(self.sig), DOMAIN + canonical(self.body()))
        except (InvalidSignature, ValueError):
            return False
        return True


class BadRecord(Exception):
    """A line that is not a well-formed, canonical record."""


def _field(obj: Mapping[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = obj[name]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise BadRecord(f"field {name!r} has the wrong type")
    return value


def parse_record(raw: bytes) -> Record:
    """Parse one line strictly: exact field set, exact types, byte-for-byte canonical."""
    try:
        obj = json.loads(raw.decode("ascii"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError, BadRecord) as exc:
        raise BadRecord("not a JSON record") from exc
    if not isinstance(obj, dict) or set(obj) != _FIELDS:
        raise BadRecord("not a ledger record (wrong fields)")
    if _field(obj, "v", int) != FORMAT:
        raise BadRecord(f"unknown format version {obj['v']!r}")
    seq, ts = _field(obj, "seq", int), _field(obj, "ts", (int, float))
    kind, payload = _field(obj, "kind", str), _field(obj, "payload", dict)
    prev, key, sig = (_field(obj, name, str) for name in ("prev", "key", "sig"))
    if seq < 1 or not KIND_RE.fullmatch(kind):
        raise BadRecord("bad seq or kind")
    if not (_HEX64.fullmatch(prev) and _HEX64.fullmatch(key) and _HEX128.fullmatch(sig)):
        raise BadRecord("bad hash, key or signature field")
    try:
        if canonical(obj) != raw:
            raise BadRecord("not in canonical encoding")
    except ValueError as exc:
        raise BadRecord("not encodable") from exc
    return Record(seq, ts, kind, payload, prev, key, sig)


def _no_constant(name: str) -> Any:
    raise BadRecord(f"non-finite number {name}")


# --- keys and files --------------------------------------------------------------------------


def key_path(directory: Path) -> Path:
    """Where the private key of a ledger directory lives: ``<directory>.key``, beside it."""
    directory = directory.absolute()
    return directory.with_name(directory.name + ".key")


def fsync_dir(directory: Path) -> None:
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
        write_all(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(path.parent)
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


def file_name(number: int) -> str:
    return f"ledger-{number:06d}.jsonl"


def file_number(path: Path) -> int | None:
    m = _FILE_RE.fullmatch(path.name)
    return int(m.group(1)) if m else None


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
