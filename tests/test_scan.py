"""Scanning: a client that gets error after error raises the threat level."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from endosec.core.scan import ScanPolicy, Scans
from tests.gatewayctl import Gateway, demo_config

POLICY = ScanPolicy(errors=50, window=10.0, clients=3)


def test_a_burst_within_the_window_is_one_scan_and_the_count_starts_over() -> None:
    scans = Scans(POLICY)
    assert scans.observe({"10.0.0.1": 30}, 1.0) == []
    assert scans.observe({"10.0.0.1": 19, "10.0.0.2": 5}, 2.0) == []
    assert scans.observe({"10.0.0.1": 1}, 3.0) == [("10.0.0.1", 50)]
    assert scans.observe({"10.0.0.1": 49}, 4.0) == []  # counted afresh
    assert scans.observe({"10.0.0.1": 1}, 5.0) == [("10.0.0.1", 50)]


def test_errors_spread_wider_than_the_window_are_no_scan() -> None:
    scans = Scans(POLICY)
    for t in range(100):
        assert scans.observe({"10.0.0.1": 4}, float(t)) == []  # 40 in any 10 s


def test_the_quietest_clients_are_forgotten_past_the_bound() -> None:
    scans = Scans(POLICY)
    scans.observe({"a": 40}, 1.0)
    scans.observe({"b": 1, "c": 1}, 2.0)
    scans.observe({"d": 1}, 3.0)  # a, quiet longest, goes
    assert scans.observe({"a": 10}, 4.0) == []
    with pytest.raises(ValueError):
        ScanPolicy(window=0)


@given(st.lists(st.tuples(st.floats(0, 1), st.integers(0, 60)), max_size=200))
def test_a_scan_never_comes_before_its_errors_are_in(steps: list[tuple[float, int]]) -> None:
    """A burst needs ``errors`` answers within the window, and each error counts once."""
    scans, now, total, bursts = Scans(POLICY), 0.0, 0, 0
    for dt, n in steps:
        now += dt
        total += n
        bursts += len(scans.observe({"x": n}, now))
    assert bursts * POLICY.errors <= total


def test_a_client_trying_missing_paths_raises_the_threat(tmp_path: Path) -> None:
    gw = Gateway(tmp_path, demo_config(threat={"scan_errors": 40, "scan_window": 10}))
    try:
        gw.wait_for(lambda s: len(s["active"]) == 3, what="three voters")
        for i in range(20):  # an honest client's misses stay below the bar
            assert gw.request("GET", f"/notes/{1000 + i}", source="127.0.0.2")[0] == 404
        assert gw.status()["threat"]["level"] == 0
        for i in range(45):
            assert gw.request("GET", f"/admin{i}.php", source="127.0.0.3")[0] == 404
        status = gw.wait_for(lambda s: s["threat"]["level"] > 0, what="a threat", timeout=5)
        assert status["threat"]["level"] > 0.05
        scans = [e for e in gw.event_kinds() if e["event"] == "scan"]
        assert [e["client"] for e in scans] == ["127.0.0.3"], scans
        assert 40 <= scans[0]["errors"] <= 45
    finally:
        gw.stop()
