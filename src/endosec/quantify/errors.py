"""Parameter checks shared by every quantifier model, each failing with one readable line."""

from __future__ import annotations

import math

__all__ = ["ParameterError", "check_k", "check_probability", "check_rate", "default_k"]


class ParameterError(ValueError):
    """A model parameter outside its domain; the message names the parameter."""


def default_k(n: int) -> int:
    """The smallest number of colluding executors that wins a majority vote."""
    return n // 2 + 1


def check_k(n: int, k: int | None) -> int:
    """Validate ``n`` and ``k`` (default: a majority of ``n``) and return ``k``."""
    if n < 1:
        raise ParameterError(f"n must be at least 1, got {n}")
    if k is None:
        return default_k(n)
    if not 1 <= k <= n:
        raise ParameterError(f"k must be between 1 and n={n}, got {k}")
    return k


def check_probability(name: str, value: float) -> float:
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ParameterError(f"{name} must be a probability in [0, 1], got {value}")
    return value


def check_rate(name: str, value: float, *, positive: bool = False) -> float:
    """Rates are finite and non-negative; ``positive`` also rules out zero."""
    if math.isnan(value) or math.isinf(value) or value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise ParameterError(f"{name} must be a finite rate {bound}, got {value}")
    return value
