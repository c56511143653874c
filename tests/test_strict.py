"""Strict voting, end to end: a voter that broke a behaviour rule (left voting by
``behaviour.action: warn``) lends its vote no support, so it cannot carry a wrong answer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from endosec.redteam.deploy import new_deployment, wrap
from tests.gatewayctl import Gateway, demo_config

CANARY = "PWNED-by-two"


def _plant(path: Path, implant: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(implant))
    tmp.replace(path)


@pytest.mark.parametrize("strict", [False, True])
def test_a_flagged_voter_cannot_carry_a_wrong_answer(tmp_path: Path, strict: bool) -> None:
    data = demo_config(behaviour={"action": "warn", "interval": 0.2},
                       arbiter={"strategy": "majority", "strict": strict})
    dep = new_deployment(tmp_path / "drill")
    dep.logs.mkdir(parents=True)
    data["executors"] = [wrap(e, dep) for e in data["executors"]]
    gw = Gateway(tmp_path, data)
    try:
        gw.wait_for(lambda s: len(s["active"]) == 3, what="three voters")
        flagged, accomplice = gw.status()["active"][:2]
        assert gw.request("POST", "/notes", {"text": "hello"})[0] == 201
        # the first breaks a rule (a shell left running) and, warned only, keeps voting
        _plant(gw.state / "executors" / flagged / "implant.json", {"kind": "spawn-shell"})
        assert gw.request("GET", "/notes/1")[0] == 200
        status = gw.wait_for(lambda s: gw.executor(flagged)["flagged"], what="the flag",
                             timeout=10)
        assert status["discounted"] == ([flagged] if strict else [])
        assert any(e["event"] == "behaviour" and e["executor"] == flagged
                   for e in gw.event_kinds())
        code, _, body = gw.request("GET", "/notes/1")
        assert code == 200 and b"hello" in body, "honest outputs still agree"
        # then it (its shell still running) and one more answer the same wrong note
        wrong = {"kind": "alter-json-field", "field": "text", "value": CANARY,
                 "paths": ["/notes/1"], "methods": ["GET"]}
        for name in (flagged, accomplice):
            _plant(gw.state / "executors" / name / "implant.json", wrong)
        code, _, body = gw.request("GET", "/notes/1")
        if strict:
            assert code == 502 and CANARY.encode() not in body, (code, body)
        else:
            assert code == 200 and CANARY.encode() in body, "two wrong voters outvote one"
        assert flagged in gw.status()["active"], "warn: it was never quarantined"
    finally:
        gw.stop()
