"""The latency rule: each executor against its own baseline of lags behind its peers."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from endosec import _native
from endosec.config import load_config
from endosec.core.behaviour import Judge, Sample
from endosec.core.lag import LagPolicy, Lags, LagTrack, median_lag
from endosec.gateway.engine import MimicGateway
from endosec.gateway.native import NativePlane
from endosec.observe.events import EventLog
from tests.gatewayctl import DEMO
from tests.test_isolation import Runtime

POLICY = LagPolicy(min_requests=30, route_requests=30, first_windows=5, baseline_windows=60,
                   floor_us=150.0, spread=1.0, windows=3)
PROGRAMS = frozenset({"/usr/bin/node"})


def window(lag: float, n: int = 100, route: str = "GET /") -> Lags:
    return {route: {lag: n}}


def test_the_window_median_is_read_from_the_counts() -> None:
    assert median_lag({}) == 0.0
    assert median_lag({12.5: 10, 212.5: 30}) == 212.5
    assert median_lag({12.5: 10, 212.5: 30, -87.5: 50}) == -87.5


def test_native_lags_arrive_as_counts_per_route_at_their_bins_middle() -> None:
    side, width = _native.LAG_SIDE, _native.LAG_BIN_US

    class Plane:
        def take_lags(self) -> dict[str, dict[str, list[int]]]:
            counts = [0] * (2 * side + 1)
            counts[side], counts[side + 8] = 10, 30
            return {"node": {"GET /notes": counts}}

    plane = object.__new__(NativePlane)
    plane.native = Plane()  # type: ignore[assignment]
    assert plane.take_lags() == {"node": {"GET /notes": {width / 2: 10, 8.5 * width: 30}}}


def test_a_step_above_the_baseline_is_reported_after_windows_in_a_row() -> None:
    track = LagTrack()
    for lag in (10.0, 20.0, 0.0, 30.0, 10.0):  # the baseline: about 10 us
        assert track.observe(1.0, window(lag), POLICY) is None
    assert track.observe(1.0, window(400.0), POLICY) is None
    assert track.observe(1.0, window(400.0), POLICY) is None
    assert track.observe(1.0, window(9000.0, n=5), POLICY) is None  # too few: no say yet
    why = track.observe(1.0, window(400.0), POLICY)
    assert why is not None and "(GET /)" in why and "390 µs later than usual" in why
    # a quiet window clears the count
    assert track.observe(1.0, window(10.0), POLICY) is None
    assert track.observe(1.0, window(400.0), POLICY) is None


def test_few_requests_gather_into_one_window() -> None:
    track = LagTrack()
    for _ in range(POLICY.first_windows * 3):
        assert track.observe(1.0, window(10.0, n=10), POLICY) is None
    assert len(track.routes["GET /"].base) == POLICY.first_windows
    said = [track.observe(1.0, window(400.0, n=10), POLICY) for _ in range(3 * POLICY.windows)]
    assert said[:-1] == [None] * (len(said) - 1) and said[-1] is not None


def test_lags_spread_over_routes_are_judged_together() -> None:
    """Each request against its own route's bar, pooled: a slowdown shows as soon as the
    whole traffic fills a window, however thinly it spreads over routes."""
    track = LagTrack()
    routes = [f"GET /r{i}" for i in range(10)]
    for _ in range(POLICY.first_windows):
        assert track.observe(1.0, {r: {10.0 * i: 30} for i, r in enumerate(routes)},
                             POLICY) is None
    said = [track.observe(1.0, {r: {10.0 * i + 400: 3} for i, r in enumerate(routes)},
                          POLICY) for _ in range(POLICY.windows)]
    assert said[:-1] == [None] * (POLICY.windows - 1) and said[-1] is not None
    assert "400 µs later than usual" in said[-1]


def test_each_route_has_its_own_baseline() -> None:
    """A stack slow on one route is not slow when the workload moves there."""
    track = LagTrack()
    for _ in range(POLICY.first_windows):
        assert track.observe(1.0, {"GET /fast": {10.0: 100}, "GET /slow": {900.0: 100}},
                             POLICY) is None
    for _ in range(2 * POLICY.windows):
        assert track.observe(1.0, window(900.0, route="GET /slow"), POLICY) is None
    for _ in range(POLICY.windows - 1):
        assert track.observe(1.0, window(900.0, route="GET /fast"), POLICY) is None
    why = track.observe(1.0, window(900.0, route="GET /fast"), POLICY)
    assert why is not None and "GET /fast" in why


def test_a_run_that_broke_a_rule_leaves_the_baseline() -> None:
    track = LagTrack()
    for lag in (0.0, 0.0, 0.0, 0.0):
        track.observe(1.0, window(lag), POLICY)
    track.observe(2.0, window(900.0), POLICY)  # run 2 enters the baseline (only 4 were in)...
    track.forget(2.0)  # ...and leaves it when run 2 is caught
    assert [b for _, b in track.routes["GET /"].base] == [0.0] * 4


@given(st.floats(-500, 500), st.lists(st.floats(-140, 140), min_size=5, max_size=80))
def test_wobble_within_the_floor_is_never_reported(usual: float, wobble: list[float]) -> None:
    track = LagTrack()
    for _ in range(POLICY.first_windows):
        track.observe(1.0, window(usual), POLICY)
    for w in wobble:
        assert track.observe(1.0, window(usual + w), POLICY) is None


@given(st.floats(-500, 500), st.floats(160, 2000))
def test_a_sustained_shift_past_the_floor_is_always_reported(usual: float, shift: float) -> None:
    track = LagTrack()
    for _ in range(POLICY.first_windows):
        track.observe(1.0, window(usual), POLICY)
    said = [track.observe(1.0, window(usual + shift), POLICY) for _ in range(POLICY.windows)]
    assert said[:-1] == [None] * (POLICY.windows - 1) and said[-1] is not None


@given(st.lists(st.one_of(st.floats(-100, 100), st.just(1000.0)), max_size=60))
def test_a_baseline_never_learns_a_window_over_its_bar(windows: list[float]) -> None:
    """Honest windows wobble; an implant's (1000 us) never enters the baseline, however it
    interleaves with them (lags come only from unanimous rounds: the data plane's tests)."""
    track = LagTrack()
    for _ in range(POLICY.first_windows):
        track.observe(1.0, window(0.0), POLICY)
    for lag in windows:
        track.observe(1.0, window(lag), POLICY)
        assert all(b < 1000.0 for _, b in track.routes["GET /"].base)


def test_the_judge_holds_voters_to_their_baseline_across_runs() -> None:
    judge = Judge()
    at = 0.0

    def judged(lag: float, *, started: float = 1.0, voting: bool = True) -> list[str]:
        nonlocal at
        at += 1.0
        sample = Sample("node", started, 0, PROGRAMS, at=at, lags=window(lag), voting=voting)
        return [r.rule for r in judge.judge([sample], at)]

    for _ in range(6):
        assert judged(20.0) == []
    # cleansed: a new run, held to the same baseline (the stack is as fast as before)
    assert judged(700.0, started=2.0) == [] and judged(700.0, started=2.0) == []
    assert judged(700.0, started=2.0) == ["latency"]
    assert judge.flags == {"node": frozenset({"latency"})}
    assert judged(700.0, started=2.0) == []  # once per run
    # a spare or an executor on probation is not judged on lags it does not have
    assert judged(900.0, started=3.0, voting=False) == []


@pytest.mark.parametrize("latency", ["warn", "quarantine"])
def test_strict_voting_discounts_on_latency_only_where_it_quarantines(
        tmp_path: Path, latency: str) -> None:
    """A latency warning may be a workload's move to a slow route: with behaviour.latency
    warn, strict voting does not take that voter's support away; any other rule does."""
    config = load_config(DEMO)
    config = config.model_copy(update={
        "arbiter": config.arbiter.model_copy(update={"strict": True}),
        "behaviour": config.behaviour.model_copy(update={"latency": latency})})
    gw = MimicGateway(config, scratch_root=tmp_path, events=EventLog())
    Runtime(gw.controller)  # every executor activated, as a runtime that never fails would
    voter = gw.controller.voters[0]
    for at in range(1, 10):
        gw._judge.judge([Sample(voter, 1.0, 0, PROGRAMS, at=float(at),
                                lags=window(20.0 if at < 7 else 900.0))], float(at))
    assert gw._judge.flags == {voter: frozenset({"latency"})}
    assert gw.discounted == ((voter,) if latency == "quarantine" else ())
    gw._judge.judge([Sample(voter, 1.0, 0, PROGRAMS | {"/usr/bin/dash"}, at=10.0)], 10.0)
    assert gw.discounted == (voter,)


def test_a_bad_lag_policy_is_refused() -> None:
    with pytest.raises(ValueError):
        LagPolicy(windows=0)
    with pytest.raises(ValueError):
        LagPolicy(first_windows=10, baseline_windows=5)
    with pytest.raises(ValueError):
        LagPolicy(floor_us=float("nan"))
