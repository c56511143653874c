"""How threatened the boundary looks: a level θ in [0, 1] the scheduler moves faster under.

Evidence of attack arrives as signals, each with a weight (`WEIGHTS`): a dissenting executor,
a request the input agent refused, a client getting error after error (a scan). Their weight
decays exponentially (``half_life``), and the measured level is ``1 - exp(-pressure /
scale)``: 0 in calm, towards 1 as evidence piles up, back to 0 as it ages. The operator's
word (a level, for a while) is a floor on it while it lasts. The level is read in bands
(`band_of`); crossing one is the event the gateway logs and signs. Time is passed in; nothing
here does I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["BANDS", "CALM", "THREAT_STEP", "WEIGHTS", "Band", "Threat", "ThreatPolicy", "band_of"]

Band = Literal["calm", "elevated", "high"]
BANDS: tuple[Band, ...] = ("calm", "elevated", "high")
CALM = 1 / 3  # levels up to this are calm
HIGH = 2 / 3  # and from this, high

THREAT_STEP = 0.05  # the controller hears of a level that moved this much (or fell to calm)

WEIGHTS = {"dissent": 1.0, "refusal": 0.2, "scan": 1.0}
"""What one signal of each kind weighs: a dissenting executor, an input-agent refusal, a burst
of error answers to one client (`endosec.core.scan`)."""


def band_of(level: float) -> Band:
    return "high" if level >= HIGH else "elevated" if level > CALM else "calm"


@dataclass(frozen=True, slots=True)
class ThreatPolicy:
    half_life: float = 120.0  # seconds for evidence to lose half its weight
    scale: float = 10.0  # pressure at which the level reaches 1 - 1/e

    def __post_init__(self) -> None:
        for name in ("half_life", "scale"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")


@dataclass(slots=True)
class Threat:
    """The decaying pressure of attack signals, and the operator's word."""

    policy: ThreatPolicy = field(default_factory=ThreatPolicy)
    _pressure: float = 0.0
    _at: float = 0.0
    _declared: float = 0.0
    _declared_until: float = -math.inf

    def _decay(self, now: float) -> None:
        if now > self._at:
            self._pressure *= 0.5 ** ((now - self._at) / self.policy.half_life)
            self._at = now

    def signal(self, kind: str, now: float, count: int = 1) -> None:
        """``count`` signals of ``kind`` (a key of `WEIGHTS`) at ``now``."""
        if kind not in WEIGHTS:
            raise ValueError(f"unknown threat signal {kind!r}")
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count!r}")
        self._decay(now)
        self._pressure += WEIGHTS[kind] * count

    def declare(self, level: float, until: float) -> None:
        """The operator's word: at least ``level`` until ``until``."""
        if not (math.isfinite(level) and 0.0 <= level <= 1.0):
            raise ValueError(f"level must be in [0, 1], got {level!r}")
        self._declared, self._declared_until = level, until

    def level(self, now: float) -> float:
        self._decay(now)
        measured = 1.0 - math.exp(-self._pressure / self.policy.scale)
        declared = self._declared if now < self._declared_until else 0.0
        return max(measured, declared)
