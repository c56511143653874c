"""Training a rotation policy: tabular Q-learning in the faithful simulator.

Each episode is one attack played to the horizon against the real controller, whose rotation
decisions come from the learner (`Learner`, a `Decider`): epsilon-greedy over the table, with
the one-step update ``Q(s,a) += alpha (r + max Q(s',.) - Q(s,a))`` between decision epochs and
the terminal reward at the end: -1 if the vote was lost, 0 if it held. A state's values thus
estimate minus the chance of losing from there. With no rotation in hand the learner can only
wait, and those rows keep "wait" best, so the table it writes passes `RotationPolicy`'s
checks. The same budget binds the learner and the fixed-rate policy it is compared with.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from endosec.core.rotation_policy import (
    ACTIONS,
    STATES,
    Action,
    RotationPolicy,
    RotationState,
)
from endosec.quantify.errors import ParameterError, check_rate
from endosec.quantify.faithful import Horizon, defeat_by
from endosec.quantify.scenario import Scenario

__all__ = ["Comparison", "Learner", "train_rotation_policy"]

_LEAN = 1e-6


class Learner:
    """Tabular Q-learning behind the `Decider` seam."""

    def __init__(self, epoch: float, age_unit: float, rng: random.Random, *,
                 alpha: float = 0.1, epsilon: float = 0.1) -> None:
        self._epoch, self.age_unit, self.rng = epoch, age_unit, rng
        self.alpha, self.epsilon = alpha, epsilon
        # Rows with no rotation in hand start (and stay) with "wait" best; the others lean,
        # by a hair, to a random rotation: a state never visited spends the budget as the
        # fixed-rate policy would.
        self.q = [[0.0, 0.0, _LEAN] for _ in range(STATES)]
        for band in range(3):
            for age in range(6):
                row = RotationState(age * age_unit, 0.0, band).index(age_unit)
                self.q[row][1] = self.q[row][2] = -1.0
        self._prev: tuple[int, int] | None = None

    @property
    def epoch(self) -> float:
        return self._epoch

    def decide(self, state: RotationState) -> Action:
        row = state.index(self.age_unit)
        if self._prev is not None:
            self._update(self._prev, max(self.q[row]))
        if state.budget < 1:
            action = 0
        elif self.rng.random() < self.epsilon:
            action = self.rng.randrange(len(ACTIONS))
        else:
            values = self.q[row]
            action = values.index(max(values))
        self._prev = (row, action)
        return ACTIONS[action]

    def end(self, lost: bool) -> None:
        """The episode is over: the terminal reward for the last decision."""
        if self._prev is not None:
            self._update(self._prev, -1.0 if lost else 0.0)
        self._prev = None

    def _update(self, prev: tuple[int, int], target: float) -> None:
        row, action = prev
        self.q[row][action] += self.alpha * (target - self.q[row][action])

    def policy(self) -> RotationPolicy:
        return RotationPolicy(self._epoch, self.age_unit,
                              tuple((r[0], r[1], r[2]) for r in self.q))


@dataclass(frozen=True, slots=True)
class Comparison:
    """The learned policy against fixed-rate rotation (and threat-aware rotation, when the
    scenario has ``rotate_min``), on the same budget."""

    policy: RotationPolicy
    fixed: Horizon
    threat_aware: Horizon | None
    learned: Horizon
    episodes: int


def train_rotation_policy(sc: Scenario, t: float, *, episodes: int, trials: int,
                          seed: int | None, epoch: float | None = None,
                          age_unit: float | None = None) -> Comparison:
    """Learn a policy for ``sc`` over ``episodes`` attacks to the horizon ``t``, then play
    ``trials`` fresh attacks with it, with the fixed-rate rotation of ``sc.rotate`` and, given
    ``sc.rotate_min``, with threat-aware rotation."""
    if sc.rotate is None:
        raise ParameterError("training needs rotate: the budget, one rotation per rotate")
    if episodes < 1:
        raise ParameterError(f"episodes must be at least 1, got {episodes}")
    check_rate("t", t, positive=True)
    epoch = epoch if epoch is not None else sc.rotate / 5
    age_unit = age_unit if age_unit is not None else (sc.recon / 2 if sc.recon else sc.rotate / 2)
    check_rate("epoch", epoch, positive=True)
    check_rate("age_unit", age_unit, positive=True)
    rng = random.Random(seed)
    learner = Learner(epoch, age_unit, rng)
    defeat_by(replace(sc, rotation=learner), t, trials=episodes, seed=rng.getrandbits(32),
              on_trial=learner.end)
    policy = learner.policy()
    check = rng.getrandbits(32)
    fixed = defeat_by(replace(sc, rotate_min=None), t, trials=trials, seed=check)
    aware = defeat_by(sc, t, trials=trials, seed=check) if sc.rotate_min is not None else None
    learned = defeat_by(replace(sc, rotation=policy), t, trials=trials, seed=check)
    return Comparison(policy, fixed, aware, learned, episodes)
