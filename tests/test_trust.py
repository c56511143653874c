from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from endosec.core.trust import Identity, Level, PointRules, TrustBook


def test_uniform_prior_starts_at_half() -> None:
    book = TrustBook(["a", "b"])
    assert book.behaviour("a") == pytest.approx(0.5)
    fresh = 0.5 * 100 / 1000  # behaviour x starting points / cap
    assert book.score("a") == pytest.approx(fresh)
    assert book.snapshot() == {"a": pytest.approx(fresh), "b": pytest.approx(fresh)}


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


def test_a_failed_attestation_zeroes_the_score_and_the_points() -> None:
    book = TrustBook(["a"])
    book.record("a", True)
    assert book.identity("a") is Identity.UNMEASURED
    book.attested("a", 10.0)
    assert book.identity("a") is Identity.ATTESTED and book.attested_at("a") == 10.0
    assert book.score("a") == pytest.approx(book.behaviour("a") * 101 / 1000)
    book.attestation_failed("a")
    assert book.identity("a") is Identity.FAILED and book.attested_at("a") is None
    assert book.score("a") == 0.0 and book.points("a") == 0.0
    assert book.level("a", 10.0) is Level.L0 and not book.may_vote("a")
    book.record_agreements("a", 200)  # points come back; credibility does not
    assert book.points("a") == 200 and book.score("a") == 0.0


def test_reset_is_a_clean_slate_for_a_new_build() -> None:
    book = TrustBook(["a"])
    book.record("a", False)
    book.attestation_failed("a")
    book.reset("a")
    assert book.score("a") == pytest.approx(0.5 * 100 / 1000)
    assert book.evidence("a") == (0.0, 0.0)
    assert book.points("a") == book.rules.start and book.identity("a") is Identity.UNMEASURED


