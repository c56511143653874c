"""Identities of endosec's hosts and their zero-knowledge admission.

A gateway and the agents that run its executors elsewhere admit each other by proving
possession of their Ed25519 identity keys (`schnorr`: a Schnorr proof of knowledge, bound to
the verifier, a fresh nonce and an expiry), never by a shared secret. `admission` keeps the
verifier's state (nonces, whitelist, sessions), `handshake` the messages of the mutual flow,
`keys` the files and trust settings; ``endosec identity key`` makes a key. See
docs/identity.md.
"""

from endosec.identity.admission import (
    Admission,
    Admitted,
    Challenge,
    Reason,
    Refusal,
    Role,
    Verified,
    Verifier,
)
from endosec.identity.handshake import Initiator, Responder
from endosec.identity.keys import (
    Identity,
    IdentityError,
    Trust,
    load_identity,
    load_trust,
    new_key,
    parse_public_key,
)
from endosec.identity.schnorr import Proof, prove, public_key, secret_scalar, verify

__all__ = [
    "Admission",
    "Admitted",
    "Challenge",
    "Identity",
    "IdentityError",
    "Initiator",
    "Proof",
    "Reason",
    "Refusal",
    "Responder",
    "Role",
    "Trust",
    "Verified",
    "Verifier",
    "load_identity",
    "load_trust",
    "new_key",
    "parse_public_key",
    "prove",
    "public_key",
    "secret_scalar",
    "verify",
]
