"""Clients, plans and the two baseline schemes: local-only training and federated averaging.

A client is a gateway (or a boundary at another site) with labelled traffic of its own and a
Proof-of-Trust level (`endosec.core.trust.Level`); only clients at or above the plan's
``min_level`` take part. The server holds a labelled *check set* (the paper's test data for the
smart contract's verification): it measures every update before it is aggregated and every
aggregate before it replaces the global model. Everything here is pure: randomness comes in
as a ``numpy.random.Generator``, and nothing reads a clock or touches a file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from endosec.core.trust import Level
from endosec.immune.detector import Fit, Vector, accuracy, fit, to_bytes, zeros

__all__ = ["Check", "Client", "Plan", "Round", "Run", "Step", "average", "digest", "eligible",
           "run_fedavg", "run_local", "verify"]

Matrix = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True, eq=False)
class Client:
    """One participant: its training data and a held-out share it measures candidates on."""

    name: str
    level: Level
    x: Matrix
    y: Vector
    x_held: Matrix
    y_held: Vector

    @property
    def dim(self) -> int:
        return int(self.x.shape[1])


@dataclass(frozen=True, slots=True, eq=False)
class Check:
    """The server's labelled check set."""

    x: Matrix
    y: Vector

    def accuracy(self, params: Vector) -> float:
        return accuracy(params, self.x, self.y)


@dataclass(frozen=True, slots=True)
class Plan:
    """How a federation trains. ``period`` is T, ``clones`` the paper's d (mutants per client
    per round), ``top`` its n (updates aggregated; None: all that pass verification),
    ``select`` its k (clients sent the next model; None: every eligible one). ``literal``
    trains the mutant every round (step 5 read alone); otherwise clones compete only at
    observation points, with the global model and the last ``period`` local models."""

    rounds: int = 20
    fit: Fit = field(default_factory=Fit)
    min_level: Level = Level.L2
    margin: float = 0.05
    verify: bool = True
    period: int = 3
    clones: int = 2
    top: int | None = None
    select: int | None = None
    eta: float = 1.0
    literal: bool = False
    diversity_weight: float = 0.05
    penalty: float = 1.0

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.period < 1 or self.clones < 1:
            raise ValueError("plan: rounds, period and clones must be >= 1")
        if not 0 <= self.margin <= 1:
            raise ValueError(f"plan: margin must be in [0, 1], got {self.margin!r}")
        for name in ("top", "select"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"plan: {name} must be >= 1 or None")


@dataclass(frozen=True, slots=True)
class Round:
    """What one round decided; ``digest`` and ``eta`` are what the ledger records."""

    number: int
    eta: float
    accepted: tuple[str, ...]
    rejected: tuple[str, ...]
    aggregated: tuple[str, ...]
    accuracy: float
    kept: bool
    digest: str


@dataclass(frozen=True, slots=True, eq=False)
class Run:
    """A finished training: each client's detector (the global one for federated schemes)."""

    scheme: str
    models: Mapping[str, Vector]
    rounds: tuple[Round, ...] = ()

    @property
    def excluded(self) -> frozenset[str]:
        """Clients whose update was rejected in every round they took part in."""
        rejected = {n for r in self.rounds for n in r.rejected}
        return frozenset(rejected - {n for r in self.rounds for n in r.accepted})


@dataclass(frozen=True, slots=True, eq=False)
class Step:
    """The server's decisions on one round's updates: the affinity of each update, those that
    passed verification, the next eta (Eq. 2 for Algorithm 1; 0 for FedAvg, NaN with none
    passing), those aggregated, their aggregate and its affinity, and whether it was kept."""

    affinity: Mapping[str, float]
    passed: tuple[str, ...]
    eta: float
    top: tuple[str, ...]
    model: Vector
    score: float
    kept: bool


def digest(params: Vector) -> str:
    """SHA-256 of the model's exchanged bytes."""
    return hashlib.sha256(to_bytes(params)).hexdigest()


def eligible(clients: Sequence[Client], min_level: Level) -> list[Client]:
    """The clients trusted enough to take part, in the order given."""
    return [c for c in clients if c.level >= min_level]


def verify(score: float, baseline: float, margin: float) -> bool:
    """An update or aggregate passes unless it loses more than ``margin`` of accuracy."""
    return score >= baseline - margin


def run_local(clients: Sequence[Client], plan: Plan) -> Run:
    """Every eligible client alone, for as many epochs as a federation's rounds give it."""
    total = Fit(plan.fit.epochs * plan.rounds, plan.fit.rate, plan.fit.l2)
    return Run("local", {c.name: fit(zeros(c.dim), c.x, c.y, total)
                         for c in eligible(clients, plan.min_level)})


def average(updates: Mapping[str, Vector], weights: Mapping[str, float], check: Check,
            baseline: float, plan: Plan) -> Step:
    """One FedAvg round at the server: verify each update against the global model's
    ``baseline`` accuracy (with ``plan.verify``), average those that pass weighted by
    ``weights``, and verify the average; with none passing nothing is kept."""
    affinity = {n: check.accuracy(u) for n, u in updates.items()}
    passed = tuple(n for n in updates
                   if not plan.verify or verify(affinity[n], baseline, plan.margin))
    if not passed:
        return Step(affinity, (), float("nan"), (), np.zeros(0), 0.0, False)
    total = sum(weights[n] for n in passed)
    model = sum((updates[n] * (weights[n] / total) for n in passed),
                np.zeros_like(updates[passed[0]]))
    score = check.accuracy(model)
    return Step(affinity, passed, 0.0, passed, model, score,
                not plan.verify or verify(score, baseline, plan.margin))


def run_fedavg(clients: Sequence[Client], check: Check, plan: Plan) -> Run:
    """Federated averaging weighted by sample counts; with ``plan.verify`` each update and
    each aggregate must pass `verify` against the current global model's accuracy."""
    members = eligible(clients, plan.min_level)
    if not members:
        raise ValueError(f"no client at or above {plan.min_level.name}")
    model = zeros(members[0].dim)
    baseline = check.accuracy(model)
    weights = {c.name: float(len(c.y)) for c in members}
    rounds = []
    for number in range(1, plan.rounds + 1):
        updates = {c.name: fit(model, c.x, c.y, plan.fit) for c in members}
        step = average(updates, weights, check, baseline, plan)
        if step.kept:
            model, baseline = step.model, step.score
        rounds.append(Round(number, 0.0, tuple(sorted(step.passed)),
                            tuple(sorted(set(updates) - set(step.passed))),
                            tuple(sorted(step.passed)), baseline, step.kept, digest(model)))
    return Run("fedavg", {c.name: model for c in members}, tuple(rounds))
