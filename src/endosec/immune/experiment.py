"""A federation built from labelled traffic, and how well its detectors do.

The split is non-IID, as sites see different attacks: a share of the traffic is kept apart as
the test set, another as the server's check set, and the rest goes to one client per antigen
family (``gw-FAMILY``: that family's antigens and an equal share of self traffic). A
*poisoned* client may be added, holding a share like the others with every label flipped.
Scores are measured on the test set only: detection of the family a client saw, of the families
it never saw locally (herd immunity), and false positives on self traffic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from endosec.core.trust import Level
from endosec.immune.detector import design, flagged
from endosec.immune.federation import Check, Client, Matrix, Run
from endosec.immune.traffic import SELF, Labelled

__all__ = ["POISONED", "Score", "Split", "score", "split"]

POISONED = "gw-poisoned"


@dataclass(frozen=True, slots=True, eq=False)
class Split:
    """The clients, the family each honest client saw, the check set and the test set."""

    clients: tuple[Client, ...]
    families: Mapping[str, str]
    check: Check
    x_test: Matrix
    test_families: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Score:
    """A scheme's detectors on the test set, averaged over the honest clients."""

    scheme: str
    seen: float
    unseen: float
    false_positive: float
    excluded: tuple[str, ...]


def _client(name: str, rows: Sequence[Labelled], level: Level, dim: int, *, held: float,
            flip: bool) -> Client:
    x = design((r.features() for r in rows), dim)
    y = np.array([1 - r.label if flip else r.label for r in rows], dtype=np.float64)
    cut = len(rows) - max(1, int(len(rows) * held))
    return Client(name, level, x[:cut], y[:cut], x[cut:], y[cut:])


def split(traffic: Sequence[Labelled], rng: np.random.Generator, *, dim: int,
          poisoned: bool = False, test: float = 0.3, check: float = 0.15, held: float = 0.25,
          levels: Mapping[str, Level] | None = None) -> Split:
    """Deal ``traffic`` out as described above; clients are at L2 unless ``levels`` says."""
    rows = [traffic[i] for i in rng.permutation(len(traffic))]
    n_test, n_check = int(len(rows) * test), int(len(rows) * check)
    test_rows, check_rows, rest = rows[:n_test], rows[n_test:n_test + n_check], \
        rows[n_test + n_check:]
    families = sorted({r.family for r in rest if r.label == 1})
    if not families:
        raise ValueError("the traffic has no antigens to learn from")
    names = [f"gw-{f}" for f in families] + ([POISONED] if poisoned else [])
    selves = [r for r in rest if r.label == 0]
    shares: dict[str, list[Labelled]] = {n: selves[i::len(names)] for i, n in enumerate(names)}
    for family in families:
        own = [r for r in rest if r.label == 1 and r.family == family]
        if poisoned and family == families[0]:
            own, shares[POISONED] = own[::2], shares[POISONED] + own[1::2]
        shares[f"gw-{family}"] += own
    clients = []
    for name in names:
        share = [shares[name][i] for i in rng.permutation(len(shares[name]))]
        level = (levels or {}).get(name, Level.L2)
        clients.append(_client(name, share, level, dim, held=held, flip=name == POISONED))
    check_x = design((r.features() for r in check_rows), dim)
    return Split(tuple(clients), {f"gw-{f}": f for f in families},
                 Check(check_x, np.array([r.label for r in check_rows], dtype=np.float64)),
                 design((r.features() for r in test_rows), dim),
                 tuple(r.family if r.label else SELF for r in test_rows))


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else 0.0


def score(run: Run, data: Split) -> Score:
    """Mean detection (seen, unseen) and false positives of the honest clients' detectors."""
    fam = np.array(data.test_families)
    seen, unseen, false = [], [], []
    for name, family in data.families.items():
        if name not in run.models:
            continue
        hits = flagged(run.models[name], data.x_test)
        attack = fam != SELF
        seen.append(float(hits[fam == family].mean()) if (fam == family).any() else 0.0)
        other = attack & (fam != family)
        unseen.append(float(hits[other].mean()) if other.any() else 0.0)
        false.append(float(hits[~attack].mean()) if (~attack).any() else 0.0)
    return Score(run.scheme, _mean(seen), _mean(unseen), _mean(false),
                 tuple(sorted(run.excluded & {POISONED})))
