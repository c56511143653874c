"""A learned rotation policy: when to rotate, and whom, from a table of action values.

The controller asks at decision epochs (exponentially distributed, mean ``epoch``) what to do
in the current `RotationState`: wait, rotate out the voter that has served longest, or rotate
out one at random. Rotations spend a budget that accrues at one per ``rotate_every``
(`endosec.core.controller`), so a learned policy rotates no more often than the fixed-rate
one it replaces; it can only choose *when* and *whom*. The table comes from tabular
Q-learning in the quantifier's simulator (``endosec quantify train-scheduler``); the
controller's hard constraints (floor, no uncleansed activation, isolation, the scheduler's
choice of replacement) hold whatever it says.

A policy file is JSON: ``{"format": "endosec-rotation-policy/1", "epoch": S, "age_unit": S,
"q": [[wait, oldest, random] x STATES]}``; `RotationPolicy.from_json` refuses anything else,
and a table that would rotate without budget, with one line naming what is wrong.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

__all__ = ["ACTIONS", "AGE_BUCKETS", "BUDGETS", "FORMAT", "STATES", "Decider",
           "PolicyFileError", "RotationPolicy", "RotationState"]

FORMAT: Final = "endosec-rotation-policy/1"
Action = Literal["wait", "rotate-oldest", "rotate-random"]
ACTIONS: Final[tuple[Action, ...]] = ("wait", "rotate-oldest", "rotate-random")
AGE_BUCKETS: Final = 6  # the oldest voter's service time, in age units: 0, 1, ..., 5 or more
BUDGETS: Final = 3  # rotations in hand: 0, 1, 2 or more
BANDS: Final = 3  # threat band: calm, elevated, high
STATES: Final = AGE_BUCKETS * BUDGETS * BANDS


class PolicyFileError(ValueError):
    """A policy file that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class RotationState:
    """What a decision sees: how long the longest-serving voter has served (seconds), the
    rotations in hand, and the threat band (0 calm, 1 elevated, 2 high)."""

    oldest: float
    budget: float
    band: int

    def index(self, age_unit: float) -> int:
        age = min(AGE_BUCKETS - 1, int(self.oldest / age_unit)) if self.oldest > 0 else 0
        budget = min(BUDGETS - 1, int(self.budget))
        return (age * BUDGETS + budget) * BANDS + max(0, min(BANDS - 1, self.band))


class Decider(Protocol):
    """What the controller asks at each decision epoch (a `RotationPolicy`, or the learner
    while it trains)."""

    @property
    def epoch(self) -> float: ...

    def decide(self, state: RotationState) -> Action: ...


@dataclass(frozen=True, slots=True)
class RotationPolicy:
    """A greedy policy over a table of action values (ties: wait, then the oldest)."""

    epoch: float
    age_unit: float
    q: tuple[tuple[float, float, float], ...]

    def __post_init__(self) -> None:
        for name in ("epoch", "age_unit"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise PolicyFileError(f"{name} must be a positive number of seconds, "
                                      f"got {value!r}")
        if len(self.q) != STATES or any(len(row) != len(ACTIONS) for row in self.q):
            raise PolicyFileError(f"q must hold {STATES} rows of {len(ACTIONS)} action values "
                                  f"({', '.join(ACTIONS)})")
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for r in self.q for v in r):
            raise PolicyFileError("q holds a value that is not a finite number")
        for band in range(BANDS):
            for age in range(AGE_BUCKETS):
                state = RotationState(age * self.age_unit, 0.0, band)
                if self.decide(state) != "wait":
                    raise PolicyFileError(
                        f"the policy rotates with no rotation in hand (oldest voter at "
                        f"{age} age units, threat band {band}): it would exceed the budget")

    def decide(self, state: RotationState) -> Action:
        row = self.q[state.index(self.age_unit)]
        best = max(row)
        return ACTIONS[row.index(best)]

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "epoch": self.epoch, "age_unit": self.age_unit,
                           "actions": list(ACTIONS), "q": [list(r) for r in self.q]})

    @classmethod
    def from_json(cls, text: str) -> RotationPolicy:
        try:
            data: Any = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PolicyFileError(f"not JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise PolicyFileError(f"not a rotation policy: expected \"format\": \"{FORMAT}\"")
        if data.get("actions", list(ACTIONS)) != list(ACTIONS):
            raise PolicyFileError(f"actions must be {list(ACTIONS)}, got {data.get('actions')}")
        q = data.get("q")
        if not isinstance(q, list) or not all(isinstance(r, list) for r in q):
            raise PolicyFileError("q must be a list of rows")
        if any(len(r) != len(ACTIONS) for r in q):
            raise PolicyFileError(f"q must hold rows of {len(ACTIONS)} action values "
                                  f"({', '.join(ACTIONS)})")
        return cls(data.get("epoch", 0.0), data.get("age_unit", 0.0),
                   tuple((r[0], r[1], r[2]) for r in q))
