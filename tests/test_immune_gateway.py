"""Immune memory end to end on the demo: a backdoor triggered once is met, the next time it
comes in another guise, by the memory's response before any executor answers wrongly; the
memory is kept across a restart and forgotten after its decay time without matches."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.gatewayctl import DEMO, Gateway, demo_config, with_env

pytestmark = pytest.mark.slow

SECRET = DEMO.parent / "secret.txt"


def _backdoored(tmp: Path, **immune: Any) -> Gateway:
    data = with_env(demo_config(immune={"min_self": 20, **immune}), "stdlib",
                    NOTES_BACKDOOR_SECRET=str(SECRET))
    return Gateway(tmp, data)


def _events(gw: Gateway, kind: str) -> list[dict[str, Any]]:
    return [e for e in gw.event_kinds() if e["event"] == kind]


def _first_antigen(gw: Gateway) -> dict[str, Any]:
    """Self traffic, then the backdoor's trigger once: stdlib dissents and is cleansed, and
    the antigen becomes a memory implicating it."""
    assert gw.request("POST", "/notes", {"text": "hello"})[0] == 201
    for i in range(40):
        path = ("/notes/1", "/notes", "/notes/2")[i % 3]
        assert gw.request("GET", path, headers={"User-Agent": f"client/{i % 4}"})[0] in (200,
                                                                                         404)
    status, _, body = gw.request("GET", "/notes/1", headers={"X-Debug": "letmein"})
    assert status == 200 and SECRET.read_bytes().strip() not in body
    gw.wait_for(lambda s: s["immune"]["memories"], what="a memory")
    [memory] = _events(gw, "immune-memory")
    assert memory["implicated"] == ["stdlib"], memory
    gw.wait_for(lambda s: "stdlib" in s["active"]
                and gw.executor("stdlib")["counters"]["quarantines"] == 1, what="stdlib back")
    return memory


def _disguised(gw: Gateway) -> tuple[int, bytes]:
    """The same antigen in a request that looks different."""
    status, _, body = gw.request("GET", "/notes?page=2",
                                 headers={"X-Debug": "letmein", "Accept": "text/plain",
                                          "X-Trace": "7f3a", "User-Agent": "other/9"})
    return status, body


def test_a_remembered_antigen_leaves_the_implicated_executor_out(tmp_path: Path) -> None:
    gw = _backdoored(tmp_path, response="rotate", decay=10.0)
    try:
        memory = _first_antigen(gw)
        dissents = len(_events(gw, "dissent"))
        for _ in range(3):
            status, body = _disguised(gw)
            assert status == 200 and b"notes" in body and SECRET.read_bytes().strip() not in body
        gw.wait_for(lambda s: s["immune"]["memories"][0]["matches"] == 3, what="3 matches")
        assert len(_events(gw, "dissent")) == dissents, "stdlib was asked again"
        assert gw.executor("stdlib")["counters"]["quarantines"] == 1
        matches = _events(gw, "immune-match")  # one per memory and pump, with a count
        assert sum(m["count"] for m in matches) == 3
        assert {(m["memory"], m["response"]) for m in matches} == {(memory["id"], "rotate")}
        # Not matched for its decay time: forgotten, and the backdoor is a dissent again.
        gw.wait_for(lambda s: not s["immune"]["memories"], what="the memory forgotten",
                    timeout=30.0)
        assert [e["id"] for e in _events(gw, "immune-forgotten")] == [memory["id"]]
        assert b"endosec_immune_matches_total{response=\"rotate\"} 3.0" in \
            gw.request("GET", "/metrics", admin=True)[2]
        status, _ = _disguised(gw)
        assert status == 200
        gw.wait_for(lambda s: gw.executor("stdlib")["counters"]["quarantines"] == 2,
                    what="a second quarantine once the memory is gone")
    finally:
        gw.stop()


def test_a_remembered_antigen_is_refused_even_after_a_restart(tmp_path: Path) -> None:
    gw = _backdoored(tmp_path, response="refuse")
    try:
        memory = _first_antigen(gw)
        status, body = _disguised(gw)
        assert status == 403 and json.loads(body)["error"] == "forbidden"
        assert gw.request("GET", "/notes/1")[0] == 200, "other requests are served"
    finally:
        gw.stop()
    assert memory["id"] in (tmp_path / "state" / "immune.json").read_text()
    gw = _backdoored(tmp_path, response="refuse")
    try:
        assert [m["id"] for m in gw.status()["immune"]["memories"]] == [memory["id"]]
        assert _disguised(gw)[0] == 403
        assert gw.executor("stdlib")["counters"]["dissents"] == 0
    finally:
        gw.stop()
