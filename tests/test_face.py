"""One face, end to end on the demo: its three stacks spell JSON, name its media type and
stamp notes each its own way; whichever of them answers, a client gets the same bytes."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.gatewayctl import Gateway, demo_config

NAMES = ["aiohttp", "node", "stdlib"]


def test_the_same_request_gets_the_same_bytes_whoever_answers(tmp_path: Path) -> None:
    gw = Gateway(tmp_path, demo_config())
    try:
        voting = lambda s: sorted(s["active"]) == NAMES and all(  # noqa: E731
            e["running"] for e in s["executors"])
        gw.wait_for(voting, what="three voters", timeout=30)
        code, _, body = gw.request("POST", "/notes", {"text": "café", "x": 1})
        assert code == 201
        stamp = json.loads(body)["created_at"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", stamp), stamp
        # a client cannot choose the time its write is stamped with
        forged = (b'POST /notes HTTP/1.1\r\nHost: t\r\nX-Endosec-Time: 1999-01-01\r\n'
                  b'Content-Type: application/json\r\nContent-Length: 12\r\n'
                  b'Connection: close\r\n\r\n{"text":"b"}')
        assert b"1999-01-01" not in gw.raw(forged)
        targets = [f"GET {t}" for t in ("/notes", "/notes/1", "/notes/2", "/notes/99",
                                         "/nowhere")] + ["HEAD /notes", "HEAD /notes/1"]
        seen: dict[str, set[bytes]] = {t: set() for t in targets}
        for held in NAMES:  # each pair answers alone in turn: every stack's reply is sent
            assert gw.request("POST", f"/executors/{held}/quarantine", admin=True)[0] == 202
            gw.wait_for(lambda s, h=held: h not in s["active"], what=f"{held} held")
            for _ in range(10):
                for target in targets:
                    raw = f"{target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
                    reply = gw.raw(raw.encode())
                    assert reply.startswith(b"HTTP/1.1 "), reply[:200]
                    seen[target].add(re.sub(rb"\r\ndate: [^\r]*", b"", reply))
            assert gw.request("POST", f"/executors/{held}/cleanse", admin=True)[0] == 202
            gw.wait_for(voting, what="three voters again", timeout=30)
        for target, replies in seen.items():
            assert len(replies) == 1, (target, replies)
            head, _, body = next(iter(replies)).partition(b"\r\n\r\n")
            assert b"\r\ncontent-type: application/json\r\n" in head.lower(), head
            assert b"\r\nserver:" not in head.lower(), head
            if target.startswith("HEAD"):  # a length would tell whose spelling it measured
                assert b"\r\ncontent-length:" not in head.lower() and body == b"", head
                continue
            assert body == json.dumps(json.loads(body), sort_keys=True, separators=(",", ":"),
                                      ensure_ascii=False).encode(), body
        note = json.loads(next(iter(seen["GET /notes/1"])).partition(b"\r\n\r\n")[2])
        assert note == {"id": 1, "text": "café", "created_at": stamp}
    finally:
        gw.stop()
