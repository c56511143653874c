from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from endosec.quantify.errors import ParameterError
from endosec.quantify.models import (
    p_defeat_beta_factor,
    p_defeat_correlated,
    p_defeat_independent,
    vote,
)


def binom_tail(n: int, k: int, p: float) -> float:
    return sum(math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(k, n + 1))


@pytest.mark.parametrize(("n", "k", "p"), [(3, 2, 0.1), (5, 3, 0.2), (7, 4, 0.05), (4, 1, 0.3),
                                           (1, 1, 0.5)])
def test_independent_is_the_binomial_tail(n: int, k: int, p: float) -> None:
    assert p_defeat_independent(n, k, p) == pytest.approx(binom_tail(n, k, p), rel=1e-12)
    assert p_defeat_independent(n, k, p) == pytest.approx(stats.binom.sf(k - 1, n, p), rel=1e-9)


def test_n3_majority_closed_form() -> None:
    p = 0.1
    assert vote(3, p).p_defeat == pytest.approx(3 * p**2 - 2 * p**3)


@pytest.mark.parametrize(("n", "k", "p", "beta"), [(3, 2, 0.1, 0.1), (5, 3, 0.05, 0.3),
                                                   (5, 3, 0.2, 1.0), (4, 2, 0.2, 0.0)])
def test_beta_factor(n: int, k: int, p: float, beta: float) -> None:
    expected = beta * p + (1 - beta * p) * binom_tail(n, k, (1 - beta) * p)
    assert p_defeat_beta_factor(n, k, p, beta) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(("n", "k", "p", "rho"), [(3, 2, 0.1, 0.05), (5, 3, 0.1, 0.2),
                                                  (7, 4, 0.3, 0.5), (9, 5, 0.01, 0.9)])
def test_correlated_matches_scipy_beta_binomial(n: int, k: int, p: float, rho: float) -> None:
    a = p * (1 - rho) / rho
    b = (1 - p) * (1 - rho) / rho
    expected = stats.betabinom.sf(k - 1, n, a, b)
    assert p_defeat_correlated(n, k, p, rho) == pytest.approx(expected, rel=1e-9)


def test_correlated_edges() -> None:
    assert p_defeat_correlated(5, 3, 0.1, 0.0) == pytest.approx(binom_tail(5, 3, 0.1))
    assert p_defeat_correlated(5, 3, 0.1, 1.0) == pytest.approx(0.1)
    assert p_defeat_correlated(5, 3, 0.0, 0.3) == 0.0
    assert p_defeat_correlated(5, 3, 1.0, 0.3) == pytest.approx(1.0)


@given(n=st.integers(1, 15), p=st.floats(0, 1), rho=st.floats(0, 0.99))
def test_correlation_is_a_probability_and_k1_is_any(n: int, p: float, rho: float) -> None:
    value = p_defeat_correlated(n, 1, p, rho)
    assert 0.0 <= value <= 1.0 + 1e-12
    for k in range(1, n + 1):
        assert 0.0 <= p_defeat_correlated(n, k, p, rho) <= value + 1e-12


@given(n=st.integers(1, 12), p1=st.floats(0, 1), p2=st.floats(0, 1))
def test_defeat_grows_with_p(n: int, p1: float, p2: float) -> None:
    lo, hi = sorted((p1, p2))
    k = n // 2 + 1
    assert p_defeat_independent(n, k, lo) <= p_defeat_independent(n, k, hi) + 1e-12


def test_vote_picks_the_model_and_reports_parameters() -> None:
    assert vote(5, 0.1).as_dict() == {"model": "independent", "n": 5, "k": 3, "p": 0.1,
                                      "p_defeat": pytest.approx(binom_tail(5, 3, 0.1))}
    assert vote(5, 0.1, beta=0.2).as_dict()["model"] == "beta-factor"
    assert vote(5, 0.1, rho=0.2, k=2).as_dict()["k"] == 2


@pytest.mark.parametrize("kwargs", [dict(n=3, p=1.5), dict(n=3, p=-0.1), dict(n=3, p=0.1, k=4),
                                    dict(n=0, p=0.1), dict(n=3, p=0.1, k=0),
                                    dict(n=3, p=0.1, beta=2.0), dict(n=3, p=0.1, rho=-1.0),
                                    dict(n=3, p=0.1, beta=0.1, rho=0.1),
                                    dict(n=3, p=float("nan"))])
def test_bad_parameters(kwargs: dict[str, float]) -> None:
    with pytest.raises(ParameterError):
        vote(**kwargs)  # type: ignore[arg-type]
