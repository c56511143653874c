"""A learned detector: logistic regression over a request's hashed features.

A request's feature ids (`endosec.core.antigen.request_features`) are hashed into ``dim``
buckets (``id % dim``, presence only), so every detector of a federation has the same shape
whatever traffic it saw, and models can be averaged, mutated and compared as plain vectors.
The parameter vector is the ``dim`` weights followed by the bias: label 1 is an antigen (a
request after which an executor dissented), 0 is self (every executor agreed).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["DEFAULT_DIM", "Fit", "Vector", "accuracy", "design", "fit", "flagged", "from_bytes",
           "score", "to_bytes", "zeros"]

#: Hash buckets (weights) of a detector, unless configured.
DEFAULT_DIM = 1024

Vector = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Fit:
    """How a client trains: full-batch gradient descent on the L2-regularised log loss."""

    epochs: int = 5
    rate: float = 1.0
    l2: float = 0.001

    def __post_init__(self) -> None:
        if self.epochs < 0 or not self.rate > 0 or not self.l2 >= 0:
            raise ValueError("fit: need epochs >= 0, rate > 0 and l2 >= 0")


def zeros(dim: int) -> Vector:
    """A detector that has learned nothing (every request scores 0.5)."""
    return np.zeros(dim + 1)


def design(features: Iterable[Sequence[int]], dim: int) -> npt.NDArray[np.float64]:
    """One row per request: 1.0 in each bucket one of its feature ids hashes to."""
    rows = list(features)
    x = np.zeros((len(rows), dim))
    for i, ids in enumerate(rows):
        x[i, [f % dim for f in ids]] = 1.0
    return x


def _logits(params: Vector, x: npt.NDArray[np.float64]) -> Vector:
    return np.asarray(x @ params[:-1] + params[-1], dtype=np.float64)


def fit(params: Vector, x: npt.NDArray[np.float64], y: Vector, how: Fit) -> Vector:
    """``params`` after ``how.epochs`` steps on ``(x, y)``; the bias is not regularised."""
    p = params.copy()
    if len(y) == 0:
        return p
    for _ in range(how.epochs):
        err = 1.0 / (1.0 + np.exp(-np.clip(_logits(p, x), -30, 30))) - y
        grad = np.empty_like(p)
        grad[:-1] = x.T @ err / len(y) + how.l2 * p[:-1]
        grad[-1] = err.mean()
        p -= how.rate * grad
    return p


def flagged(params: Vector, x: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
    """Which requests the detector calls antigens (a score above one half, strictly)."""
    return _logits(params, x) > 0


def score(params: Vector, features: Sequence[int], dim: int) -> float:
    """One request's score, as the data plane computes it natively: the weights of its
    distinct buckets summed in ascending bucket order from 0.0, plus the bias, through the
    logistic function (in the form that cannot overflow). Equals what `design` and the
    logits give for one row, up to the order of the additions."""
    if len(params) != dim + 1:
        raise ValueError(f"a detector of dim {dim} has {dim + 1} parameters, not {len(params)}")
    total = 0.0
    for bucket in sorted({f % dim for f in features}):
        total += float(params[bucket])
    z = total + float(params[dim])
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def accuracy(params: Vector, x: npt.NDArray[np.float64], y: Vector) -> float:
    """The share of ``(x, y)`` labelled right: the paper's affinity of an antibody."""
    if len(y) == 0:
        return 0.0
    return float(np.mean(flagged(params, x) == (y > 0.5)))


def to_bytes(params: Vector) -> bytes:
    """The model as exchanged, sealed and hashed into the ledger: little-endian float64."""
    return np.ascontiguousarray(params, dtype="<f8").tobytes()


def from_bytes(data: bytes) -> Vector:
    if len(data) % 8 or len(data) < 16:
        raise ValueError(f"a model is whole float64s, at least two: got {len(data)} bytes")
    return np.frombuffer(data, dtype="<f8").astype(np.float64)
