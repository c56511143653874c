"""Identity keys, the certificates that vouch for them, and whose keys a verifier trusts.

An identity is an ordinary Ed25519 private key in a PEM file (``endosec identity key`` makes
one), optionally with an X.509 certificate for it from an authority the peer trusts. A peer is
trusted when its public key is listed (64 hex digits, or a PEM public key) or when it shows a
certificate for its key from a configured authority. Errors name the setting they are about,
so that callers can prefix the file: ``agent.yaml: identity: cannot read ...``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from nacl.bindings import crypto_core_ed25519_is_valid_point

from endosec.identity.schnorr import public_key

__all__ = ["Identity", "IdentityError", "Trust", "certified_key", "load_identity",
           "load_trust", "new_key", "parse_certificate", "parse_public_key"]


class IdentityError(ValueError):
    """A key or certificate setting that cannot be used; the message starts with the setting."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Who this side is: its private key, and the certificate an authority gave it, if any."""

    key: Ed25519PrivateKey
    certificate: x509.Certificate | None = None

    @property
    def public(self) -> bytes:
        return public_key(self.key)

    def certificate_pem(self) -> str | None:
        if self.certificate is None:
            return None
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()


@dataclass(frozen=True, slots=True)
class Trust:
    """Whose keys are admissible: the listed ones, and those an authority here certified."""

    keys: frozenset[bytes] = frozenset()
    authorities: tuple[x509.Certificate, ...] = ()


def new_key(path: Path) -> Ed25519PrivateKey:
    """A fresh key written to ``path`` (PEM, mode 0600); `FileExistsError` if it is there."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    return key


def _read(path: Path, setting: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise IdentityError(f"{setting}: cannot read {path}: {exc.strerror or exc}") from exc


def load_identity(key: Path, certificate: Path | None) -> Identity:
    """The identity in these files (settings ``identity`` and ``certificate``)."""
    pem = _read(key, "identity")
    try:
        private = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise IdentityError(f"identity: {key} is not an unencrypted PEM private "
                            "key") from exc
    if not isinstance(private, Ed25519PrivateKey):
        raise IdentityError(f"identity: {key} is not an Ed25519 key (make one with "
                            "`endosec identity key`)")
    if certificate is None:
        return Identity(private)
    cert = _certificates(certificate, "certificate")[0]
    if certified_key(cert) != public_key(private):
        raise IdentityError(f"certificate: {certificate} is for another key than identity")
    return Identity(private, cert)


def load_trust(keys: Sequence[str], authority: Path | None) -> Trust:
    """The trust in these settings (``keys`` and ``authority``)."""
    listed = []
    for i, text in enumerate(keys):
        try:
            listed.append(parse_public_key(text))
        except ValueError as exc:
            raise IdentityError(f"keys[{i}]: {exc}") from None
    authorities = () if authority is None else _certificates(authority, "authority")
    return Trust(frozenset(listed), authorities)


def parse_public_key(text: str) -> bytes:
    """An Ed25519 public key given as 64 hex digits or as a PEM public key."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(text.encode())
        except ValueError as exc:
            raise ValueError(f"not a PEM public key: {exc}") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("not an Ed25519 public key")
        return key.public_bytes_raw()
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != 32 or not crypto_core_ed25519_is_valid_point(raw):
        raise ValueError("not an Ed25519 public key (64 hex digits, or a PEM public key)")
    return raw


def parse_certificate(pem: str) -> x509.Certificate:
    """A certificate a peer sent; `ValueError` if it is not one."""
    return x509.load_pem_x509_certificate(pem.encode())


def certified_key(certificate: x509.Certificate) -> bytes | None:
    """The Ed25519 key a certificate is for (None: another kind of key)."""
    key = certificate.public_key()
    return key.public_bytes_raw() if isinstance(key, Ed25519PublicKey) else None


def _certificates(path: Path, setting: str) -> tuple[x509.Certificate, ...]:
    pem = _read(path, setting)
    try:
        return tuple(x509.load_pem_x509_certificates(pem))
    except ValueError as exc:
        raise IdentityError(f"{setting}: {path} holds no PEM certificate") from exc
