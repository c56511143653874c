"""Threat-aware scheduling: dissent and refusals raise a decaying threat level, the operator
can declare one, and rotations come faster while it is high."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from endosec.core.threat import Threat, ThreatPolicy, band_of
from tests.gatewayctl import DEMO, Gateway, demo_config, with_env

signals = st.lists(st.tuples(st.sampled_from(["dissent", "refusal"]),
                             st.floats(0, 1000), st.integers(0, 50)), max_size=30)


@given(signals)
def test_the_level_stays_in_range_and_fades_away(steps: list[tuple[str, float, int]]) -> None:
    threat = Threat(ThreatPolicy(half_life=10.0, scale=5.0))
    now = 0.0
    for kind, dt, count in steps:
        now += dt
        before = threat.level(now)
        threat.signal(kind, now, count)
        assert before <= threat.level(now) <= 1.0
    assert threat.level(now + 10.0 * 60) < 0.01  # sixty half-lives later


def test_dissent_weighs_more_than_refusals_and_bands_read_the_level() -> None:
    a, b = Threat(ThreatPolicy(scale=10.0)), Threat(ThreatPolicy(scale=10.0))
    a.signal("dissent", 0.0, 5)
    b.signal("refusal", 0.0, 5)
    assert a.level(0.0) > b.level(0.0) > 0.0
    assert [band_of(x) for x in (0.0, 0.34, 0.7)] == ["calm", "elevated", "high"]
    with pytest.raises(ValueError):
        a.signal("rumour", 0.0)


def test_the_operators_word_is_a_floor_while_it_lasts() -> None:
    threat = Threat()
    threat.declare(0.8, until=100.0)
    assert threat.level(50.0) == 0.8
    assert threat.level(100.0) == 0.0
    with pytest.raises(ValueError):
        threat.declare(1.5, until=1.0)


@pytest.mark.slow
def test_a_dissent_burst_speeds_rotation_up_and_calm_slows_it_down(tmp_path: Path) -> None:
    data = with_env(demo_config(threat={"half_life": 3.0, "scale": 2.0},
                                controller={"rotate_every": 1000.0, "rotate_min": 10.0}),
                    "stdlib", NOTES_BACKDOOR_SECRET=str(DEMO.parent / "secret.txt"))
    gw = Gateway(tmp_path, data, rotating=True)
    try:
        assert gw.status()["threat"] == {"level": 0.0, "band": "calm", "rotate_mean": 1000.0,
                                         "isolated": [], "suspicion": {}}
        assert gw.request("POST", "/notes", {"text": "x"})[0] == 201
        for i in range(2):  # from two clients: attribution holds none of them
            gw.wait_for(lambda s: "stdlib" in s["active"], what="stdlib voting")
            gw.request("GET", "/notes/1", headers={"X-Debug": "letmein"},
                       source=f"127.0.0.{i + 2}")
        risen = gw.wait_for(lambda s: s["threat"]["band"] != "calm", what="the threat rising")
        assert risen["threat"]["rotate_mean"] < 1000.0
        calm = gw.wait_for(lambda s: s["threat"]["band"] == "calm", timeout=30,
                           what="the threat fading")
        assert calm["threat"]["rotate_mean"] > risen["threat"]["rotate_mean"]
        bands = [(e["was"], e["band"]) for e in gw.event_kinds() if e["event"] == "threat"]
        assert bands[0][0] == "calm" and bands[-1][1] == "calm", bands
    finally:
        gw.stop()


@pytest.mark.slow
def test_the_operator_declares_a_threat_with_the_admin_token(tmp_path: Path) -> None:
    gw = Gateway(tmp_path, demo_config(), rotating=True)
    try:
        none = {"Authorization": ""}
        assert gw.request("POST", "/threat", {"level": 0.9, "seconds": 2}, admin=True,
                          headers=none)[0] == 401
        for bad in ({"level": 2}, {"level": 0.5, "seconds": -1}, {"seconds": 3}):
            assert gw.request("POST", "/threat", bad, admin=True)[0] == 400, bad
        code, _, _ = gw.request("POST", "/threat", {"level": 0.9, "seconds": 2}, admin=True)
        assert code == 202
        status = gw.status()["threat"]
        assert status["band"] == "high" and status["rotate_mean"] == pytest.approx(
            300 + (30 - 300) * status["level"], rel=0.01)
        time.sleep(2.5)
        assert gw.wait_for(lambda s: s["threat"]["band"] == "calm", what="calm again")
        kinds = [e for e in gw.event_kinds() if e["event"] in ("admin", "threat")]
        assert any(e.get("action") == "threat" for e in kinds)
    finally:
        gw.stop()


@pytest.mark.slow
def test_components_the_operator_marks_are_isolated_for_as_long(tmp_path: Path) -> None:
    """In the demo aiohttp and node share llhttp: marked as under attack, one of them is
    rotated out and cleansed, they never vote together, and both may again once it ends."""
    gw = Gateway(tmp_path, demo_config(), rotating=False)
    llhttp = "http-parser:llhttp"
    try:
        for bad in ({"level": 0, "components": "llhttp"}, {"level": 0, "components": [1]}):
            assert gw.request("POST", "/threat", bad, admin=True)[0] == 400, bad
        code, _, body = gw.request("POST", "/threat",
                                   {"level": 0, "seconds": 4, "components": [llhttp]},
                                   admin=True)
        assert code == 202 and json.loads(body)["isolated"] == [llhttp]
        status = gw.wait_for(lambda s: len(s["active"]) == 2, what="one llhttp holder out")
        assert status["threat"]["isolated"] == [llhttp]
        assert {"aiohttp", "node"} - set(status["active"])
        for _ in range(10):  # still serving, on two voters
            assert gw.request("GET", "/notes")[0] == 200
        assert {"aiohttp", "node"} - set(gw.status()["active"])
        back = gw.wait_for(lambda s: len(s["active"]) == 3, timeout=20, what="all three again")
        assert back["threat"]["isolated"] == []
        events = gw.event_kinds()
        isolation = [(e["component"], e["isolated"]) for e in events
                     if e["event"] == "isolation"]
        assert isolation == [(llhttp, True), (llhttp, False)]
        assert any(e["event"] == "alert" and e.get("component") == llhttp for e in events)
    finally:
        gw.stop()
