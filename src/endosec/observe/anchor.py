"""Ledger anchors: signed checkpoints of a ledger's head, kept away from the ledger.

A ledger's chain proves that no record was changed, removed or reordered *between* its first
and last records, but a file whose last records were cut off is still a valid chain. An
anchor, ``{seq, head}`` of a record already on disk, signed with the ledger's own key, is put
in the control-state store (`endosec.cluster`); `ledger verify --anchor` then requires the
ledger to reach that record with that hash. Anchors are signed under a domain of their own, so
no anchor can pass for a record or a record for an anchor.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from endosec.observe.ledger_format import canonical, raw_public

__all__ = ["ANCHOR_DOMAIN", "Anchor", "AnchorError", "sign_anchor"]

ANCHOR_DOMAIN: Final = b"endosec-ledger-anchor-v1\n"


class AnchorError(ValueError):
    """An anchor that cannot be read, or whose signature does not hold."""


@dataclass(frozen=True, slots=True)
class Anchor:
    """Record ``seq`` of the ledger signed by ``key`` has hash ``head``, as ``gateway`` wrote
    it at ``ts`` (UNIX seconds)."""

    gateway: str
    seq: int
    head: str
    ts: float
    key: str
    sig: str = ""

    def body(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "sig"}

    def encode(self) -> bytes:
        return canonical(asdict(self))

    @classmethod
    def decode(cls, data: bytes) -> Anchor:
        try:
            obj = json.loads(data)
            anchor = cls(str(obj["gateway"]), int(obj["seq"]), str(obj["head"]),
                         float(obj["ts"]), str(obj["key"]), str(obj["sig"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise AnchorError(f"not an anchor: {exc}") from exc
        if anchor.seq < 0 or len(anchor.head) != 64:
            raise AnchorError("not an anchor: bad seq or head")
        return anchor

    def check(self) -> None:
        """Raise `AnchorError` unless ``sig`` is ``key``'s signature of the rest."""
        try:
            public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(self.key))
            public.verify(bytes.fromhex(self.sig), ANCHOR_DOMAIN + canonical(self.body()))
        except (ValueError, InvalidSignature) as exc:
            raise AnchorError(f"the anchor of #{self.seq} by {self.gateway} is not signed by "
                              "its key") from exc


def sign_anchor(key: Ed25519PrivateKey, *, gateway: str, seq: int, head: str,
                ts: float) -> Anchor:
    unsigned = Anchor(gateway, seq, head, round(ts, 6), raw_public(key.public_key()).hex())
    return replace(unsigned, sig=key.sign(ANCHOR_DOMAIN + canonical(unsigned.body())).hex())
