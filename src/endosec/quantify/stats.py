"""Confidence intervals for Monte Carlo estimates (95%, two-sided)."""

from __future__ import annotations

import math

__all__ = ["Z95", "mean_ci", "wilson_ci"]

Z95 = 1.959963984540054


def wilson_ci(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval: sensible even when the proportion is 0 or 1."""
    if trials <= 0:
        return (0.0, 1.0)
    phat = successes / trials
    denom = 1.0 + z * z / trials
    centre = (phat + z * z / (2 * trials)) / denom
    half = z * math.sqrt(phat * (1 - phat) / trials + z * z / (4 * trials * trials)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def mean_ci(mean: float, std: float, trials: int, z: float = Z95) -> tuple[float, float]:
    """Normal-approximation interval for a sample mean."""
    half = z * std / math.sqrt(trials) if trials > 1 else math.inf
    return (mean - half, mean + half)
