from __future__ import annotations

import math
import random

import pytest

from endosec.core.model import Profile
from endosec.quantify.errors import ParameterError
from endosec.quantify.faithful import _Trial, simulate_faithful
from endosec.quantify.markov import mttsf, p_defeat_by
from endosec.quantify.scenario import Scenario, SimulationResult, synthetic_profiles
from endosec.quantify.vectorised import simulate_vectorised


def close(result: SimulationResult, expected: float, sigmas: float = 4.0) -> bool:
    return abs(result.mttsf - expected) <= sigmas * result.stderr


def agree(a: SimulationResult, b: SimulationResult, sigmas: float = 4.0) -> bool:
    return abs(a.mttsf - b.mttsf) <= sigmas * math.hypot(a.stderr, b.stderr)


def p_close(result: SimulationResult, expected: float, sigmas: float = 4.0) -> bool:
    assert result.p_defeat_by_t is not None
    se = math.sqrt(max(expected * (1 - expected), 1e-9) / result.trials)
    return abs(result.p_defeat_by_t - expected) <= sigmas * se


CASES = [(3, 2, 1.0, 2.0, "parallel"), (5, 3, 1.0, 4.0, "parallel"),
         (5, 3, 0.5, 1.0, "sequential"), (4, 4, 1.0, 0.0, "parallel"),
         (3, 1, 1.0, 3.0, "sequential")]


@pytest.mark.parametrize(("n", "k", "lam", "mu", "attacker"), CASES)
def test_vectorised_agrees_with_the_markov_chain(n: int, k: int, lam: float, mu: float,
                                                 attacker: str) -> None:
    sc = Scenario(n=n, k=k, lam=lam, mu=mu, attacker=attacker)  # type: ignore[arg-type]
    sequential = attacker == "sequential"
    expected = mttsf(n, k, lam, mu, sequential=sequential)
    t = expected / 2
    result = simulate_vectorised(sc, trials=20_000, seed=11, t=t)
    assert close(result, expected)
    assert result.ci[0] < result.mttsf < result.ci[1]
    assert p_close(result, p_defeat_by(n, k, lam, mu, t, sequential=sequential))


@pytest.mark.parametrize(("n", "k", "lam", "mu", "attacker"), CASES[:3])
def test_faithful_agrees_with_the_markov_chain(n: int, k: int, lam: float, mu: float,
                                               attacker: str) -> None:
    sc = Scenario(n=n, k=k, lam=lam, mu=mu, attacker=attacker)  # type: ignore[arg-type]
    result = simulate_faithful(sc, trials=800, seed=5)
    assert close(result, mttsf(n, k, lam, mu, sequential=attacker == "sequential"))


def test_dissent_with_first_strike_quarantine_is_detection() -> None:
    sc = Scenario(n=3, lam=1.0, dissent=2.0)
    expected = mttsf(3, 2, 1.0, 2.0)
    assert close(simulate_vectorised(sc, trials=20_000, seed=3), expected)
    assert close(simulate_faithful(sc, trials=800, seed=3), expected)


def test_rotation_engines_agree() -> None:
    sc = Scenario(n=5, lam=1.0, mu=1.0, rotate=0.4)
    vec = simulate_vectorised(sc, trials=20_000, seed=2)
    faithful = simulate_faithful(sc, trials=800, seed=2)
    assert agree(vec, faithful)
    assert vec.mttsf > mttsf(5, 3, 1.0, 1.0) * 1.1  # rotation does help


def test_shared_component_engines_agree() -> None:
    sc = Scenario(n=5, lam=1.0, mu=1.0, attacker="shared-component",
                  profiles=synthetic_profiles(5, 2))
    vec = simulate_vectorised(sc, trials=10_000, seed=4)
    faithful = simulate_faithful(sc, trials=800, seed=4)
    assert agree(vec, faithful)


def test_shared_component_limits() -> None:
    quorum_shares = Scenario(n=5, lam=2.0, mu=1.0, attacker="shared-component",
                             profiles=synthetic_profiles(5, 3))
    assert close(simulate_vectorised(quorum_shares, trials=5_000, seed=1), 0.5)  # one exploit
    nothing_shared = Scenario(n=5, lam=1.0, mu=1.0, attacker="shared-component",
                              profiles=synthetic_profiles(5, 0))
    assert close(simulate_vectorised(nothing_shared, trials=5_000, seed=1),
                 mttsf(5, 3, 1.0, 1.0, sequential=True))


def test_scheduler_policy_changes_what_the_attacker_faces() -> None:
    # two executors share an OS; max-dissimilarity keeps at most one of them voting
    pool = (Profile("a", frozenset({"os:x", "a"})), Profile("b", frozenset({"os:x", "b"})),
            Profile("c", frozenset({"c"})), Profile("d", frozenset({"d"})))
    runs = {policy: simulate_faithful(Scenario(n=3, lam=1.0, mu=1.0, policy=policy,
                                               attacker="shared-component", profiles=pool),
                                      trials=400, seed=9)
            for policy in ("random", "max-dissimilarity")}
    assert runs["max-dissimilarity"].mttsf > runs["random"].mttsf + 4 * math.hypot(
        runs["max-dissimilarity"].stderr, runs["random"].stderr)


