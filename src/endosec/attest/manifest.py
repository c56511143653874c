"""The signed manifest: the measurements an operator vouches for, one per executor.

On disk, JSON::

    {"version": 1, "created": "2026-05-09T07:35:25+00:00",
     "executors": {"nginx": {"entry": "<sha256 hex>", "exe:/usr/sbin/nginx": "...", ...}},
     "key": "<hex raw Ed25519 public key>", "sig": "<hex Ed25519 signature>"}

``sig`` signs ``DOMAIN + canonical(everything but sig)`` with the ledger's canonical encoding
(`endosec.observe.ledger_format.canonical`); the domain keeps a ledger record's signature from
passing for a manifest's, and the other way round. The key inside only says who signed:
`load_manifest` checks it against the operator's public key when given one.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from endosec.attest.measure import Measurement
from endosec.observe.ledger_format import canonical, fingerprint, raw_public

__all__ = ["DOMAIN", "AttestError", "Manifest", "load_manifest", "sign_manifest",
           "write_manifest"]

VERSION: Final = 1
DOMAIN: Final = b"endosec-attest-v1\n"
_FIELDS: Final = frozenset({"version", "created", "executors", "key", "sig"})
_HEX64: Final = re.compile(r"[0-9a-f]{64}")
_HEX128: Final = re.compile(r"[0-9a-f]{128}")


class AttestError(Exception):
    """A manifest that cannot be trusted or used, or an executor that is not as attested."""


@dataclass(frozen=True, slots=True)
class Manifest:
    """Signed measurements: ``executors`` maps each name to its labels and digests."""

    created: str
    executors: Mapping[str, Mapping[str, str]]
    key: str
    sig: str

    def body(self) -> dict[str, Any]:
        """What the signature covers: everything but ``sig``."""
        return {"version": VERSION, "created": self.created,
                "executors": {n: dict(d) for n, d in self.executors.items()}, "key": self.key}

    def expected(self, name: str) -> Mapping[str, str]:
        """The digests attested for executor ``name``; `AttestError` if it has none."""
        try:
            return self.executors[name]
        except KeyError:
            raise AttestError(f"the manifest signed by {fingerprint(self.key)} has no "
                              f"measurement of executor {name!r}") from None


def sign_manifest(measurements: Iterable[Measurement], key: Ed25519PrivateKey,
                  created: datetime | None = None) -> Manifest:
    """A manifest of ``measurements`` signed with ``key``, dated ``created`` (default: now)."""
    when = (created or datetime.now(UTC)).isoformat(timespec="seconds")
    unsigned = Manifest(when, {m.executor: dict(m.digests) for m in measurements},
                        raw_public(key.public_key()).hex(), "")
    sig = key.sign(DOMAIN + canonical(unsigned.body())).hex()
    return Manifest(unsigned.created, unsigned.executors, unsigned.key, sig)


def write_manifest(path: Path, manifest: Manifest) -> None:
    """Write ``manifest`` to ``path`` as indented JSON, replacing any file there at once."""
    text = json.dumps({**manifest.body(), "sig": manifest.sig}, indent=2, sort_keys=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text + "\n", encoding="ascii")
    os.replace(partial, path)


def load_manifest(path: Path, public_key: Ed25519PublicKey | None) -> Manifest:
    """The manifest at ``path``, its signature verified, and its key the operator's when
    ``public_key`` is given; `AttestError` naming the file and the reason otherwise."""
    try:
        obj = json.loads(path.read_bytes())
    except OSError as exc:
        raise AttestError(f"{path}: cannot read the manifest: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise AttestError(f"{path}: not a JSON manifest: {exc}") from exc
    try:
        manifest = _parse(obj)
        signer = Ed25519PublicKey.from_public_bytes(bytes.fromhex(manifest.key))
    except (ValueError, TypeError) as exc:
        raise AttestError(f"{path}: not an endosec manifest: {exc}") from exc
    try:
        signer.verify(bytes.fromhex(manifest.sig), DOMAIN + canonical(manifest.body()))
    except InvalidSignature:
        raise AttestError(f"{path}: the signature does not match the content (modified after "
                          f"it was signed, or not signed by {fingerprint(manifest.key)})") \
            from None
    if public_key is not None and raw_public(public_key).hex() != manifest.key:
        raise AttestError(f"{path}: signed by {fingerprint(manifest.key)}, not by the operator "
                          f"key {fingerprint(public_key)}")
    return manifest


def _parse(obj: object) -> Manifest:
    """Check every field's shape; the signature is checked by the caller."""
    if not isinstance(obj, dict) or set(obj) != _FIELDS:
        raise ValueError(f"expected exactly the fields {', '.join(sorted(_FIELDS))}")
    if obj["version"] != VERSION:
        raise ValueError(f"unknown version {obj['version']!r}")
    created, key, sig, executors = obj["created"], obj["key"], obj["sig"], obj["executors"]
    if not isinstance(created, str):
        raise TypeError("created: not a string")
    datetime.fromisoformat(created)
    if not (isinstance(key, str) and _HEX64.fullmatch(key)):
        raise ValueError("key: not a hex Ed25519 public key")
    if not (isinstance(sig, str) and _HEX128.fullmatch(sig)):
        raise ValueError("sig: not a hex Ed25519 signature")
    if not isinstance(executors, dict):
        raise TypeError("executors: not an object")
    for name, digests in executors.items():
        if not isinstance(digests, dict) or not all(
                isinstance(d, str) and _HEX64.fullmatch(d) for d in digests.values()):
            raise ValueError(f"executors.{name}: not an object of SHA-256 hex digests")
    return Manifest(created, executors, key, sig)
