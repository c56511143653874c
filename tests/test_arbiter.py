"""The arbiter: strategies, incremental ballots, and the certainty rule against brute force."""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from endosec.core.arbiter import (
    WEIGHT_SCALE,
    Ballot,
    Majority,
    Plurality,
    Strategy,
    Threshold,
    TrustWeightedMajority,
    Unanimity,
    judge,
    strategy_from_config,
)
from endosec.core.canonical_json import JsonRule
from endosec.core.canonicalise import ExactBytes
from endosec.core.model import ErrorKind, Outcome, Output, Verdict

EXACT = ExactBytes()


def val(name: str, raw: bytes | str) -> Output:
    return Output(name, raw.encode() if isinstance(raw, str) else raw, EXACT)


def err(name: str, kind: ErrorKind = ErrorKind.CRASH) -> Output:
    return Output.failure(name, kind, EXACT)


def feed(ballot: Ballot, outputs: Sequence[Output]) -> list[Verdict | None]:
    return [ballot.add(o) for o in outputs]


# --- examples, one strategy at a time ----------------------------------------------------------

def test_majority_answers_before_the_slowest_and_still_judges_it() -> None:
    ballot = Ballot(Majority(), ["a", "b", "c"])
    assert ballot.add(val("a", "x")) is None
    early = ballot.add(val("b", "x"))
    assert early is not None and early.accepted
    assert early.agreed == ("a", "b") and early.dissented == () and early.failed == ()
    assert ballot.decided is early and ballot.pending == frozenset({"c"})
    assert ballot.add(val("c", "y")) is None  # announced once only
    final = ballot.close()
    assert final.accepted and final.winner is not None and final.winner.raw == b"x"
    assert final.agreed == ("a", "b") and final.dissented == ("c",)
    assert final.dissenters == ("c",)
    assert ballot.complete


def test_majority_of_distinct_values_fails_closed() -> None:
    ballot = Ballot(Majority(), ["a", "b", "c"])
    assert feed(ballot, [val("a", "x"), val("b", "y")]) == [None, None]
    verdict = ballot.add(val("c", "z"))
    assert verdict is not None and verdict.outcome is Outcome.NO_QUORUM
    assert verdict.winner is None and verdict.agreed == () and verdict.dissented == ()


def test_no_quorum_is_announced_as_soon_as_no_value_can_win() -> None:
    ballot = Ballot(Majority(), ["a", "b", "c", "d", "e"])
    verdicts = feed(ballot, [val("a", "x"), err("b"), err("c"), val("d", "y")])
    assert verdicts[:3] == [None, None, None]
    assert verdicts[3] is not None and verdicts[3].outcome is Outcome.NO_QUORUM
    assert verdicts[3].failed == ("b", "c")


def test_failures_alone_hold_back_until_it_is_clear_whether_any_value_comes() -> None:
    ballot = Ballot(Majority(), ["a", "b", "c"])
    assert feed(ballot, [err("a"), err("b", ErrorKind.TIMEOUT)]) == [None, None]
    last = ballot.add(err("c"))
    assert last is not None and last.outcome is Outcome.ALL_FAILED
    assert last.failed == ("a", "b", "c")
    ballot = Ballot(Majority(), ["a", "b", "c"])
    feed(ballot, [err("a"), err("b")])
    last = ballot.add(val("c", "x"))
    assert last is not None and last.outcome is Outcome.NO_QUORUM


def test_errors_never_agree_even_when_they_are_the_same_kind() -> None:
    verdict = judge(Plurality(1), [err("a"), err("b"), val("c", "x")])
    assert verdict.accepted and verdict.agreed == ("c",) and verdict.failed == ("a", "b")


def test_threshold_below_half_waits_while_a_tie_is_possible() -> None:
    ballot = Ballot(Threshold(2), ["a", "b", "c", "d", "e"])
    assert feed(ballot, [val("a", "x"), val("b", "x")]) == [None, None]  # c, d, e may tie at 2+
    assert ballot.add(val("c", "y")) is None
    verdict = ballot.add(val("d", "x"))
    assert verdict is not None and verdict.accepted and verdict.agreed == ("a", "b", "d")


