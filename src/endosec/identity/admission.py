"""The verifier's side of admission, as plain state: nonces out, proofs in, a whitelist kept.

A `Verifier` hands out nonces (each good for one proof, for ``nonce_ttl`` seconds) and checks
a presented `Proof`: made for this verifier, over one of its live nonces, in the expected
role, not expired, by a key it trusts (listed, or certified by a trusted authority), and
mathematically sound. `Admission` adds the whitelist: an admitted key stays admitted for
``admit_for`` seconds (no longer than its certificate), under a session id; proving again
renews it. Every refusal comes back as a `Refusal` naming why, for the caller to log. Times
are the caller's (float seconds); nothing here reads a clock or does I/O.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from endosec.identity.keys import Trust, certified_key
from endosec.identity.schnorr import Proof, verify

__all__ = ["Admission", "Admitted", "Challenge", "Reason", "Refusal", "Role", "Verified",
           "Verifier", "certificate_problem"]

Role = Literal["agent", "gateway"]
"""Who proves: bound into every proof, so one made in one direction never serves the other."""

Reason = Literal["unknown-key", "bad-certificate", "wrong-verifier", "wrong-role",
                 "unknown-nonce", "replayed-nonce", "expired-proof", "forged-proof",
                 "malformed", "no-session"]
"""Why admission was refused; the last two are the caller's own (a message it could not read,
a call without a live session)."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a proof (or a key, before any proof) was not admitted."""

    reason: Reason
    detail: str
    key: bytes

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


@dataclass(frozen=True, slots=True)
class Challenge:
    """A nonce to prove over, and the expiry (verifier's clock) the proof must carry at most."""

    nonce: bytes
    expiry: float


@dataclass(frozen=True, slots=True)
class Verified:
    """A sound proof by a trusted key; ``until`` is when its trust ends (a certificate's end)."""

    key: bytes
    until: float


@dataclass(frozen=True, slots=True)
class Admitted:
    key: bytes
    session: bytes
    until: float


def certificate_problem(certificate: x509.Certificate, key: bytes,
                        authorities: tuple[x509.Certificate, ...], now: float) -> str | None:
    """Why ``certificate`` does not vouch for ``key`` at ``now`` (None: it does)."""
    if certified_key(certificate) != key:
        return "the certificate is for another key"
    start = certificate.not_valid_before_utc.timestamp()
    end = certificate.not_valid_after_utc.timestamp()
    if not start <= now <= end:
        return f"the certificate is valid from {start:.0f} to {end:.0f}, not at {now:.0f}"
    for authority in authorities:
        try:
            certificate.verify_directly_issued_by(authority)
        except (ValueError, TypeError, InvalidSignature):
            continue
        if authority.not_valid_before_utc.timestamp() <= now \
                <= authority.not_valid_after_utc.timestamp():
            return None
    return "the certificate is not from a trusted authority (or that authority has expired)"


class Verifier:
    """Nonces and proof checks for one verifier key (single-use nonces, bounded in number).

    Nonces are kept in the order they were issued, which is the order they expire in, so
    forgetting the expired ones looks only at the oldest: a check costs the same however many
    identities were admitted before it."""

    __slots__ = ("_issued", "_spent", "key", "nonce_ttl", "outstanding", "role", "trust")

    def __init__(self, key: bytes, trust: Trust, *, role: Role, nonce_ttl: float = 30.0,
                 outstanding: int = 256) -> None:
        self.key = key
        self.trust = trust
        self.role = role
        self.nonce_ttl = nonce_ttl
        self.outstanding = outstanding
        self._issued: dict[bytes, float] = {}  # unused nonce -> expiry, oldest first
        self._spent: dict[bytes, float] = {}  # used nonce -> expiry, kept until it expires

    def challenge(self, now: float, nonce: bytes | None = None) -> Challenge:
        """A fresh nonce; the oldest unused one is forgotten when too many are out."""
        self._prune(now)
        if len(self._issued) >= self.outstanding:
            del self._issued[next(iter(self._issued))]
        issued = Challenge(os.urandom(32) if nonce is None else nonce, now + self.nonce_ttl)
        self._issued[issued.nonce] = issued.expiry
        return issued

    def admissible(self, key: bytes, certificate: x509.Certificate | None,
                   now: float) -> Verified | Refusal:
        """Whether ``key`` is trusted at all (a proof is still needed)."""
        if key in self.trust.keys:
            return Verified(key, math.inf)
        if certificate is None:
            return Refusal("unknown-key", "the key is not listed, and no certificate came "
                           "with it", key)
        problem = certificate_problem(certificate, key, self.trust.authorities, now)
        if problem is not None:
            return Refusal("bad-certificate", problem, key)
        return Verified(key, certificate.not_valid_after_utc.timestamp())

    def check(self, proof: Proof, certificate: x509.Certificate | None,
              now: float) -> Verified | Refusal:
        """Whether ``proof`` admits its key. A proof for this verifier and role spends its
        nonce whatever the answer, so one nonce never gets a second try."""
        if proof.verifier != self.key:
            return Refusal("wrong-verifier", "the proof was made for another verifier",
                           proof.key)
        if proof.role != self.role:
            return Refusal("wrong-role", f"a proof as {proof.role!r}, where {self.role!r} "
                           "proves", proof.key)
        self._prune(now)
        if self._spent.get(proof.nonce, -math.inf) >= now:
            return Refusal("replayed-nonce", "the nonce was used before", proof.key)
        expiry = self._issued.pop(proof.nonce, -math.inf)
        if expiry < now:
            return Refusal("unknown-nonce", "the nonce was not issued here, or expired",
                           proof.key)
        self._spent[proof.nonce] = expiry
        if proof.expiry < now:
            return Refusal("expired-proof", f"valid until {proof.expiry:.3f}, now {now:.3f}",
                           proof.key)
        trusted = self.admissible(proof.key, certificate, now)
        if isinstance(trusted, Refusal):
            return trusted
        if not verify(proof):
            return Refusal("forged-proof", "the proof does not hold for its key", proof.key)
        return trusted

    def _prune(self, now: float) -> None:
        for nonces in (self._issued, self._spent):
            while nonces and next(iter(nonces.values())) < now:
                del nonces[next(iter(nonces))]