@pytest.mark.parametrize("policy", ["round-robin", "credibility-weighted"])
def test_faithful_runs_every_policy(policy: str) -> None:
    sc = Scenario(n=3, lam=1.0, mu=1.0, rotate=1.0, policy=policy)
    result = simulate_faithful(sc, trials=50, seed=1, t=1.0)
    assert result.trials == 50 and result.mttsf > 0
    assert result.p_defeat_by_t is not None and 0 <= result.p_defeat_by_t <= 1


def test_quarantine_after_two_dissents_is_slower_to_react() -> None:
    quick = Scenario(n=3, lam=1.0, dissent=4.0)
    slow = Scenario(n=3, lam=1.0, dissent=4.0, quarantine_after=2)
    a = simulate_faithful(quick, trials=600, seed=8)
    b = simulate_faithful(slow, trials=600, seed=8)
    assert a.mttsf > b.mttsf + 3 * math.hypot(a.stderr, b.stderr)


def test_threat_aware_rotation_runs_the_gateways_threat_level_and_helps_under_dissent() -> None:
    """Dissent that does not quarantine (quarantine_after high) still raises the threat level:
    rotations come faster and wipe footholds sooner than at the calm rate."""
    base = dict(n=3, lam=0.05, rotate=20.0, dissent=0.2, quarantine_after=100,
                dissent_window=1.0, attacker="sequential")
    fixed = simulate_faithful(Scenario(**base), trials=1000, seed=1, t=60.0)  # type: ignore[arg-type]
    aware = simulate_faithful(Scenario(**base, rotate_min=2.0, threat_scale=1.0,  # type: ignore[arg-type]
                                       threat_half_life=60.0), trials=1000, seed=1, t=60.0)
    assert aware.p_defeat_by_t_ci is not None and fixed.p_defeat_by_t_ci is not None
    assert aware.p_defeat_by_t_ci[1] < fixed.p_defeat_by_t_ci[0]
    assert aware.as_dict()["rotate_min"] == 2.0 and "rotate_min" not in fixed.as_dict()
    with pytest.raises(ParameterError, match="faithful"):
        simulate_vectorised(Scenario(**base, rotate_min=2.0), trials=10)  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="rotate_min"):
        Scenario(n=3, lam=1.0, rotate_min=2.0)
    with pytest.raises(ParameterError, match="rotate_min"):
        Scenario(n=3, lam=1.0, rotate=1.0, rotate_min=2.0)


def test_seeded_runs_repeat_and_progress_counts_every_trial() -> None:
    sc = Scenario(n=5, lam=1.0, mu=2.0, rotate=1.0)
    done: list[int] = []
    first = simulate_vectorised(sc, trials=3_000, seed=42, progress=done.append)
    again = simulate_vectorised(sc, trials=3_000, seed=42)
    assert first.mttsf == again.mttsf and sum(done) == 3_000
    ticks: list[int] = []
    f1 = simulate_faithful(sc, trials=30, seed=42, progress=ticks.append)
    assert f1.mttsf == simulate_faithful(sc, trials=30, seed=42).mttsf and sum(ticks) == 30


def test_result_keys() -> None:
    r = simulate_vectorised(Scenario(n=3, lam=1.0, mu=1.0), trials=100, seed=1, t=1.0).as_dict()
    assert {"mttsf", "ci", "p_defeat_by_t", "engine", "trials"} <= set(r)
    assert isinstance(r["ci"], list) and len(r["ci"]) == 2
    assert "p_defeat_by_t" not in simulate_vectorised(Scenario(n=3, lam=1.0), trials=10,
                                                      seed=1).as_dict()


@pytest.mark.parametrize("kwargs", [dict(n=3, lam=0.0), dict(n=3, lam=1.0, mu=-1.0),
                                    dict(n=3, lam=1.0, k=4), dict(n=3, lam=1.0, rotate=-1.0),
                                    dict(n=3, lam=1.0, attacker="shared-component"),
                                    dict(n=3, lam=1.0, quarantine_after=0),
                                    dict(n=3, lam=1.0, profiles=synthetic_profiles(2, 0))])
def test_bad_scenarios(kwargs: dict[str, object]) -> None:
    with pytest.raises(ParameterError):
        Scenario(**kwargs)  # type: ignore[arg-type]


def test_engine_limits() -> None:
    with pytest.raises(ParameterError, match="faithful"):
        simulate_vectorised(Scenario(n=3, lam=1.0, policy="round-robin"), trials=10)
    with pytest.raises(ParameterError, match="faithful"):
        simulate_vectorised(Scenario(n=3, lam=1.0, dissent=1.0, quarantine_after=2), trials=10)
    with pytest.raises(ParameterError, match="policy"):
        simulate_faithful(Scenario(n=3, lam=1.0, policy="nope"), trials=10)
    with pytest.raises(ParameterError, match="trials"):
        simulate_vectorised(Scenario(n=3, lam=1.0), trials=1)


def test_isolation_follows_the_gateways_setting() -> None:
    """`--no-isolation` is `threat.isolate_at: null`: the simulated controller isolates no
    component on dissent."""
    pool = synthetic_profiles(4, 2)
    for isolate_at in (0.5, None):
        sc = Scenario(n=3, lam=1.0, rotate=1.0, attacker="sequential", profiles=pool,
                      isolate_at=isolate_at)
        assert _Trial(sc, sc.pool(), random.Random(1)).controller.policy.isolate_at == isolate_at