def test_threshold_tie_never_accepts() -> None:
    verdict = judge(Threshold(1), [val("a", "x"), val("b", "y"), err("c")])
    assert verdict.outcome is Outcome.NO_QUORUM


def test_threshold_above_the_voters_cannot_be_met() -> None:
    ballot = Ballot(Threshold(4), ["a", "b", "c"])
    verdict = ballot.add(val("a", "x"))
    assert verdict is not None and verdict.outcome is Outcome.NO_QUORUM


def test_plurality_needs_minimum_support_and_a_strict_lead() -> None:
    five = ["a", "b", "c", "d", "e"]
    won = judge(Plurality(2), [val(n, v) for n, v in zip(five, "xxyzw", strict=True)])
    assert won.accepted and won.agreed == ("a", "b") and won.dissented == ("c", "d", "e")
    tied = judge(Plurality(2), [val(n, v) for n, v in zip(five, "xxyyz", strict=True)])
    assert tied.outcome is Outcome.NO_QUORUM
    thin = judge(Plurality(3), [val(n, v) for n, v in zip(five, "xxyzw", strict=True)])
    assert thin.outcome is Outcome.NO_QUORUM


def test_unanimity_fails_closed_on_one_failure_once_a_value_is_seen() -> None:
    ballot = Ballot(Unanimity(), ["a", "b", "c"])
    assert ballot.add(err("a")) is None
    verdict = ballot.add(val("b", "x"))
    assert verdict is not None and verdict.outcome is Outcome.NO_QUORUM
    all_agree = judge(Unanimity(), [val(n, "x") for n in "abc"])
    assert all_agree.accepted and all_agree.agreed == ("a", "b", "c")


def test_trust_weighted_majority_lets_trusted_voters_outweigh_heads() -> None:
    weights = {"a": 0.9, "b": 0.05, "c": 0.05, "spare": 1.0}  # extra names are ignored
    ballot = Ballot(TrustWeightedMajority(), ["a", "b", "c"], weights)
    early = ballot.add(val("a", "x"))
    assert early is not None and early.accepted  # 0.9 > 0.1 still pending
    feed(ballot, [val("b", "y"), val("c", "y")])
    final = ballot.close()
    assert final.accepted and final.agreed == ("a",) and final.dissented == ("b", "c")
    assert "0.900 of 1.000" in final.reason


def test_trust_weighted_without_weights_counts_heads() -> None:
    verdict = judge(TrustWeightedMajority(), [val("a", "x"), val("b", "x"), val("c", "y")])
    assert verdict.accepted and verdict.agreed == ("a", "b")


def test_weights_are_ignored_by_unweighted_strategies() -> None:
    verdict = judge(Majority(), [val("a", "x"), val("b", "y"), val("c", "y")], {"a": 100.0})
    assert verdict.accepted and verdict.agreed == ("b", "c")


