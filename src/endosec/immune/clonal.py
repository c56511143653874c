"""Algorithm 1 of the industrial-Internet paper (seeds/002): clone selection with federated
learning, where detectors are antibodies and their accuracy is their affinity.

Each round the selected clients train the global model; at observation points (every
``period`` rounds) they first clone it ``clones`` times, mutate every clone by Eq. 1, and keep
the fittest on their own held-out data of the clones, the global model and their last
``period`` local models. The server verifies each update on its
check set, sets the next mutation strength by Eq. 2 over the verified updates, ranks them by
affinity and diversity, averages the ``top`` ones, verifies the aggregate, and scores each
client for the next selection. docs/immune.md lists where the paper is ambiguous and what
this module chose.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence

import numpy as np

from endosec.immune.detector import Vector, accuracy, fit, zeros
from endosec.immune.federation import (
    Check,
    Client,
    Plan,
    Round,
    Run,
    Step,
    digest,
    eligible,
    verify,
)

__all__ = ["Step", "aggregate", "eta", "local", "mutate", "rank", "run_clonal", "select",
           "spread"]


def mutate(params: Vector, strength: float, rng: np.random.Generator) -> Vector:
    """Eq. 1: P^IV = P^t + eta * Cauchy(0, 1), one draw per parameter."""
    return params + strength * rng.standard_cauchy(params.shape)


def _distances(models: Sequence[Vector]) -> Vector:
    """The N x N Euclidean distances, one row at a time (models may be megabytes each)."""
    stack = np.stack(models)
    return np.array([np.linalg.norm(stack - row, axis=1) for row in stack])


def eta(models: Sequence[Vector], rng: np.random.Generator) -> float:
    """Eq. 2: (1/N) * sum over ordered pairs (i, j) of ||P_i - P_j|| * (2 Rand(0,1) - 1), with
    one Rand per evaluation (drawn even when N < 2, so the stream does not depend on N)."""
    sign = 2.0 * rng.random() - 1.0
    if not models:
        return 0.0
    return float(_distances(models).sum()) / len(models) * sign


def spread(models: Sequence[Vector]) -> list[float]:
    """Each model's diversity: its mean distance to the others (0 when alone)."""
    if len(models) < 2:
        return [0.0] * len(models)
    return [float(d) for d in _distances(models).sum(axis=1) / (len(models) - 1)]


def rank(affinity: Sequence[float], diversity: Sequence[float], weight: float) -> list[int]:
    """Indices best first, by affinity plus ``weight`` times diversity scaled to [0, 1];
    ties keep the given order."""
    top = max(diversity, default=0.0)
    scores = [a + weight * (d / top if top > 0 else 0.0)
              for a, d in zip(affinity, diversity, strict=True)]
    return sorted(range(len(scores)), key=lambda i: -scores[i])


def select(scores: dict[str, float], names: Sequence[str], k: int | None) -> list[str]:
    """The ``k`` names with the highest combined score G (all when k is None), in the
    given order among equals."""
    if k is None or k >= len(names):
        return list(names)
    return sorted(sorted(names, key=lambda n: -scores[n])[:k], key=names.index)


def aggregate(updates: Mapping[str, Vector], check: Check, baseline: float, plan: Plan,
              rng: np.random.Generator) -> Step:
    """Verify, rank and average one round's updates against the global model's ``baseline``
    accuracy; with none passing, the step keeps nothing (``kept`` False, ``eta`` NaN)."""
    affinity = {n: check.accuracy(u) for n, u in updates.items()}
    passed = tuple(n for n in updates
                   if not plan.verify or verify(affinity[n], baseline, plan.margin))
    if not passed:
        return Step(affinity, (), float("nan"), (), np.zeros(0), 0.0, False)
    models = [updates[n] for n in passed]
    strength = eta(models, rng)
    order = rank([affinity[n] for n in passed], spread(models), plan.diversity_weight)
    top = tuple(passed[i] for i in order[:plan.top])
    model = np.mean([updates[n] for n in top], axis=0)
    score = check.accuracy(model)
    return Step(affinity, passed, strength, top, model, score,
                not plan.verify or verify(score, baseline, plan.margin))


def _start(client: Client, incumbents: Sequence[Vector], clones: Sequence[Vector]) -> Vector:
    """The candidate with the best affinity on the client's own held-out data; on a tie the
    earliest wins, so a clone must do strictly better than the models it would replace."""
    candidates = [*incumbents, *clones]
    scores = [accuracy(c, client.x_held, client.y_held) for c in candidates]
    return candidates[int(np.argmax(scores))]


def local(client: Client, model: Vector, strength: float, past: Sequence[Vector], *, t: int,
          plan: Plan, rng: np.random.Generator) -> Vector:
    """Steps 5 to 7 at one client in round ``t``: clone and mutate, select, train. ``past``
    holds the client's last local models (at most ``plan.period``); the caller appends."""
    observe = t % plan.period == 0
    if not (observe or plan.literal):
        return fit(model, client.x, client.y, plan.fit)
    clones = [mutate(model, strength, rng) for _ in range(plan.clones)]
    incumbents = list(past) if observe else []
    if not plan.literal:
        incumbents.insert(0, model)
    return fit(_start(client, incumbents, clones), client.x, client.y, plan.fit)


def run_clonal(clients: Sequence[Client], check: Check, plan: Plan,
               rng: np.random.Generator) -> Run:
    """Algorithm 1 for ``plan.rounds`` rounds (its termination condition)."""
    members = eligible(clients, plan.min_level)
    if not members:
        raise ValueError(f"no client at or above {plan.min_level.name}")
    model = zeros(members[0].dim)
    baseline, strength = check.accuracy(model), plan.eta
    scores = {c.name: 0.0 for c in members}
    history = {c.name: deque[Vector](maxlen=plan.period) for c in members}
    chosen = [c.name for c in members]
    rounds = []
    for t in range(1, plan.rounds + 1):
        updates = {}
        for client in (c for c in members if c.name in chosen):
            past = history[client.name]
            updates[client.name] = local(client, model, strength, past, t=t, plan=plan, rng=rng)
            past.append(updates[client.name])
        step = aggregate(updates, check, baseline, plan, rng)
        for name in updates:
            scores[name] += step.affinity[name] if name in step.passed else -plan.penalty
        if step.passed:
            strength = step.eta
        if step.kept:
            model, baseline = step.model, step.score
        rounds.append(Round(t, strength, tuple(sorted(step.passed)),
                            tuple(sorted(set(updates) - set(step.passed))),
                            tuple(sorted(step.top)), baseline, step.kept, digest(model)))
        chosen = select(scores, [c.name for c in members], plan.select)
    return Run("clonal", {c.name: model for c in members}, tuple(rounds))