class Admission:
    """A verifier with a whitelist: each admitted key under a session id, until an expiry.

    Sessions are indexed by key as well, and expired ones are forgotten oldest first, so
    admitting one more identity or finding a session costs the same with 1 or 5000 admitted."""

    __slots__ = ("_by_key", "_sessions", "admit_for", "sessions_per_key", "verifier")

    def __init__(self, verifier: Verifier, *, admit_for: float,
                 sessions_per_key: int = 8) -> None:
        if not admit_for > 0:
            raise ValueError("admit_for: must be positive")
        self.verifier = verifier
        self.admit_for = admit_for
        self.sessions_per_key = sessions_per_key
        self._sessions: dict[bytes, tuple[bytes, float]] = {}  # session -> (key, until)
        self._by_key: dict[bytes, dict[bytes, float]] = {}  # key -> {session: until}, oldest first

    def admit(self, proof: Proof, certificate: x509.Certificate | None, now: float,
              session: bytes | None = None) -> Admitted | Refusal:
        """Check ``proof``; admitted, its key is whitelisted under a new session (proving
        again renews it; the key's oldest session goes when it holds too many)."""
        verdict = self.verifier.check(proof, certificate, now)
        if isinstance(verdict, Refusal):
            return verdict
        self._prune(now)
        admitted = Admitted(verdict.key, os.urandom(32) if session is None else session,
                            min(now + self.admit_for, verdict.until))
        self._drop(admitted.session)  # a session id given again starts afresh
        held = self._by_key.setdefault(verdict.key, {})
        for gone in [s for s, until in held.items() if until <= now]:
            self._drop(gone)  # expired early (a certificate's end): not counted as held
        for oldest in list(held)[:max(0, len(held) + 1 - self.sessions_per_key)]:
            self._drop(oldest)
        self._sessions[admitted.session] = (admitted.key, admitted.until)
        self._by_key.setdefault(verdict.key, {})[admitted.session] = admitted.until
        return admitted

    def admitted(self, key: bytes, now: float) -> float | None:
        """Until when ``key`` is whitelisted (None: it is not, or no longer)."""
        until = max(self._by_key.get(key, {}).values(), default=0.0)
        return until if now < until else None

    def session(self, session: bytes, now: float) -> bytes | None:
        """The admitted key behind a live session id (None: unknown or expired)."""
        key, until = self._sessions.get(session, (b"", 0.0))
        return key if now < until else None

    def _prune(self, now: float) -> None:
        """Forget expired sessions from the oldest; one cut short by its certificate may
        linger behind a longer one, but `session` and `admitted` check every expiry."""
        while self._sessions:
            oldest, (_, until) = next(iter(self._sessions.items()))
            if now < until:
                return
            self._drop(oldest)

    def _drop(self, session: bytes) -> None:
        """Forget one session, from both indexes."""
        key, _ = self._sessions.pop(session, (b"", 0.0))
        held = self._by_key.get(key)
        if held is not None:
            held.pop(session, None)
            if not held:
                del self._by_key[key]
