"""Online learning in a running gateway: one federated round every ``immune.learn.every``
seconds, with the boundary's other gateways, through the shared cluster store.

Rounds are numbered by wall-clock time (round ``t`` spans ``[t*every, (t+1)*every)``), so the
gateways agree on them without talking. In its first half every gateway trains on its own
labelled traffic (`Immunity.antigens` and `.selves`) and sends its sealed update; at the middle
the leader aggregates what came (`endosec.immune.online.Learner`); at the end every gateway
takes the aggregate and hands it to its data plane as the boundary's detector. A live member
of the boundary is at L2, its leader at L3; a name with a key but no live membership is L0.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from endosec.cluster.member import Member
from endosec.config import LearnConfig
from endosec.core.trust import Level
from endosec.gateway.immunity import Immunity
from endosec.immune.online import Learner, LearnPolicy
from endosec.observe.ledger import Ledger

__all__ = ["OnlineLearning", "load_key"]


def load_key(path: Path) -> X25519PrivateKey:
    """This gateway's X25519 key for sealed models, made on first use (mode 0600)."""
    if path.exists():
        return X25519PrivateKey.from_private_bytes(path.read_bytes())
    key = X25519PrivateKey.generate()
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)  # whole or not at all: a crash leaves no empty key behind
    return key


class OnlineLearning:
    """This gateway's part in its boundary's federated rounds."""

    def __init__(self, config: LearnConfig, member: Member, immunity: Immunity, *,
                 key: X25519PrivateKey, ledger: Ledger) -> None:
        self.config, self.member, self.immunity = config, member, immunity
        policy = LearnPolicy(dim=config.dim, scheme=config.scheme, margin=config.margin,
                             min_level=Level[config.min_level],
                             min_antigens=config.min_antigens, min_self=config.min_self,
                             threshold=config.threshold)
        self.learner = Learner(member.store, member.keys.boundary, member.name, key, policy,
                               np.random.default_rng(), ledger)

    async def run(self) -> None:
        every = self.config.every
        while True:
            number = int(time.time() // every)
            try:
                await self._round(number, every)
            except Exception as exc:  # a round lost is logged; the next one runs
                self.immunity.events.emit("immune-round-failed", round=number,
                                          detail=f"{type(exc).__name__}: {exc}")
            await _until((number + 1) * every + 0.05 * every)

    async def _round(self, number: int, every: float) -> None:
        await self.learner.announce()
        im = self.immunity
        await self.learner.contribute(number, list(im.antigens), list(im.selves))
        await _until(number * every + every / 2)
        if self.member.role == "leader":
            outcome = await self.learner.aggregate(number, await self._levels(),
                                                   list(im.antigens), list(im.selves))
            if outcome is not None:
                im.events.emit("immune-round", round=number, aggregate=outcome.digest,
                               eta=outcome.eta, accepted=list(outcome.accepted),
                               rejected=list(outcome.rejected))
        await _until((number + 1) * every)
        model = await self.learner.adopt(number, self.member.leader)
        if model is not None:
            im.learned({"id": f"detector-{number}", "weights": [float(w) for w in model[:-1]],
                        "bias": float(model[-1]), "threshold": self.config.threshold,
                        "response": self.config.response})

    async def _levels(self) -> dict[str, Level]:
        """Every live member at L2, the leader at L3."""
        top = self.member.keys.members
        names = [item.key[len(top):].decode(errors="replace")
                 for item in await self.member.store.prefix(top)]
        return {n: Level.L3 if n == self.member.leader else Level.L2 for n in names}


async def _until(when: float) -> None:
    await asyncio.sleep(max(0.0, when - time.time()))
