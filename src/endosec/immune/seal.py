"""Sealed model exchange, with standard primitives in place of the paper's SM9 and ABE.

* **Uploads** (client to server): each client and the server hold X25519 keys; the shared
  secret of the pair, through HKDF-SHA256 with a fresh random salt, keys AES-256-GCM for one
  message. Only that client and the server can make or open it, so a sealed update also says
  who sent it; the associated data binds it to its sender's name and round, so it cannot be
  replayed under another name or in another round.
* **Downloads** (server to clients): one random AES-256 key per trust level. The aggregate is
  sealed under the key of the federation's required level, and a client at level L holds the
  keys of every level up to L (`LevelKeys.granted`): whoever is trusted enough can open it, as
  the paper's attribute "trust level >= required" would allow.

Wire format: ``salt (16) | nonce (12) | ciphertext and tag`` for uploads, ``level (1) | nonce
(12) | ciphertext and tag`` for downloads. Any change to a byte fails with `SealError`.
* **Online downloads** (`seal_for`, `endosec.immune.online`): a fresh AES-256 key per round,
  wrapped for each eligible gateway's X25519 key; a gateway that falls below the required
  level is left out of the next round, and there is no level key to revoke. The per-level
  keys above remain what `endosec immune train` and the benchmark measure, the paper's
  attribute-based download.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from endosec.core.trust import Level

__all__ = ["LevelKeys", "SealError", "open_aggregate", "open_for", "open_update",
           "raw_public", "seal_aggregate", "seal_for", "seal_update"]

_SALT, _NONCE = 16, 12
_UPLOAD = b"endosec immune update v1"
_DOWNLOAD = b"endosec immune aggregate v1"


class SealError(Exception):
    """A sealed model could not be opened: wrong key, wrong context or changed bytes."""


def _upload_key(mine: X25519PrivateKey, theirs: X25519PublicKey, salt: bytes) -> AESGCM:
    shared = mine.exchange(theirs)
    return AESGCM(HKDF(hashes.SHA256(), 32, salt, _UPLOAD).derive(shared))


def _context(kind: bytes, name: str, number: int) -> bytes:
    return b"%s\0%s\0%d" % (kind, name.encode(), number)


def seal_update(client: X25519PrivateKey, server: X25519PublicKey, name: str, number: int,
                model: bytes) -> bytes:
    """Client ``name``'s model for round ``number``, for the server's eyes only."""
    salt, nonce = os.urandom(_SALT), os.urandom(_NONCE)
    sealed = _upload_key(client, server, salt).encrypt(nonce, model,
                                                       _context(_UPLOAD, name, number))
    return salt + nonce + sealed


def open_update(server: X25519PrivateKey, client: X25519PublicKey, name: str, number: int,
                data: bytes) -> bytes:
    """The model client ``name`` sealed for round ``number``; `SealError` otherwise."""
    salt, nonce, sealed = data[:_SALT], data[_SALT:_SALT + _NONCE], data[_SALT + _NONCE:]
    try:
        return _upload_key(server, client, salt).decrypt(nonce, sealed,
                                                         _context(_UPLOAD, name, number))
    except (InvalidTag, ValueError) as exc:
        raise SealError(f"the update of {name!r} for round {number} does not open") from exc


@dataclass(frozen=True, slots=True)
class LevelKeys:
    """One AES-256 key per trust level (the server's set, or a client's granted share)."""

    keys: Mapping[Level, bytes]

    @classmethod
    def generate(cls) -> LevelKeys:
        return cls({level: AESGCM.generate_key(bit_length=256) for level in Level})

    def granted(self, level: Level) -> LevelKeys:
        """The keys a client at ``level`` receives: its own level's and every lower one's."""
        return LevelKeys({lv: k for lv, k in self.keys.items() if lv <= level})


def seal_aggregate(keys: LevelKeys, level: Level, number: int, model: bytes) -> bytes:
    """The aggregate of round ``number``, openable by clients at ``level`` or above."""
    nonce = os.urandom(_NONCE)
    sealed = AESGCM(keys.keys[level]).encrypt(nonce, model,
                                              _context(_DOWNLOAD, level.name, number))
    return bytes([level]) + nonce + sealed


def open_aggregate(keys: LevelKeys, number: int, data: bytes) -> bytes:
    """The aggregate of round ``number``, if ``keys`` include the level it was sealed for."""
    try:
        level = Level(data[0])
    except (IndexError, ValueError) as exc:
        raise SealError("not a sealed aggregate") from exc
    if level not in keys.keys:
        raise SealError(f"the aggregate needs trust level {level.name}")
    try:
        return AESGCM(keys.keys[level]).decrypt(data[1:1 + _NONCE], data[1 + _NONCE:],
                                                _context(_DOWNLOAD, level.name, number))
    except (InvalidTag, ValueError) as exc:
        raise SealError(f"the aggregate of round {number} does not open") from exc


# -- online: the aggregate sealed for each recipient ------------------------------------------

_WRAP = b"endosec immune online key v1"
_BODY = b"endosec immune online aggregate v1"


def raw_public(key: X25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _wrap_key(mine: X25519PrivateKey, theirs: X25519PublicKey, salt: bytes) -> AESGCM:
    return AESGCM(HKDF(hashes.SHA256(), 32, salt, _WRAP).derive(mine.exchange(theirs)))


def _wrap_context(leader: str, gateway: str, number: int, body: bytes) -> bytes:
    """What a wrapped key is bound to: who sealed it for whom, the round, and the body's
    SHA-256 (a recipient, who knows the content key, cannot put another body under it)."""
    digest = hashlib.sha256(body).digest()
    return b"%s\0%s\0%s\0%d\0%s" % (_WRAP, leader.encode(), gateway.encode(), number, digest)


def _header(head: Mapping[str, Any]) -> bytes:
    return _BODY + b"\0" + json.dumps(head, sort_keys=True).encode()


def seal_for(leader_key: X25519PrivateKey, leader: str,
             recipients: Mapping[str, X25519PublicKey], head: Mapping[str, Any],
             model: bytes) -> bytes:
    """The aggregate under a fresh content key, that key wrapped for each recipient; ``head``
    (leader, round, scheme, eta) travels in clear, bound to the body as associated data."""
    content, nonce = AESGCM.generate_key(bit_length=256), os.urandom(_NONCE)
    body = AESGCM(content).encrypt(nonce, model, _header(head))
    wrapped = {}
    for name, public in recipients.items():
        salt, wn = os.urandom(_SALT), os.urandom(_NONCE)
        sealed = _wrap_key(leader_key, public, salt).encrypt(
            wn, content, _wrap_context(leader, name, head["round"], nonce + body))
        wrapped[name] = _b64(salt + wn + sealed)
    return json.dumps({**head, "nonce": _b64(nonce), "body": _b64(body),
                       "keys": wrapped}).encode()


def open_for(data: Mapping[str, Any], key: X25519PrivateKey, gateway: str,
             leader: X25519PublicKey) -> bytes:
    """The model in an aggregate sealed for ``gateway`` by ``leader``; `SealError` if any
    byte of it was changed."""
    head = {k: data[k] for k in ("leader", "round", "scheme", "eta")}
    wrapped = base64.b64decode(data["keys"][gateway], validate=True)
    salt, wn, sealed = wrapped[:_SALT], wrapped[_SALT:_SALT + _NONCE], wrapped[_SALT + _NONCE:]
    try:
        nonce = base64.b64decode(data["nonce"], validate=True)
        body = base64.b64decode(data["body"], validate=True)
        content = _wrap_key(key, leader, salt).decrypt(
            wn, sealed, _wrap_context(head["leader"], gateway, head["round"], nonce + body))
        return AESGCM(content).decrypt(nonce, body, _header(head))
    except (InvalidTag, ValueError) as exc:
        raise SealError(f"the aggregate of round {head['round']} does not open") from exc