@pytest.mark.parametrize("weights, message", [
    ({"a": 1.0, "b": 1.0}, "no weight for voter 'c'"),
    ({"a": 1.0, "b": -0.5, "c": 1.0}, "weight for 'b'"),
    ({"a": float("nan"), "b": 1.0, "c": 1.0}, "weight for 'a'"),
])
def test_bad_weights_are_rejected(weights: Mapping[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Ballot(TrustWeightedMajority(), ["a", "b", "c"], weights)


def test_zero_total_weight_never_accepts() -> None:
    verdict = judge(TrustWeightedMajority(), [val("a", "x"), val("b", "x")],
                    {"a": 0.0, "b": 0.0})
    assert verdict.outcome is Outcome.NO_QUORUM


# --- ballot mechanics ----------------------------------------------------------------------------

def test_unknown_duplicate_and_late_outputs_are_errors() -> None:
    ballot = Ballot(Majority(), ["a", "b"])
    with pytest.raises(ValueError, match="unknown executor 'z'"):
        ballot.add(val("z", "x"))
    ballot.add(val("a", "x"))
    with pytest.raises(ValueError, match="duplicate output from 'a'"):
        ballot.add(val("a", "x"))
    ballot.close()
    with pytest.raises(ValueError, match="closed"):
        ballot.add(val("b", "x"))


@pytest.mark.parametrize("voters", [[], ["a", "a"]])
def test_voters_must_be_distinct_and_present(voters: list[str]) -> None:
    with pytest.raises(ValueError, match="voter"):
        Ballot(Majority(), voters)


def test_close_counts_silent_voters_as_failed_and_is_idempotent() -> None:
    ballot = Ballot(Majority(), ["a", "b", "c", "d", "e"])
    feed(ballot, [val("a", "x"), val("b", "x"), val("c", "x")])
    final = ballot.close()
    assert final.accepted and final.failed == ("d", "e")
    assert "no answer: 2" in final.reason
    assert ballot.close() is final
    assert ballot.pending == frozenset({"d", "e"}) and not ballot.complete


def test_close_without_any_answer_is_all_failed() -> None:
    verdict = Ballot(Majority(), ["a", "b"]).close()
    assert verdict.outcome is Outcome.ALL_FAILED and verdict.failed == ("a", "b")


def test_outputs_lists_everything_recorded() -> None:
    ballot = Ballot(Majority(), ["a", "b", "c"])
    outs = [val("a", "x"), err("b"), val("c", "y")]
    feed(ballot, outs)
    assert {o.executor for o in ballot.outputs} == {"a", "b", "c"}


def test_reason_never_contains_output_contents() -> None:
    for strategy in (Majority(), Unanimity(), Threshold(1)):
        verdict = judge(strategy, [val("a", "SECRET-1"), val("b", "SECRET-1"),
                                   val("c", "SECRET-2"), err("d")])
        assert "SECRET" not in verdict.reason and verdict.reason


def test_winner_is_the_byte_majority_of_its_class() -> None:
    rule = JsonRule(ignore=["/ts"])
    odd = Output("a", b'{"v": 1, "ts": "forged"}', rule)
    same = [Output(n, b'{"v": 1, "ts": "2024"}', rule) for n in ("b", "c")]
    verdict = judge(Majority(), [odd, *same])
    assert verdict.accepted and verdict.agreed == ("a", "b", "c")
    assert verdict.winner is same[0]


# --- configuration --------------------------------------------------------------------------------

def test_strategy_from_config_builds_every_strategy() -> None:
    assert strategy_from_config("majority") == Majority()
    assert strategy_from_config("threshold", k=2) == Threshold(2)
    assert strategy_from_config("plurality") == Plurality(1)
    assert strategy_from_config("plurality", min_support=2) == Plurality(2)
    assert strategy_from_config("unanimity") == Unanimity()
    assert strategy_from_config("trust-weighted") == TrustWeightedMajority()


@pytest.mark.parametrize("name, kwargs, field", [
    ("threshold", {}, "k"),
    ("threshold", {"k": 0}, "k"),
    ("majority", {"k": 2}, "k"),
    ("unanimity", {"min_support": 2}, "min_support"),
    ("plurality", {"min_support": 0}, "min_support"),
    ("vote", {}, "strategy"),
])
def test_strategy_from_config_names_the_bad_parameter(name: str, kwargs: dict[str, int],
                                                      field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}:"):
        strategy_from_config(name, **kwargs)


# --- properties --------------------------------------------------------------------------------

VALUES = (b"x", b"y", b"z")
ERROR = None  # an answer that is a failure


def _weights(strategy: Strategy, voters: Sequence[str],
             weights: Mapping[str, float] | None) -> dict[str, int]:
    if strategy.weighted and weights is not None:
        return {v: round(weights[v] * WEIGHT_SCALE) for v in voters}
    return dict.fromkeys(voters, 1)


def _reaches(strategy: Strategy, support: int, total: int, n: int) -> bool:
    """The strategies' quorums, written out independently of the implementation."""
    if isinstance(strategy, (Majority, TrustWeightedMajority)):
        return 2 * support > total
    if isinstance(strategy, Threshold):
        return support >= strategy.k
    if isinstance(strategy, Plurality):
        return support >= strategy.min_support
    assert isinstance(strategy, Unanimity)
    return support == n


def oracle(strategy: Strategy, voters: Sequence[str], weights: Mapping[str, float] | None,
           answers: Mapping[str, bytes | None]) -> tuple[Outcome, bytes | None]:
    """The final outcome and winning value by direct counting (absent voters failed)."""
    w = _weights(strategy, voters, weights)
    support: dict[bytes, int] = {}
    for name, raw in answers.items():
        if raw is not None:
            support[raw] = support.get(raw, 0) + w[name]
    if not support:
        return Outcome.ALL_FAILED, None
    best = max(support.values())
    leaders = [raw for raw, s in support.items() if s == best]
    if len(leaders) == 1 and _reaches(strategy, best, sum(w.values()), len(voters)):
        return Outcome.ACCEPTED, leaders[0]
    return Outcome.NO_QUORUM, None


Election = tuple[Strategy, list[str], dict[str, float] | None, list[tuple[str, bytes | None]]]


@st.composite
def elections(draw: st.DrawFn, max_voters: int = 7) -> Election:
    n = draw(st.integers(1, max_voters))
    voters = [f"e{i}" for i in range(n)]
    strategy: Strategy = draw(st.sampled_from([
        Majority(), Threshold(draw(st.integers(1, n + 1))), Plurality(draw(st.integers(1, 3))),
        Unanimity(), TrustWeightedMajority()]))
    weights = None
    if draw(st.booleans()):
        weight = st.sampled_from([0.0, 0.25, 0.5, 1.0]) | st.floats(0, 1)
        weights = {v: draw(weight) for v in voters}
    heard = draw(st.lists(st.sampled_from(voters), unique=True))
    answers = [(v, draw(st.sampled_from([*VALUES, ERROR]))) for v in heard]
    return strategy, voters, weights, answers


def _output(name: str, raw: bytes | None) -> Output:
    return err(name) if raw is None else val(name, raw)


def _summary(verdict: Verdict) -> tuple[object, ...]:
    winner = verdict.winner.raw if verdict.winner is not None else None
    return (verdict.outcome, winner, frozenset(verdict.agreed), frozenset(verdict.dissented),
            frozenset(verdict.failed))


@given(elections(), st.randoms(use_true_random=False))
def test_final_verdict_matches_counting_and_ignores_arrival_order(election: Election,
                                                                 rnd: random.Random) -> None:
    strategy, voters, weights, answers = election
    first = Ballot(strategy, voters, weights)
    feed(first, [_output(n, r) for n, r in answers])
    shuffled = list(answers)
    rnd.shuffle(shuffled)
    second = Ballot(strategy, voters, weights)
    feed(second, [_output(n, r) for n, r in shuffled])
    a, b = first.close(), second.close()
    assert _summary(a) == _summary(b)
    assert (a.outcome, a.winner.raw if a.winner else None) == oracle(
        strategy, voters, weights, dict(answers))
    if a.accepted:  # on no-quorum there is no winner to agree or dissent with
        assert set(a.agreed) | set(a.dissented) | set(a.failed) == set(voters)
    else:
        assert a.agreed == a.dissented == ()
    assert set(a.failed) == {v for v in voters if dict(answers).get(v, ERROR) is ERROR}


@given(elections())
def test_accepted_means_quorum_and_a_strict_lead(election: Election) -> None:
    strategy, voters, weights, answers = election
    verdict = judge_with(strategy, voters, weights, answers)
    w = _weights(strategy, voters, weights)
    support: dict[bytes, int] = {}
    for name, raw in answers:
        if raw is not None:
            support[raw] = support.get(raw, 0) + w[name]
    top = sorted(support.values(), reverse=True)
    if verdict.accepted:
        assert verdict.winner is not None
        win = support.pop(verdict.winner.raw)
        assert _reaches(strategy, win, sum(w.values()), len(voters))
        assert all(win > s for s in support.values())
        assert sum(w[a] for a in verdict.agreed) == win
    if not top or (len(top) > 1 and top[0] == top[1]):
        assert not verdict.accepted  # ties and pure failures never accept


def judge_with(strategy: Strategy, voters: Sequence[str], weights: Mapping[str, float] | None,
               answers: Sequence[tuple[str, bytes | None]]) -> Verdict:
    ballot = Ballot(strategy, voters, weights)
    feed(ballot, [_output(n, r) for n, r in answers])
    return ballot.close()


@given(elections())
def test_early_decision_equals_the_final_one(election: Election) -> None:
    strategy, voters, weights, answers = election
    ballot = Ballot(strategy, voters, weights)
    early = [v for v in feed(ballot, [_output(n, r) for n, r in answers]) if v is not None]
    assert len(early) <= 1
    final = ballot.close()
    if early:
        assert early[0] is ballot.decided
        assert early[0].outcome is final.outcome
        assert (early[0].winner is None) == (final.winner is None)
        if final.winner is not None and early[0].winner is not None:
            assert early[0].winner.raw == final.winner.raw
            assert set(early[0].agreed) <= set(final.agreed)
    if len(answers) == len(voters):
        assert early  # a complete ballot is always decided


def _completions(pending: Sequence[str], known: Sequence[bytes]
                 ) -> itertools.product[tuple[bytes | None, ...]]:
    """Every way the pending voters could still answer: a known value, a new one, or failure."""
    fresh = [f"new{i}".encode() for i in range(len(pending))]
    return itertools.product([*known, *fresh, ERROR], repeat=len(pending))


@settings(max_examples=150, deadline=None)
@given(elections(max_voters=4))
def test_decision_is_announced_exactly_when_it_becomes_certain(election: Election) -> None:
    strategy, voters, weights, answers = election
    ballot = Ballot(strategy, voters, weights)
    for i in range(len(answers) + 1):
        if i:
            name, raw = answers[i - 1]
            ballot.add(_output(name, raw))
        heard = dict(answers[:i])
        pending = [v for v in voters if v not in heard]
        known = sorted({r for r in heard.values() if r is not None})
        futures = {oracle(strategy, voters, weights, heard | dict(zip(pending, c, strict=True)))
                   for c in _completions(pending, known)}
        certain = len(futures) == 1
        assert (ballot.decided is not None) == certain, (i, futures)
        if certain:
            assert ballot.decided is not None
            winner = ballot.decided.winner.raw if ballot.decided.winner else None
            assert {(ballot.decided.outcome, winner)} == futures


@given(elections(), st.data())
def test_a_discounted_voter_never_lends_support(election: Election, data: st.DataObject) -> None:
    """Strict voting: a discounted voter is heard, yet the verdict accepts exactly what it
    would if that voter had failed, with the same quorum; early still equals final."""
    strategy, voters, weights, answers = election
    discounted = data.draw(st.sets(st.sampled_from(voters)))
    ballot = Ballot(strategy, voters, weights)
    ballot.discount(discounted)
    early = [v for v in feed(ballot, [_output(n, r) for n, r in answers]) if v is not None]
    final = ballot.close()
    silenced = judge_with(strategy, voters, weights,
                          [(n, None if n in discounted else r) for n, r in answers])
    assert final.accepted == silenced.accepted
    if final.accepted:
        assert final.winner is not None and silenced.winner is not None
        assert final.winner.raw == silenced.winner.raw
        assert set(final.agreed) >= set(silenced.agreed)
    if early:
        assert early[0].outcome is final.outcome
    assert ("; discounted: " in final.reason) == (bool(discounted)
                                                  and final.outcome is not Outcome.ALL_FAILED)


def test_discounting_comes_before_the_first_output() -> None:
    ballot = Ballot(Majority(), ["a", "b", "c"])
    ballot.discount(["c", "nobody"])
    ballot.add(val("a", b"x"))
    with pytest.raises(ValueError, match="before any output"):
        ballot.discount(["b"])
    assert ballot.add(val("c", b"x")) is None, "c's agreement lends no support"
    verdict = ballot.add(val("b", b"x"))
    assert verdict is not None and verdict.accepted
    assert verdict.reason == "majority: accepted with support 2 of 3 (quorum 2); discounted: c"
