"""A boundary's one chain: the ledgers of all its gateways, in one order.

Each gateway keeps its own ledger (its records, hash-chained and signed with its key). Every
time a gateway anchors its ledger (`endosec.cluster.member`), it also appends a `Link` to the
boundary's chain in the control-state store: "my ledger (``key``) grew to record ``seq``, whose
hash is ``head``", numbered ``n`` and bound to link ``n - 1`` by its hash ``prev``, signed with
the gateway's ledger key under a domain of its own. Link ``n`` is created only if absent (a
transaction in etcd), so all gateways' links take one order and none is overwritten; the
records of all gateways are then in one order too: link by link, and within a link's stretch,
in its ledger's own order. Whoever holds the store cannot reorder, drop or forge a link
without breaking a signature or a ``prev``; a gateway cannot rewrite what it linked without
its ledger failing the link.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from endosec.observe.anchor import Anchor
from endosec.observe.ledger_format import canonical, raw_public

__all__ = ["CHAIN_DOMAIN", "FIRST", "ChainError", "Link", "check_chain", "sign_link"]

CHAIN_DOMAIN: Final = b"endosec-boundary-chain-v1\n"
FIRST: Final = "0" * 64  # the ``prev`` of link 1


class ChainError(ValueError):
    """A link that cannot be read, is not signed by its key, or does not follow its
    predecessor."""


@dataclass(frozen=True, slots=True)
class Link:
    """Link ``n`` of a boundary's chain (``prev``: link ``n - 1``'s digest): the ledger signed
    by ``key`` held record ``seq`` with hash ``head`` when ``gateway`` anchored it at ``ts``
    (``anchor_sig``: that anchor's signature, so the link is also the anchor)."""

    n: int
    prev: str
    gateway: str
    key: str
    seq: int
    head: str
    ts: float
    anchor_sig: str
    sig: str = ""

    def body(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "sig"}

    def encode(self) -> bytes:
        return canonical(asdict(self))

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.encode()).hexdigest()

    def anchor(self) -> Anchor:
        """What the link says of its ledger: the anchor it carries."""
        return Anchor(self.gateway, self.seq, self.head, self.ts, self.key, self.anchor_sig)

    @classmethod
    def decode(cls, data: bytes) -> Link:
        try:
            obj = json.loads(data)
            link = cls(int(obj["n"]), str(obj["prev"]), str(obj["gateway"]), str(obj["key"]),
                       int(obj["seq"]), str(obj["head"]), float(obj["ts"]),
                       str(obj["anchor_sig"]), str(obj["sig"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ChainError(f"not a link: {exc}") from exc
        if link.n < 1 or link.seq < 0 or len(link.head) != 64 or len(link.prev) != 64:
            raise ChainError("not a link: bad number, seq, head or prev")
        return link

    def check(self) -> None:
        """Raise `ChainError` unless ``sig`` is ``key``'s signature of the rest."""
        try:
            public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(self.key))
            public.verify(bytes.fromhex(self.sig), CHAIN_DOMAIN + canonical(self.body()))
        except (ValueError, InvalidSignature) as exc:
            raise ChainError(f"link {self.n} (by {self.gateway}) is not signed by its "
                             "key") from exc


def sign_link(key: Ed25519PrivateKey, *, n: int, prev: str, anchor: Anchor) -> Link:
    """Link ``n``, after ``prev``, of what ``anchor`` (signed by ``key``) says."""
    unsigned = Link(n, prev, anchor.gateway, raw_public(key.public_key()).hex(), anchor.seq,
                    anchor.head, anchor.ts, anchor.sig)
    return replace(unsigned, sig=key.sign(CHAIN_DOMAIN + canonical(unsigned.body())).hex())


def check_chain(links: list[Link]) -> list[str]:
    """What is wrong with consecutive links (the first may follow links no longer kept): a
    gap, a broken ``prev``, a bad signature, or a ledger whose links go backwards."""
    problems: list[str] = []
    reached: dict[str, int] = {}
    for i, link in enumerate(links):
        try:
            link.check()
        except ChainError as exc:
            problems.append(str(exc))
        if i and link.n != links[i - 1].n + 1:
            problems.append(f"links {links[i - 1].n + 1}..{link.n - 1} are missing")
        elif i and link.prev != links[i - 1].digest:
            problems.append(f"link {link.n} does not follow link {links[i - 1].n}")
        elif link.n == 1 and link.prev != FIRST:
            problems.append("link 1 follows nothing, yet names a predecessor")
        if link.seq < reached.get(link.key, 0):
            problems.append(f"link {link.n}: the ledger of {link.gateway} goes back to "
                            f"#{link.seq} from #{reached[link.key]}")
        reached[link.key] = max(reached.get(link.key, 0), link.seq)
    return problems