@pytest.mark.parametrize("call", [
    lambda b: b.record("zz", True),
    lambda b: b.behaviour("zz"),
    lambda b: b.score("zz"),
    lambda b: b.attested("zz", 0.0),
    lambda b: b.level("zz", 0.0),
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


def test_duplicate_names_and_bad_point_rules_are_refused() -> None:
    with pytest.raises(ValueError, match="unique"):
        TrustBook(["a", "a"])
    with pytest.raises(ValueError, match="vote_at <= lead_at <= cap"):
        PointRules(vote_at=600, lead_at=500)
    with pytest.raises(ValueError, match="penalty"):
        PointRules(penalty=-1)
    with pytest.raises(ValueError, match="start"):
        PointRules(start=2000)


@given(votes=st.lists(st.booleans(), max_size=300),
       decay=st.floats(0.01, 1.0),
       failed=st.booleans(),
       prior=st.tuples(st.floats(0.01, 50), st.floats(0.01, 50)))
def test_score_stays_in_unit_interval_and_orders_agreement_above_dissent(votes, decay, failed,
                                                                         prior) -> None:
    book = TrustBook(["a", "yes", "no"], prior=prior, decay=decay)
    if failed:
        book.attestation_failed("a")
    for agreed in votes:
        for name in ("a", "yes", "no"):
            book.record(name, agreed)
        assert 0.0 < book.behaviour("a") < 1.0
        assert 0.0 <= book.score("a") <= 1.0
        assert book.score("a") == (0.0 if failed else pytest.approx(
            book.behaviour("a") * book.points("a") / book.rules.cap))
    # from the same history, one more agreement leaves more trust than one more dissent
    book.record("yes", True)
    book.record("no", False)
    assert book.behaviour("yes") > book.behaviour("no")


def test_credibility_rises_with_points_and_with_behaviour() -> None:
    """The schedulers' credibility is behaviour x points / cap: at equal behaviour it is in
    proportion to points, at equal points it follows behaviour."""
    low, high = (TrustBook(["x"], rules=PointRules(start=start)) for start in (100.0, 400.0))
    assert low.behaviour("x") == high.behaviour("x")
    assert high.score("x") == pytest.approx(4 * low.score("x")) and high.score("x") > 0
    book = TrustBook(["good", "bad"], decay=1.0)
    book.record_agreements("good", 20)
    book.record("bad", False)  # one dissent costs as much as 15 agreements earn
    book.record_agreements("bad", 35)
    assert book.points("good") == book.points("bad") == 120
    assert book.behaviour("good") > book.behaviour("bad")
    assert book.score("good") > book.score("bad")


def test_with_no_point_scale_credibility_is_the_behaviour() -> None:
    book = TrustBook(["x"], rules=PointRules(start=0, vote_at=0, lead_at=0, cap=0))
    book.record("x", True)
    assert book.points("x") == 0.0 and book.score("x") == pytest.approx(book.behaviour("x"))


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


# -- Proof-of-Trust levels -------------------------------------------------------------------

_EVIDENCE = st.sampled_from(["agree", "dissent", "attest", "fail", "batch", "wait"])


@given(st.lists(st.tuples(_EVIDENCE, st.integers(0, 700)), max_size=200))
def test_levels_follow_the_documented_rules(steps: list[tuple[str, int]]) -> None:
    """Whatever the order of evidence: points stay in [0, cap] and never rise on a dissent, a
    failed attestation is L0 with no points, fewer than vote_at points is L1, and L3 needs
    lead_at points and an attestation within fresh_for."""
    book, now, rules = TrustBook(["x"]), 0.0, PointRules()
    for kind, n in steps:
        before = book.points("x")
        if kind == "agree":
            book.record("x", True)
        elif kind == "dissent":
            book.record("x", False)
            assert book.points("x") <= before
            assert book.points("x") == max(0.0, before - rules.penalty)
        elif kind == "attest":
            book.attested("x", now)
        elif kind == "fail":
            book.attestation_failed("x")
            assert book.level("x", now) is Level.L0 and book.points("x") == 0.0
        elif kind == "batch":
            book.record_agreements("x", n)
        else:
            now += n * 10.0
        points, identity = book.points("x"), book.identity("x")
        assert 0.0 <= points <= rules.cap
        level = book.level("x", now)
        at = book.attested_at("x")
        fresh = at is not None and now - at <= rules.fresh_for
        expected = (Level.L0 if identity is Identity.FAILED
                    else Level.L1 if points < rules.vote_at
                    else Level.L3 if points >= rules.lead_at and fresh
                    else Level.L2)
        assert level is expected
        assert book.may_vote("x") == (level >= Level.L2)


def test_a_new_executor_votes_and_four_straight_dissents_put_it_on_probation() -> None:
    book = TrustBook(["x"])
    assert book.level("x", 0.0) is Level.L2
    for _ in range(3):
        book.record("x", False)
    assert book.level("x", 0.0) is Level.L2
    book.record("x", False)
    assert book.level("x", 0.0) is Level.L1
    book.record_agreements("x", 50)
    assert book.level("x", 0.0) is Level.L2


@given(st.integers(1, 9), st.integers(0, 9), st.integers(0, 9))
def test_an_l3_weight_breaks_ties_and_nothing_more(n: int, l3_for: int, l3_against: int) -> None:
    """However many L3 executors sit on each side, a side with more voters outweighs a side
    with fewer, and at equal counts the side with more L3 voters wins."""
    names = [f"e{i}" for i in range(2 * n + 1)]
    book = TrustBook(names)
    for name in names:
        book.record_agreements(name, 1000)
    for_side, against = names[:n + 1], names[n + 1:]
    for name in for_side[:l3_for] + against[:l3_against]:
        book.attested(name, 0.0)
    w = book.weights(0.0)
    assert sum(w[x] for x in for_side) > sum(w[x] for x in against)  # n + 1 voters against n
    tied_for, tied_against = for_side[:n], against
    more = min(l3_for, n) > min(l3_against, n)
    assert (sum(w[x] for x in tied_for) > sum(w[x] for x in tied_against)) == more
    book.attestation_failed("e1")
    assert book.weights(0.0)["e1"] == 0.0


def test_a_carried_count_is_the_other_books_and_identity_stays_this_ones() -> None:
    leader, successor = TrustBook(["a", "b"]), TrustBook(["a", "b"])
    for agreed in (True, True, False, True):
        leader.record("a", agreed)
    successor.attested("a", 5.0)
    successor.carry("a", leader.points("a"), *leader.evidence("a"))
    assert successor.points("a") == leader.points("a")
    assert successor.behaviour("a") == leader.behaviour("a")
    assert successor.identity("a") is Identity.ATTESTED
    for bad in ((-1.0, 0.0, 0.0), (1e9, 0.0, 0.0), (10.0, -1.0, 0.0),
                (10.0, 0.0, float("nan"))):
        with pytest.raises(ValueError):
            successor.carry("b", *bad)
    assert successor.points("b") == PointRules().start
