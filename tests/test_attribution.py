"""Dissent traced to clients: one client cannot quarantine executor after executor."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from endosec.core.attribution import Attribution, AttributionPolicy
from tests.gatewayctl import DEMO, Gateway, demo_config, with_env


def test_a_client_is_held_responsible_after_its_quota_of_quarantines() -> None:
    a = Attribution(AttributionPolicy(quarantines=2, window=60.0, block=300.0))
    assert not a.caused("10.0.0.1", "GET /x", 1, now=0.0)
    assert not a.held("10.0.0.1", 1.0)
    assert a.caused("10.0.0.1", "GET /x", 1, now=10.0)
    assert a.held("10.0.0.1", 11.0) and a.refused(11.0) == ("10.0.0.1",)
    assert not a.caused("10.0.0.1", "GET /x", 1, now=12.0), "already held: counted once"
    assert not a.held("10.0.0.2", 11.0), "other clients are not affected"
    assert not a.held("10.0.0.1", 310.0) and a.refused(310.0) == ()


def test_quarantines_spread_beyond_the_window_never_add_up() -> None:
    a = Attribution(AttributionPolicy(quarantines=2, window=60.0, block=300.0))
    for t in (0.0, 61.0, 122.0, 183.0):
        assert not a.caused("c", "GET /x", 1, now=t)


def test_quarantines_on_different_requests_are_an_executors_doing_not_the_clients() -> None:
    """An implant dissents on whatever passes: one busy client (a load balancer) sees several
    executors quarantined on different requests and is not blamed for it."""
    a = Attribution(AttributionPolicy(quarantines=2, window=60.0, block=300.0))
    for t, path in enumerate(("/a", "/b", "/notes/1", "/notes/2")):
        assert not a.caused("lb", f"GET {path}", 1, now=float(t))
    assert a.caused("lb", "GET /a", 1, now=5.0), "the same request again: the input's doing"


def test_verdicts_without_a_quarantine_or_a_client_count_for_nothing() -> None:
    a = Attribution(AttributionPolicy(quarantines=1))
    assert not a.caused("c", "GET /x", 0, now=0.0)
    assert not a.caused(None, "GET /x", 3, now=0.0)
    assert a.caused("c", "GET /x", 1, now=1.0)


@pytest.mark.parametrize("kwargs", [{"quarantines": 0}, {"window": 0.0},
                                    {"block": float("nan")}])
def test_a_bad_policy_is_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        AttributionPolicy(**kwargs)


def _backdoored(tmp_path: Path, **overrides: Any) -> Gateway:
    """The demo with a backdoor in stdlib (``X-Debug: letmein`` leaks: it dissents)."""
    data = with_env(demo_config(**overrides), "stdlib",
                    NOTES_BACKDOOR_SECRET=str(DEMO.parent / "secret.txt"))
    return Gateway(tmp_path, data)


def _held_after_two_quarantines(gw: Gateway) -> dict[str, Any]:
    """The same request from 127.0.0.1 quarantines stdlib twice; the alert holding the client."""
    assert gw.request("POST", "/notes", {"text": "x"})[0] == 201
    for round_ in (1, 2):
        gw.wait_for(lambda s: "stdlib" in s["active"], what="stdlib voting")
        assert gw.request("GET", "/notes/1", headers={"X-Debug": "letmein"})[0] == 200
        gw.wait_for(lambda s, r=round_: gw.executor("stdlib")["counters"]["quarantines"]
                    >= r, what=f"quarantine {round_}")
    [alert] = [e for e in gw.event_kinds() if e["event"] == "alert" and "client" in e]
    return alert


@pytest.mark.slow
def test_one_client_cannot_quarantine_executors_over_and_over(tmp_path: Path) -> None:
    gw = _backdoored(tmp_path, attribution={"quarantines": 2, "window": 60, "block": 300,
                                            "refuse": True})
    try:
        alert = _held_after_two_quarantines(gw)
        assert alert["client"] == "127.0.0.1" and "no longer counts" in alert["message"]
        gw.wait_for(lambda s: "stdlib" in s["active"], what="stdlib back")
        status, _, body = gw.request("GET", "/notes/1", headers={"X-Debug": "letmein"})
        assert status == 429 and b"repeated dissent" in body, (status, body)
        assert gw.request("GET", "/notes/1", source="127.0.0.2")[0] == 200, "others are served"
        time.sleep(1.0)
        assert gw.executor("stdlib")["counters"]["quarantines"] == 2, "held: not a third"
    finally:
        gw.stop()


@pytest.mark.slow
def test_a_held_client_is_still_served_unless_refusal_is_on(tmp_path: Path) -> None:
    """Behind one address may stand many users: by default holding a client only stops its
    dissent from counting."""
    gw = _backdoored(tmp_path)
    try:
        alert = _held_after_two_quarantines(gw)
        assert "refused" not in alert["message"]
        gw.wait_for(lambda s: "stdlib" in s["active"], what="stdlib back")
        assert gw.request("GET", "/notes/1", headers={"X-Debug": "letmein"})[0] == 200
        time.sleep(1.0)
        assert gw.executor("stdlib")["counters"]["quarantines"] == 2, "held: not a third"
        attributed = [e for e in gw.event_kinds() if e["event"] == "dissent"
                      and e.get("attributed")]
        assert attributed and attributed[-1]["client"] == "127.0.0.1"
    finally:
        gw.stop()
