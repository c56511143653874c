from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import expm

from endosec.quantify.errors import ParameterError
from endosec.quantify.markov import effective_mu, markov, mttsf, p_defeat_by


def full_generator(n: int, k: int, lam: float, mu: float, sequential: bool) -> np.ndarray:
    q = np.zeros((k + 1, k + 1))
    for i in range(k):
        q[i, i + 1] = lam if sequential else (n - i) * lam
        if i > 0:
            q[i, i - 1] = i * mu
        q[i, i] = -q[i].sum()
    return q


def birth_death_mean(n: int, k: int, lam: float, mu: float, sequential: bool) -> float:
    """Sum over levels of the expected time to go from i to i+1 (classic recursion)."""
    total, step = 0.0, 0.0
    for i in range(k):
        up = lam if sequential else (n - i) * lam
        step = (1 + i * mu * step) / up  # E[time i -> i+1] = (1 + down_i * E[i-1 -> i]) / up_i
        total += step
    return total


@pytest.mark.parametrize(("lam", "mu"), [(1.0, 0.0), (1.0, 2.0), (0.3, 7.0), (2.0, 0.5)])
def test_n3_k2_closed_form(lam: float, mu: float) -> None:
    assert mttsf(3, 2, lam, mu) == pytest.approx((5 * lam + mu) / (6 * lam**2), rel=1e-10)


@pytest.mark.parametrize("sequential", [False, True])
@pytest.mark.parametrize(("n", "k", "lam", "mu"), [(5, 3, 1.0, 4.0), (7, 4, 0.5, 3.0),
                                                   (4, 4, 1.0, 1.0), (6, 1, 2.0, 9.0)])
def test_mttsf_matches_birth_death_recursion(n: int, k: int, lam: float, mu: float,
                                             sequential: bool) -> None:
    expected = birth_death_mean(n, k, lam, mu, sequential)
    assert mttsf(n, k, lam, mu, sequential=sequential) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("sequential", [False, True])
@pytest.mark.parametrize("t", [0.0, 0.1, 1.0, 5.0])
def test_p_defeat_by_t_is_the_absorbing_column_of_exp_qt(t: float, sequential: bool) -> None:
    q = full_generator(5, 3, 1.0, 2.5, sequential)
    expected = expm(q * t)[0, 3]
    assert p_defeat_by(5, 3, 1.0, 2.5, t, sequential=sequential) == pytest.approx(expected,
                                                                                 abs=1e-12)


def test_no_cleansing_means_sum_of_attack_times() -> None:
    assert mttsf(3, 3, 1.0, 0.0) == pytest.approx(1 / 3 + 1 / 2 + 1)
    assert mttsf(3, 3, 1.0, 0.0, sequential=True) == pytest.approx(3.0)


def test_result_keys_and_rotation() -> None:
    r = markov(3, 1.0, 2.0, t=1.0).as_dict()
    assert set(r) == {"n", "k", "lam", "mu", "sequential", "mttsf", "t", "p_defeat_by_t"}
    assert "p_defeat_by_t" not in markov(3, 1.0, 2.0).as_dict()
    rotated = markov(3, 1.0, 2.0, rotate=0.5)
    assert rotated.mu == pytest.approx(2.0 + 1 / 1.5) == effective_mu(2.0, 0.5, 3)
    assert rotated.mttsf > markov(3, 1.0, 2.0).mttsf


@pytest.mark.parametrize("kwargs", [dict(lam=-1.0, mu=1.0), dict(lam=0.0, mu=1.0),
                                    dict(lam=1.0, mu=-0.1), dict(lam=1.0, mu=1.0, k=5),
                                    dict(lam=1.0, mu=1.0, t=-1.0),
                                    dict(lam=1.0, mu=1.0, rotate=0.0),
                                    dict(lam=float("inf"), mu=1.0)])
def test_bad_parameters(kwargs: dict[str, float]) -> None:
    with pytest.raises(ParameterError):
        markov(3, **kwargs)  # type: ignore[arg-type]
