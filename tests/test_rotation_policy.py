"""A learned rotation policy: trained in the simulator, written to a file and read back,
refused when malformed or when it would rotate beyond its budget, and never able to break
the controller's hard constraints."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from endosec.cli import main
from endosec.config import ConfigError, load_config
from endosec.core.controller import Controller, ControllerPolicy
from endosec.core.controller_events import Deactivate, MarkComponents
from endosec.core.rotation_policy import (
    BUDGETS,
    STATES,
    PolicyFileError,
    RotationPolicy,
    RotationState,
)
from endosec.core.scheduler import scheduler_from_config
from endosec.core.trust import TrustBook
from endosec.quantify.scenario import Scenario
from endosec.quantify.train import train_rotation_policy
from tests.gatewayctl import DEMO
from tests.test_isolation import LLHTTP, POOL, Runtime

# An attacker who needs 40 s on one voter before his exploit works on it, against one
# rotation per 10 s: fixed-rate random rotation leaves some voters on duty that long.
RECON = Scenario(n=3, lam=0.1, rotate=10.0, attacker="recon", recon=40.0, policy="random")


@pytest.fixture(scope="module")
def trained() -> object:
    return train_rotation_policy(RECON, 300.0, episodes=600, trials=300, seed=3)


def test_the_learned_policy_beats_fixed_rate_rotation_on_the_same_budget(trained) -> None:
    fixed, learned = trained.fixed, trained.learned  # type: ignore[attr-defined]
    assert learned.ci[1] < fixed.ci[0], (fixed, learned)
    assert learned.rotations_per_hour <= fixed.rotations_per_hour * 1.1
    assert trained.threat_aware is None  # type: ignore[attr-defined]


def test_a_policy_file_round_trips(trained, tmp_path: Path) -> None:
    policy = trained.policy  # type: ignore[attr-defined]
    again = RotationPolicy.from_json(policy.to_json())
    assert again == policy
    for oldest in (0.0, 25.0, 60.0):
        for budget in (0.0, 1.5, 3.0):
            state = RotationState(oldest, budget, 0)
            assert again.decide(state) == policy.decide(state)
            if budget < 1:
                assert again.decide(state) == "wait"


@pytest.mark.parametrize(("text", "message"), [
    ("{", "not JSON"),
    ('{"format": "other"}', "not a rotation policy"),
    (json.dumps({"format": "endosec-rotation-policy/1", "epoch": 1, "age_unit": 1,
                 "q": [[0, 0]]}), "rows of 3 action values"),
    (json.dumps({"format": "endosec-rotation-policy/1", "epoch": 1, "age_unit": 1,
                 "q": [[0, 0, 0]]}), f"{STATES} rows"),
    (json.dumps({"format": "endosec-rotation-policy/1", "epoch": -1, "age_unit": 1,
                 "q": [[0, 0, 0]] * STATES}), "epoch must be a positive"),
    (json.dumps({"format": "endosec-rotation-policy/1", "epoch": 1, "age_unit": 1,
                 "q": [[0, "x", 0]] * STATES}), "not a finite number"),
    (json.dumps({"format": "endosec-rotation-policy/1", "epoch": 1, "age_unit": 1,
                 "actions": ["wait", "rotate-all"], "q": [[0, 0, 0]] * STATES}), "actions"),
    # rotating with nothing in hand: an impossible move
    (json.dumps({"format": "endosec-rotation-policy/1", "epoch": 1, "age_unit": 1,
                 "q": [[0, 1, 0]] * STATES}), "rotates with no rotation in hand"),
])
def test_a_bad_policy_file_is_refused_with_a_clear_error(text: str, message: str) -> None:
    with pytest.raises(PolicyFileError, match=message):
        RotationPolicy.from_json(text)


def _always_oldest() -> RotationPolicy:
    q = []
    for index in range(STATES):
        budget = (index // 3) % BUDGETS
        q.append((0.0, 1.0, 0.0) if budget >= 1 else (1.0, 0.0, 0.0))
    return RotationPolicy(1.0, 5.0, tuple(q))


def test_whatever_the_policy_says_the_hard_constraints_hold() -> None:
    """A policy that always rotates, on the demo's stacks with llhttp isolated: never beyond
    its budget, never both llhttp stacks voting, never below the floor."""
    policy = ControllerPolicy(active_size=3, floor=2, rotate_every=10.0,
                              rotation=_always_oldest())
    ctrl = Controller(POOL, policy, scheduler_from_config("max-dissimilarity"),
                      TrustBook([p.name for p in POOL]), random.Random(5))
    rt = Runtime(ctrl)
    rt.feed(MarkComponents(frozenset({LLHTTP}), until=10_000.0, now=0.0))
    start = len(rt.log)
    rt.run_until(1000.0)
    rotations = sum(isinstance(a, Deactivate) for a in rt.log[start:])
    assert 50 < rotations <= 1000 / 10 + BUDGETS
    seen = rt.history[start:]
    assert not any({"aiohttp", "node"} <= s for s in seen)
    assert all(len(s) >= 2 for s in seen)


def test_train_scheduler_writes_a_policy_that_simulate_and_the_gateway_load(
        tmp_path: Path) -> None:
    out = tmp_path / "policy.json"
    result = CliRunner().invoke(main, [
        "quantify", "train-scheduler", "--n", "3", "--lam", "0.1", "--rotate", "10",
        "--rotate-min", "2", "--attacker", "recon", "--recon", "40", "--t", "120",
        "--episodes", "100", "--trials", "50", "--seed", "1", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert set(summary) >= {"fixed-rate", "threat-aware", "learned"}
    assert RotationPolicy.from_json(out.read_text()).epoch == 2.0
    data = yaml.safe_load(DEMO.read_text())
    data["controller"]["rotation_policy"] = str(out)
    config = tmp_path / "endosec.yaml"
    config.write_text(yaml.safe_dump(data))
    assert load_config(config).controller.rotation_policy == out
    out.write_text(json.dumps({"format": "endosec-rotation-policy/1", "epoch": 1,
                               "age_unit": 1, "q": [[0, 1, 0]] * STATES}))
    with pytest.raises(ConfigError, match=r"controller\.rotation_policy: the policy rotates"):
        load_config(config)
    bad = CliRunner().invoke(main, [
        "quantify", "simulate", "--n", "3", "--lam", "0.1", "--rotate", "10", "--engine",
        "faithful", "--rotation-policy", str(out)])
    assert bad.exit_code == 2 and "rotates with no rotation in hand" in bad.output
