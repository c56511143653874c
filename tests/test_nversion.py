"""The in-process N-version API: consensus, dissent, failures, timeouts and execution modes."""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from endosec.core.arbiter import Majority, TrustWeightedMajority, Unanimity
from endosec.core.canonical_json import JsonRule
from endosec.core.model import Outcome, Verdict
from endosec.nversion import NoConsensus, NVersion

ROOT = Path(__file__).resolve().parent.parent


# Top-level so that the process executor can pickle them.
def square(x: int) -> int:
    return x * x


def square_by_sum(x: int) -> int:
    return sum(x for _ in range(x))


def square_off_by_one(x: int) -> int:
    return x * x + 1


def explode(x: int) -> int:
    raise RuntimeError(f"cannot square {x}")


def constant(value: object):
    return lambda *args: value


def test_consensus_is_returned_and_the_dissenter_named() -> None:
    nv = NVersion({"a": square, "b": square_by_sum, "c": square_off_by_one})
    assert nv(7) == 49
    verdict = nv.vote(7)
    assert verdict.outcome is Outcome.ACCEPTED
    assert set(verdict.agreed) == {"a", "b"}
    assert verdict.dissented == ("c",)
    assert verdict.failed == ()


def test_the_winner_own_value_is_returned() -> None:
    answer = [1, 2]
    nv = NVersion({"a": constant(answer), "b": constant(answer), "c": constant([3])})
    assert nv() is answer


def test_a_tie_fails_closed_with_the_verdict() -> None:
    nv = NVersion({"a": square, "b": square_off_by_one})
    with pytest.raises(NoConsensus) as caught:
        nv(3)
    verdict = caught.value.verdict
    assert verdict.outcome is Outcome.NO_QUORUM
    assert verdict.winner is None
    assert caught.value.errors == {}


def test_all_failures_carry_every_error() -> None:
    def other_explosion(x: int) -> int:
        raise KeyError(x)

    nv = NVersion({"a": explode, "b": other_explosion})
    with pytest.raises(NoConsensus) as caught:
        nv(5)
    assert caught.value.verdict.outcome is Outcome.ALL_FAILED
    assert set(caught.value.verdict.failed) == {"a", "b"}
    assert isinstance(caught.value.errors["a"], RuntimeError)
    assert isinstance(caught.value.errors["b"], KeyError)
    assert "a: RuntimeError: cannot square 5" in str(caught.value)


def test_an_exception_is_a_failure_not_a_value() -> None:
    nv = NVersion({"a": square, "b": square_by_sum, "c": explode})
    assert nv(4) == 16
    verdict = nv.vote(4)
    assert verdict.failed == ("c",)
    assert verdict.dissented == ()


def test_unanimity_refuses_when_one_version_crashes() -> None:
    nv = NVersion({"a": square, "b": explode}, strategy=Unanimity())
    with pytest.raises(NoConsensus) as caught:
        nv(2)
    assert "b" in caught.value.verdict.dissenters
    assert isinstance(caught.value.errors["b"], RuntimeError)


def test_a_thread_that_overruns_the_timeout_is_a_timeout_failure() -> None:
    release = threading.Event()

    def stuck(x: int) -> int:
        release.wait()
        return x * x

    nv = NVersion({"a": square, "b": square_by_sum, "c": stuck}, timeout=0.5,
                  executor="thread")
    try:
        verdict = nv.vote(6)
    finally:
        release.set()
    assert verdict.accepted
    assert verdict.winner is not None and verdict.winner.raw == b"36"
    assert verdict.failed == ("c",)


def test_timed_out_versions_are_named_in_the_error() -> None:
    release = threading.Event()

    def stuck(x: int) -> int:
        release.wait()
        return x

    nv = NVersion({"a": stuck, "b": stuck}, timeout=0.05, executor="thread")
    try:
        with pytest.raises(NoConsensus) as caught:
            nv(1)
    finally:
        release.set()
    assert caught.value.verdict.outcome is Outcome.ALL_FAILED
    assert all(isinstance(e, TimeoutError) for e in caught.value.errors.values())


