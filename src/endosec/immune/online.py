"""Online federated learning: the round a running gateway drives, once per round.

Every gateway of a boundary is a client; the leader is also the server. Keys, under
``/endosec/BOUNDARY/immune/`` (besides `endosec.immune.exchange`'s ``updates/`` and
``aggregates/``):

    keys/GATEWAY   GATEWAY's X25519 public key (32 raw bytes), from `Learner.announce`
    server         the server's (the leader's) public key, written by `Learner.aggregate`

A round: every client `contribute`s an update trained on its own labelled traffic and sealed
for the server; the leader `aggregate`s those of eligible gateways, verified on its own
traffic, and seals the result for each eligible gateway; every gateway `adopt`s it. The
aggregate is sealed per recipient (a fresh content key per round, wrapped for each eligible
gateway's announced key), not under per-level keys: a gateway that falls below the required
level is left out of the very next round, with no level key to revoke.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from endosec.cluster.store import ControlStore
from endosec.core.trust import Level
from endosec.immune.clonal import aggregate as clonal_step
from endosec.immune.clonal import local
from endosec.immune.detector import (
    DEFAULT_DIM,
    Fit,
    Vector,
    design,
    fit,
    from_bytes,
    to_bytes,
    zeros,
)
from endosec.immune.exchange import Exchange, record_round
from endosec.immune.federation import Check, Client, Matrix, Plan, Round, average, digest
from endosec.immune.seal import SealError, open_for, raw_public, seal_for
from endosec.observe.ledger import Ledger

__all__ = ["LearnPolicy", "Learner"]



@dataclass(frozen=True, slots=True)
class LearnPolicy:
    """How a boundary learns online. ``held`` is the share of a client's own traffic kept
    apart to choose among clones (Algorithm 1 only); ``threshold`` is read by the data plane."""

    dim: int = DEFAULT_DIM
    scheme: Literal["clonal", "fedavg"] = "clonal"
    margin: float = 0.05
    min_level: Level = Level.L2
    min_antigens: int = 5
    min_self: int = 50
    threshold: float = 0.9
    fit: Fit = field(default_factory=Fit)
    period: int = 3
    clones: int = 2
    top: int | None = None
    eta: float = 1.0
    held: float = 0.25

    def __post_init__(self) -> None:
        if self.dim < 1 or self.scheme not in ("clonal", "fedavg"):
            raise ValueError("learn policy: need dim >= 1 and scheme clonal or fedavg")
        if self.min_antigens < 1 or self.min_self < 1:
            raise ValueError("learn policy: min_antigens and min_self must be >= 1")
        if not 0 < self.threshold < 1 or not 0 < self.held < 1:
            raise ValueError("learn policy: threshold and held must be in (0, 1)")
        self.plan  # noqa: B018 - Plan checks the rest

    @property
    def plan(self) -> Plan:
        return Plan(rounds=1, fit=self.fit, min_level=self.min_level, margin=self.margin,
                    period=self.period, clones=self.clones, top=self.top, eta=self.eta)


def _labelled(antigens: Sequence[Sequence[int]], selves: Sequence[Sequence[int]],
              dim: int) -> tuple[Matrix, Vector]:
    x = design([*antigens, *selves], dim)
    return x, np.concatenate([np.ones(len(antigens)), np.zeros(len(selves))])


class Learner:
    """One gateway's part in its boundary's federation; the leader's also serves. Not safe
    for concurrent calls: the gateway drives it one step at a time."""

    __slots__ = ("_clock", "_eta", "_model", "_past", "exchange", "gateway", "key", "ledger",
                 "policy", "rng")

    def __init__(self, store: ControlStore, boundary: str,  # noqa: PLR0917 - as gateways call it
                 gateway: str, key: X25519PrivateKey,
                 policy: LearnPolicy, rng: np.random.Generator, ledger: Ledger | None = None,
                 *, clock: Callable[[], float] = time.time) -> None:
        self.exchange = Exchange(store, boundary)
        self.exchange.update_key(gateway, 0)  # checks the name
        self.gateway, self.key, self.policy, self.rng, self.ledger = \
            gateway, key, policy, rng, ledger
        self._clock = clock
        self._model: Vector | None = None
        self._eta = policy.eta
        self._past = deque[Vector](maxlen=policy.period)

    @property
    def model(self) -> Vector | None:
        """The current global model: the last one adopted (or, at the leader, aggregated)."""
        return self._model

    @property
    def eta(self) -> float:
        """The mutation strength of Eq. 1 for the next local round (Algorithm 1)."""
        return self._eta

    def _key_path(self, gateway: str) -> bytes:
        return self.exchange.top + b"keys/" + gateway.encode()

    @property
    def _server_path(self) -> bytes:
        return self.exchange.top + b"server"

    async def _public(self, path: bytes) -> X25519PublicKey | None:
        item = await self.exchange.store.get(path)
        try:
            return None if item is None else X25519PublicKey.from_public_bytes(item.value)
        except ValueError:
            return None

    async def announce(self) -> None:
        """Publish this gateway's public key, which the leader seals aggregates for."""
        mine = raw_public(self.key.public_key())
        await self.exchange.store.put(self._key_path(self.gateway), mine)

    async def contribute(self, number: int, antigens: Sequence[Sequence[int]],
                         selves: Sequence[Sequence[int]]) -> bool:
        """Train on this gateway's traffic from the global model and publish the update,
        sealed for the server, for round ``number``; False with too little data or no server."""
        p = self.policy
        if len(antigens) < p.min_antigens or len(selves) < p.min_self:
            return False
        server = await self._public(self._server_path)
        if server is None:
            return False
        model = self._model if self._model is not None else zeros(p.dim)
        x, y = _labelled(antigens, selves, p.dim)
        if p.scheme == "fedavg":
            update = fit(model, x, y, p.fit)
        else:  # held-out rows drawn from each class alike, so both are in each part
            held = np.zeros(len(y), dtype=bool)
            for rows in (np.flatnonzero(y == 1), np.flatnonzero(y == 0)):
                held[self.rng.permutation(rows)[:max(1, int(len(rows) * p.held))]] = True
            # The level is the leader's to judge; a contributing client assumes it qualifies.
            me = Client(self.gateway, p.min_level, x[~held], y[~held], x[held], y[held])
            update = local(me, model, self._eta, self._past, t=number, plan=p.plan,
                           rng=self.rng)
            self._past.append(update)
        await self.exchange.publish_update(self.gateway, self.key, server, number, update)
        return True

    async def _eligible(self, levels: Mapping[str, Level]) -> dict[str, X25519PublicKey]:
        prefix = self.exchange.top + b"keys/"
        out = {}
        for item in await self.exchange.store.prefix(prefix):
            name = item.key[len(prefix):].decode(errors="replace")
            level = levels.get(name)
            if level is None or level < self.policy.min_level:
                continue
            try:
                out[name] = X25519PublicKey.from_public_bytes(item.value)
            except ValueError:
                continue
        return out

    async def aggregate(self, number: int, levels: Mapping[str, Level],
                        antigens: Sequence[Sequence[int]],
                        selves: Sequence[Sequence[int]]) -> Round | None:
        """At the leader: verify round ``number``'s updates from eligible gateways on this
        gateway's traffic, aggregate, seal for every eligible gateway, publish and record.
        None when nothing was accepted, or with fewer than ``min_self`` self samples to check."""
        p, store, mine = self.policy, self.exchange.store, raw_public(self.key.public_key())
        current = await store.get(self._server_path)
        if current is None or current.value != mine:
            await self.announce()
            await store.put(self._server_path, mine)
        if len(selves) < p.min_self:
            return None
        keys = await self._eligible(levels)
        got = await self.exchange.collect(number, self.key, keys)
        await self.exchange.forget(number)
        models = {n: m for n, m in got.models.items() if len(m) == p.dim + 1}
        refused = {n for n in got.refused if n in keys} | set(got.models) - set(models)
        check = Check(*_labelled(antigens, selves, p.dim))
        model = self._model if self._model is not None else zeros(p.dim)
        baseline = check.accuracy(model)
        step = clonal_step(models, check, baseline, p.plan, self.rng) if p.scheme == "clonal" \
            else average(models, dict.fromkeys(models, 1.0), check, baseline, p.plan)
        if not step.passed:
            return None
        if step.kept:
            model, baseline = step.model, step.score
        eta = step.eta if p.scheme == "clonal" else 0.0
        outcome = Round(number, eta, tuple(sorted(step.passed)),
                        tuple(sorted(set(models) - set(step.passed) | refused)),
                        tuple(sorted(step.top)), baseline, step.kept, digest(model))
        head = {"leader": self.gateway, "round": number, "scheme": p.scheme, "eta": eta}
        await self.exchange.publish_aggregate(number, seal_for(self.key, self.gateway, keys, head,
                                                            to_bytes(model)))
        self._model = model
        if p.scheme == "clonal":
            self._eta = eta
        if self.ledger is not None:
            record_round(self.ledger, p.scheme, outcome, now=self._clock())
        return outcome

    async def adopt(self, number: int, leader: str | None = None) -> Vector | None:
        """Open round ``number``'s aggregate with the announced key of the leader it names
        (which must be ``leader``, when given: the boundary's) and make it the global model;
        None if absent, not sealed for us, from another, altered, or not finite."""
        sealed = await self.exchange.aggregate(number)
        if sealed is None:
            return None
        try:
            data = json.loads(sealed)
            if data["round"] != number or self.gateway not in data["keys"] or (
                    leader is not None and data["leader"] != leader):
                return None
            self.exchange.update_key(str(data["leader"]), number)  # a name, or ValueError
            sealer = await self._public(self._key_path(str(data["leader"])))
            if sealer is None:
                return None
            model = from_bytes(open_for(data, self.key, self.gateway, sealer))
            strength = float(data["eta"])
        except (SealError, ValueError, KeyError, TypeError):
            return None
        if len(model) != self.policy.dim + 1 or not np.isfinite(model).all() \
                or not np.isfinite(strength):
            return None
        self._model = model
        if self.policy.scheme == "clonal":
            self._eta = strength
        return model
