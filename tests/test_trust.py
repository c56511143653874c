from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from endosec.core.trust import TrustBook


def test_uniform_prior_starts_at_half() -> None:
    book = TrustBook(["a", "b"])
    assert book.behaviour("a") == pytest.approx(0.5)
    assert book.score("a") == pytest.approx(0.5)
    assert book.snapshot() == {"a": pytest.approx(0.5), "b": pytest.approx(0.5)}


def test_agreement_raises_and_dissent_lowers() -> None:
    book = TrustBook(["a", "b"])
    book.record("a", True)
    book.record("b", False)
    assert book.behaviour("a") > 0.5 > book.behaviour("b")
    # Beta(1, 1) plus one agreement: mean 2/3.
    assert book.behaviour("a") == pytest.approx(2 / 3)
    assert book.evidence("b") == (0.0, 1.0)


def test_decay_lets_recent_dissent_outweigh_old_agreement() -> None:
    forgetful = TrustBook(["x"], decay=0.8)
    total_recall = TrustBook(["x"], decay=1.0)
    for book in (forgetful, total_recall):
        for _ in range(100):
            book.record("x", True)
        for _ in range(10):
            book.record("x", False)
    assert forgetful.behaviour("x") < 0.5
    assert total_recall.behaviour("x") > 0.85


def test_identity_multiplies_behaviour() -> None:
    book = TrustBook(["a"])
    book.record("a", True)
    book.set_identity("a", 0.5)
    assert book.identity("a") == 0.5
    assert book.score("a") == pytest.approx(book.behaviour("a") * 0.5)
    book.set_identity("a", 0.0)
    assert book.score("a") == 0.0


def test_reset_is_a_clean_slate_for_a_new_build() -> None:
    book = TrustBook(["a"])
    book.record("a", False)
    book.set_identity("a", 0.2)
    book.reset("a")
    assert book.score("a") == pytest.approx(0.5)
    assert book.evidence("a") == (0.0, 0.0)


@pytest.mark.parametrize("call", [
    lambda b: b.record("zz", True),
    lambda b: b.behaviour("zz"),
    lambda b: b.score("zz"),
    lambda b: b.set_identity("zz", 1.0),
    lambda b: b.reset("zz"),
])
def test_unknown_executor_is_refused(call) -> None:
    with pytest.raises(ValueError, match="zz"):
        call(TrustBook(["a"]))


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"prior": (0.0, 1.0)}, "prior"),
    ({"prior": (1.0, float("inf"))}, "prior"),
    ({"decay": 0.0}, "decay"),
    ({"decay": 1.5}, "decay"),
])
def test_bad_parameters_name_the_field(kwargs, field) -> None:
    with pytest.raises(ValueError, match=field):
        TrustBook(["a"], **kwargs)


def test_duplicate_names_and_bad_identity_are_refused() -> None:
    with pytest.raises(ValueError, match="unique"):
        TrustBook(["a", "a"])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        TrustBook(["a"]).set_identity("a", 1.1)


@given(votes=st.lists(st.booleans(), max_size=300),
       decay=st.floats(0.01, 1.0),
       identity=st.floats(0.0, 1.0),
       prior=st.tuples(st.floats(0.01, 50), st.floats(0.01, 50)))
def test_score_stays_in_unit_interval_and_orders_agreement_above_dissent(votes, decay, identity,
                                                                         prior) -> None:
    book = TrustBook(["a", "yes", "no"], prior=prior, decay=decay)
    book.set_identity("a", identity)
    for agreed in votes:
        for name in ("a", "yes", "no"):
            book.record(name, agreed)
        assert 0.0 < book.behaviour("a") < 1.0
        assert 0.0 <= book.score("a") <= 1.0
    # from the same history, one more agreement leaves more trust than one more dissent
    book.record("yes", True)
    book.record("no", False)
    assert book.behaviour("yes") > book.behaviour("no")


@given(st.floats(0.5, 1.0), st.integers(0, 300), st.lists(st.booleans(), max_size=20))
def test_a_batch_of_agreements_equals_as_many_single_votes(decay: float, n: int,
                                                           before: list[bool]) -> None:
    one, batch = TrustBook(["x"], decay=decay), TrustBook(["x"], decay=decay)
    for agreed in before:
        one.record("x", agreed)
        batch.record("x", agreed)
    for _ in range(n):
        one.record("x", True)
    batch.record_agreements("x", n)
    assert batch.evidence("x") == pytest.approx(one.evidence("x"), rel=1e-9, abs=1e-9)
