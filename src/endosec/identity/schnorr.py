"""A non-interactive Schnorr proof of knowledge of an Ed25519 private key.

The prover shows it knows the scalar ``a`` behind its public key ``A = a·B`` without revealing
anything about ``a``: it commits to ``R = r·B`` for a random ``r``, derives the challenge ``c``
from a hash of everything the proof is bound to (Fiat-Shamir), and answers ``s = r + c·a``
(mod L). Anyone holding the proof checks ``s·B == R + c·A``. The key is an ordinary Ed25519 key
and ``a`` is its secret scalar as RFC 8032 derives it, so the proof is about the very public key
Ed25519 signatures verify with.

A proof is bound to the verifier's public key, a nonce the verifier chose, the role the prover
claims and an expiry: it convinces that verifier, once, for that purpose, until then. Point and
scalar arithmetic is libsodium's (through PyNaCl). Pure functions: no clock, and randomness
only for the commitment.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nacl.bindings import (
    crypto_core_ed25519_add,
    crypto_core_ed25519_is_valid_point,
    crypto_core_ed25519_scalar_add,
    crypto_core_ed25519_scalar_mul,
    crypto_core_ed25519_scalar_reduce,
    crypto_scalarmult_ed25519_base_noclamp,
    crypto_scalarmult_ed25519_noclamp,
)
from nacl.exceptions import CryptoError

__all__ = ["DOMAIN", "ORDER", "Proof", "prove", "public_key", "secret_scalar", "verify"]

DOMAIN = b"endosec admission proof v1"
"""Separates these challenges from any other hash over the same values."""

ORDER = 2**252 + 27742317777372353535851937790883648493
"""L, the order of the base point's group."""

_NONCE_BYTES = (16, 64)  # shortest and longest nonce accepted


@dataclass(frozen=True, slots=True)
class Proof:
    """``key`` proves it knows its private key to ``verifier``, over ``nonce``, as ``role``,
    until ``expiry`` (the verifier's clock, UNIX seconds): the claims, then ``R`` and ``s``."""

    key: bytes
    verifier: bytes
    nonce: bytes
    role: str
    expiry: float
    commitment: bytes
    response: bytes

    def __post_init__(self) -> None:
        for name in ("key", "verifier", "commitment", "response"):
            if len(getattr(self, name)) != 32:
                raise ValueError(f"{name}: must be 32 bytes")
        if not _NONCE_BYTES[0] <= len(self.nonce) <= _NONCE_BYTES[1]:
            raise ValueError(f"nonce: must be {_NONCE_BYTES[0]} to {_NONCE_BYTES[1]} bytes")
        if not self.role or len(self.role) > 64:
            raise ValueError("role: must be 1 to 64 characters")
        if not math.isfinite(self.expiry):
            raise ValueError("expiry: must be a finite time")

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key.hex(), "verifier": self.verifier.hex(),
                "nonce": self.nonce.hex(), "role": self.role, "expiry": self.expiry,
                "commitment": self.commitment.hex(), "response": self.response.hex()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Proof:
        """The proof a peer sent; `ValueError` for anything malformed."""
        try:
            expiry = data["expiry"]
            if isinstance(expiry, bool) or not isinstance(expiry, int | float):
                raise ValueError("expiry: must be a number")
            role = data["role"]
            if not isinstance(role, str):
                raise ValueError("role: must be a string")
            return cls(key=_hex(data, "key"), verifier=_hex(data, "verifier"),
                       nonce=_hex(data, "nonce"), role=role, expiry=float(expiry),
                       commitment=_hex(data, "commitment"), response=_hex(data, "response"))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a proof: {exc!r}") from exc


def _hex(data: Mapping[str, Any], name: str) -> bytes:
    value = data[name]
    if not isinstance(value, str):
        raise ValueError(f"{name}: must be a hex string")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise ValueError(f"{name}: must be a hex string") from None


def secret_scalar(key: Ed25519PrivateKey) -> bytes:
    """RFC 8032's secret scalar of ``key``: the first half of SHA-512(seed), clamped; reduced
    mod L, which leaves ``a·B`` unchanged since B has order L."""
    clamped = bytearray(hashlib.sha512(key.private_bytes_raw()).digest()[:32])
    clamped[0] &= 248
    clamped[31] &= 127
    clamped[31] |= 64
    return crypto_core_ed25519_scalar_reduce(bytes(clamped) + bytes(32))


def public_key(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


def _challenge(proof: Proof) -> bytes:
    """c = H(domain ‖ A ‖ R ‖ nonce ‖ verifier ‖ role ‖ expiry) mod L, each part length-prefixed
    so that no two different claims hash the same input."""
    digest = hashlib.sha512()
    for part in (DOMAIN, proof.key, proof.commitment, proof.nonce, proof.verifier,
                 proof.role.encode(), struct.pack(">d", proof.expiry)):
        digest.update(len(part).to_bytes(2, "big") + part)
    return crypto_core_ed25519_scalar_reduce(digest.digest())


def prove(key: Ed25519PrivateKey, *, verifier: bytes, nonce: bytes, role: str,
          expiry: float) -> Proof:
    """A proof that whoever holds ``key`` made it, for ``verifier``'s ``nonce``."""
    r = crypto_core_ed25519_scalar_reduce(os.urandom(64))
    unsigned = Proof(public_key(key), verifier, nonce, role, expiry,
                     crypto_scalarmult_ed25519_base_noclamp(r), bytes(32))
    c = _challenge(unsigned)
    s = crypto_core_ed25519_scalar_add(r, crypto_core_ed25519_scalar_mul(c, secret_scalar(key)))
    return Proof(unsigned.key, verifier, nonce, role, expiry, unsigned.commitment, s)


def verify(proof: Proof) -> bool:
    """Whether the proof holds for the claims it carries (the caller checks they are the ones
    it expects): A and R valid points of the prime-order group, s canonical, s·B == R + c·A."""
    if int.from_bytes(proof.response, "little") >= ORDER:
        return False
    if not (crypto_core_ed25519_is_valid_point(proof.key)
            and crypto_core_ed25519_is_valid_point(proof.commitment)):
        return False
    try:
        left = crypto_scalarmult_ed25519_base_noclamp(proof.response)
        right = crypto_core_ed25519_add(
            proof.commitment, crypto_scalarmult_ed25519_noclamp(_challenge(proof), proof.key))
    except CryptoError:  # s or c is zero: the identity, which libsodium refuses to return
        return False
    return hmac.compare_digest(left, right)