def test_inline_counts_a_late_answer_as_a_timeout() -> None:
    def slow(x: int) -> int:
        time.sleep(0.2)
        return x * x

    nv = NVersion({"a": square, "b": square_by_sum, "c": slow}, timeout=0.05)
    verdict = nv.vote(3)
    assert verdict.accepted
    assert verdict.failed == ("c",)


def test_thread_mode_votes() -> None:
    nv = NVersion({"a": square, "b": square_by_sum, "c": square_off_by_one},
                  executor="thread")
    assert nv(9) == 81
    assert nv.vote(9).dissented == ("c",)


def test_process_mode_votes() -> None:
    with NVersion({"a": square, "b": square_by_sum, "c": explode},
                  executor="process") as nv:
        assert nv(12) == 144
        verdict = nv.vote(12)
    assert verdict.failed == ("c",)
    assert set(verdict.agreed) == {"a", "b"}


def die(x: int) -> int:
    os._exit(3)


def test_a_version_that_kills_its_process_fails_alone() -> None:
    with NVersion({"a": square, "b": square_by_sum, "c": die}, executor="process") as nv:
        first = nv.vote(3)
        second = nv.vote(4)
    assert first.failed == second.failed == ("c",)
    assert second.winner is not None and second.winner.raw == b"16"


async def test_process_mode_votes_asynchronously() -> None:
    with NVersion({"a": square, "b": square_by_sum, "c": square_off_by_one},
                  executor="process") as nv:
        assert await nv.acall(5) == 25
        verdict = await nv.avote(5)
    assert verdict.dissented == ("c",)


def test_process_mode_needs_picklable_versions() -> None:
    with pytest.raises(ValueError, match="versions\\['b'\\]"):
        NVersion({"a": square, "b": lambda x: x}, executor="process")


async def test_acall_answers_before_a_slow_version_and_still_judges_it() -> None:
    release = asyncio.Event()
    judged = asyncio.Event()
    finals: list[Verdict] = []

    async def fast(x: int) -> int:
        return x * x

    async def slow(x: int) -> int:
        await release.wait()
        return x + 1

    def record(verdict: Verdict) -> None:
        finals.append(verdict)
        judged.set()

    nv = NVersion({"a": fast, "b": fast, "c": slow}, on_verdict=record)
    assert await nv.acall(4) == 16
    assert not release.is_set()
    assert finals == []
    release.set()
    await asyncio.wait_for(judged.wait(), 10)
    assert finals[0].accepted
    assert set(finals[0].agreed) == {"a", "b"}
    assert finals[0].dissented == ("c",)


async def test_acall_runs_sync_versions_in_threads_and_judges_stragglers() -> None:
    release = threading.Event()
    judged = asyncio.Event()
    finals: list[Verdict] = []

    def stuck(x: int) -> int:
        release.wait()
        return x * x

    def record(verdict: Verdict) -> None:
        finals.append(verdict)
        judged.set()

    nv = NVersion({"a": square, "b": square_by_sum, "c": stuck}, on_verdict=record)
    try:
        assert await nv.acall(8) == 64
        assert finals == []
    finally:
        release.set()
    await asyncio.wait_for(judged.wait(), 10)
    assert set(finals[0].agreed) == {"a", "b", "c"}


async def test_acall_reports_async_timeouts_and_crashes() -> None:
    never = asyncio.Event()

    async def hang(x: int) -> int:
        await never.wait()
        return x

    async def own_timeout(x: int) -> int:
        raise TimeoutError("the version's own timeout")

    nv = NVersion({"a": square, "b": hang, "c": own_timeout}, timeout=0.5)
    with pytest.raises(NoConsensus) as caught:
        await nv.acall(2)
    verdict = caught.value.verdict
    assert set(verdict.failed) == {"b", "c"}
    assert str(caught.value.errors["c"]) == "the version's own timeout"
    assert "b took longer" in str(caught.value.errors["b"])


