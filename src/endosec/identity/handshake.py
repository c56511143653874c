"""Mutual admission of a gateway and an agent, as the JSON messages they exchange.

Two round trips, the gateway (`Initiator`) first, the agent (`Responder`) answering:

1. ``hello``: the gateway's key (and certificate), and a nonce and expiry of its own for the
   agent to prove over. The agent refuses a key it does not trust; otherwise it answers with
   its proof over the gateway's nonce, its certificate, and a nonce and expiry for the gateway.
2. ``proof``: once the agent's proof holds for the agent's expected key, the gateway sends its
   own proof over the agent's nonce. Admitted, it gets a session id and how many seconds the
   admission lasts.

Each side checks expiries on its own clock only (it chose them), so the hosts' clocks need not
agree. Malformed messages raise `ValueError`; refusals come back as `Refusal`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from cryptography import x509

from endosec.identity.admission import Admission, Admitted, Refusal, Verifier
from endosec.identity.keys import Identity, parse_certificate
from endosec.identity.schnorr import Proof, prove

__all__ = ["Initiator", "Responder"]


def _field(message: Mapping[str, Any], name: str, kind: type[Any]) -> Any:
    value = message.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"{name}: missing or not a {kind.__name__}")
    return value


def _bytes(message: Mapping[str, Any], name: str) -> bytes:
    try:
        return bytes.fromhex(_field(message, name, str))
    except ValueError:
        raise ValueError(f"{name}: not hex") from None


def _time(message: Mapping[str, Any], name: str) -> float:
    value = message.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value):
        raise ValueError(f"{name}: missing or not a finite time")
    return float(value)


def _certificate(message: Mapping[str, Any]) -> x509.Certificate | None:
    pem = message.get("certificate")
    if pem is None:
        return None
    return parse_certificate(_field(message, "certificate", str))


class Initiator:
    """The gateway's side: asks, checks the agent's proof, then proves itself."""

    __slots__ = ("identity", "verifier")

    def __init__(self, identity: Identity, verifier: Verifier) -> None:
        self.identity = identity
        self.verifier = verifier

    def hello(self, now: float) -> dict[str, Any]:
        challenge = self.verifier.challenge(now)
        return {"key": self.identity.public.hex(), "nonce": challenge.nonce.hex(),
                "expiry": challenge.expiry, "certificate": self.identity.certificate_pem()}

    def proof(self, answer: Mapping[str, Any], now: float) -> dict[str, Any] | Refusal:
        """The proof message for the agent's ``answer`` to `hello`, once the agent's own proof
        in it holds (else why it does not)."""
        theirs = Proof.from_dict(_field(answer, "proof", Mapping))
        verdict = self.verifier.check(theirs, _certificate(answer), now)
        if isinstance(verdict, Refusal):
            return verdict
        mine = prove(self.identity.key, verifier=theirs.key, nonce=_bytes(answer, "nonce"),
                     role="gateway", expiry=_time(answer, "expiry"))
        return {"proof": mine.to_dict(), "certificate": self.identity.certificate_pem()}


class Responder:
    """The agent's side: answers a trusted gateway's hello, admits its proof."""

    __slots__ = ("admission", "identity")

    def __init__(self, identity: Identity, admission: Admission) -> None:
        self.identity = identity
        self.admission = admission

    def hello(self, message: Mapping[str, Any], now: float) -> dict[str, Any] | Refusal:
        key = _bytes(message, "key")
        known = self.admission.verifier.admissible(key, _certificate(message), now)
        if isinstance(known, Refusal):
            return known
        mine = prove(self.identity.key, verifier=key, nonce=_bytes(message, "nonce"),
                     role="agent", expiry=_time(message, "expiry"))
        challenge = self.admission.verifier.challenge(now)
        return {"proof": mine.to_dict(), "certificate": self.identity.certificate_pem(),
                "nonce": challenge.nonce.hex(), "expiry": challenge.expiry}

    def admit(self, message: Mapping[str, Any], now: float) -> Admitted | Refusal:
        proof = Proof.from_dict(_field(message, "proof", Mapping))
        return self.admission.admit(proof, _certificate(message), now)

    @staticmethod
    def welcome(admitted: Admitted, now: float) -> dict[str, Any]:
        """The answer to an admitted proof: the session, and seconds until it must prove
        again (a duration, since the two clocks may differ)."""
        return {"session": admitted.session.hex(), "for": admitted.until - now}