async def test_cancelling_acall_cancels_the_versions() -> None:
    started = asyncio.Event()
    stopped = asyncio.Event()

    async def hang(x: int) -> int:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            stopped.set()
            raise
        return x

    nv = NVersion({"a": hang, "b": hang})
    call = asyncio.ensure_future(nv.acall(1))
    await asyncio.wait_for(started.wait(), 10)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await asyncio.wait_for(stopped.wait(), 10)


def test_weights_reach_a_trust_weighted_strategy() -> None:
    nv = NVersion({"a": square, "b": square_off_by_one, "c": square_off_by_one},
                  strategy=TrustWeightedMajority(), weights={"a": 0.9, "b": 0.1, "c": 0.1})
    assert nv(3) == 9


def test_sync_calls_report_the_final_verdict() -> None:
    finals: list[Verdict] = []
    nv = NVersion({"a": square, "b": square_by_sum}, on_verdict=finals.append)
    nv(2)
    nv.vote(3)
    assert [v.winner.raw for v in finals if v.winner] == [b"4", b"9"]


def test_sync_entry_points_refuse_async_versions() -> None:
    async def parse(x: int) -> int:
        return x

    nv = NVersion({"a": square, "b": parse})
    with pytest.raises(TypeError, match="acall"):
        nv(1)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"versions": {}}, "versions"),
     ({"versions": {"a": square}, "timeout": 0}, "timeout"),
     ({"versions": {"a": square}, "executor": "fiber"}, "executor")],
)
def test_bad_configuration_names_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        NVersion(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("left", "right"),
    [(1, "1"), (b"1", 1), (b'"a"', "a"), (1, 1.0), (True, 1), ({"1": 0}, {"1": False}),
     (0.0, -0.0)],
)
def test_values_of_different_types_never_agree(left: object, right: object) -> None:
    nv = NVersion({"a": constant(left), "b": constant(right)}, strategy=Unanimity())
    assert not nv.vote().accepted


def test_tuples_agree_with_lists_and_nan_with_nan() -> None:
    nv = NVersion({"a": constant((1, [math.nan])), "b": constant([1, (math.nan,)])},
                  strategy=Unanimity())
    assert nv.vote().accepted


def test_unencodable_values_are_malformed_failures() -> None:
    nv = NVersion({"a": constant({1: "x"}), "b": constant({1, 2}), "c": constant({"1": "x"})})
    with pytest.raises(NoConsensus) as caught:
        nv()
    assert set(caught.value.verdict.failed) == {"a", "b"}
    assert isinstance(caught.value.errors["a"], TypeError)
    assert isinstance(caught.value.errors["b"], TypeError)


def test_custom_encoder_and_canonicaliser() -> None:
    by_set = NVersion({"a": constant({1, 2}), "b": constant(frozenset({2, 1}))},
                      encode=lambda v: repr(sorted(v)).encode(), strategy=Unanimity())
    assert by_set() == {1, 2}
    stamped = NVersion({"a": constant({"v": 1, "ts": 10}), "b": constant({"v": 1, "ts": 11})},
                       canonicaliser=JsonRule(ignore=["/ts"]), strategy=Unanimity())
    assert stamped()["v"] == 1


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)


def same(a: object, b: object) -> bool:
    """Type-strict equality: what the default encoding must decide."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and repr(a) == repr(b)


@given(json_values, json_values)
def test_default_encoding_agrees_exactly_on_equal_values(a: object, b: object) -> None:
    nv = NVersion({"a": constant(a), "b": constant(b)}, strategy=Unanimity())
    assert nv.vote().accepted == same(a, b)
    assert NVersion({"a": constant(a), "b": constant(a)}, strategy=Majority()).vote().accepted


@pytest.mark.parametrize("script", ["json_parsers.py", "hashes.py"])
def test_examples_run(script: str) -> None:
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "nversion" / script)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "dissented=" in done.stdout
