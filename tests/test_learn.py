"""`endosec learn`: rules proposed from recorded dissent, and what is never proposed.

The unit tests write evidence records the way the gateway does (``STATE_DIR/evidence/ID.json``
with the winner's and the dissenters' replies) and check the proposed patch by compiling it:
a proposal must make the recorded replies agree under the real canonicalisers. The last test
records real dissent from the web example and checks that the learned patch removes it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from endosec.config import config_from_mapping
from endosec.core.canonicalise import compile_rules
from endosec.learn import apply_patch, learn, read_events, render, template
from endosec.protocols.http import Response, response_output
from tests.gatewayctl import Gateway

ROOT = Path(__file__).resolve().parents[1]
WEB = ROOT / "examples" / "web"
HTML = [["content-type", "text/html"]]


def demo_like(**canonicalise: Any) -> dict[str, Any]:
    """Three executors on different stacks (and, with ``twin``, a twin of the first)."""
    return {"canonicalise": canonicalise, "executors": [
        {"name": n, "argv": ["true"], "profile": [f"http:{n}"]} for n in ("a", "b", "c")]}


class Log:
    """Dissent events and their evidence files, as the gateway writes them."""

    def __init__(self, root: Path) -> None:
        self.evidence = root / "evidence"
        self.evidence.mkdir()
        self.events: list[dict[str, Any]] = []

    def dissent(self, method: str, path: str, replies: dict[str, tuple[int, list, str | None]],
                *, winner: str = "a", agreed: tuple[str, ...] = ("a", "b"),
                dissented: tuple[str, ...] = ("c",)) -> None:
        record = {"verdict": {"method": method, "path": path, "outcome": "accepted",
                              "agreed": list(agreed), "dissented": list(dissented),
                              "failed": [], "winner": winner, "errors": {}},
                  "replies": {n: {"status": s, "headers": h, "body": b}
                              for n, (s, h, b) in replies.items()}}
        data = json.dumps(record, sort_keys=True).encode()
        digest = hashlib.sha256(data + str(len(self.events)).encode()).hexdigest()
        (self.evidence / f"{digest}.json").write_bytes(data)
        digests = {n: hashlib.sha256(json.dumps(r).encode()).hexdigest()
                   for n, r in replies.items()}
        self.events.append({"event": "dissent", "method": method, "path": path,
                            "agreed": list(agreed), "dissented": list(dissented),
                            "digests": digests, "evidence": digest})

    def learn(self, data: dict[str, Any], min_count: int = 3) -> Any:
        config = config_from_mapping(data, source="test.yaml", here=Path.cwd())
        return learn(config, data, self.events, self.evidence, min_count=min_count)


def agree_after(data: dict[str, Any], patch: dict[str, Any], path: str, status: int,
                a: tuple[list, str], b: tuple[list, str]) -> bool:
    """Whether two replies agree under the configuration with ``patch`` merged in."""
    rules = compile_rules(apply_patch(data, patch)["canonicalise"])

    def out(headers: list, body: str) -> Any:
        h = tuple((n.encode(), v.encode()) for n, v in headers)
        return response_output("x", Response(status, b"", h, body.encode()), rules, path, 0.0)

    return bool(out(*a).agrees_with(out(*b)))


@pytest.fixture
def log(tmp_path: Path) -> Log:
    return Log(tmp_path)


def test_templates_turn_ids_into_globs() -> None:
    assert template("/notes/17") == "/notes/*"
    assert template("/u/0123abcdef/x") == "/u/*/x"
    assert template("//notes") == "//notes"
    assert template("/files") == "/files"


def test_a_header_one_server_adds_on_one_status_is_exempted_there_only(log: Log) -> None:
    for _ in range(3):
        log.dissent("HEAD", "/files", {"a": (301, [["location", "/files/"]], ""),
                                       "c": (301, [["location", "/files/"],
                                                   ["content-length", "0"]], "")})
    data = demo_like(headers={"default_ignore": False, "ignore": ["date"]})
    learned = log.learn(data)
    assert learned.patch == {"canonicalise": {"headers": {
        "ignore_on_status": {301: ["content-length"]}}}}
    assert learned.explained == learned.observed == 3
    text = render(learned, source="test.yaml", events="events.jsonl")
    assert yaml.safe_load(text) == learned.patch
    assert "HEAD /files" in text and "(none) / 0" in text
    # Still voted on every other status.
    lengths = ([["content-length", "5"]], "hello"), ([["content-length", "6"]], "hello")
    assert not agree_after(data, learned.patch, "/x", 200, *lengths)


def test_nothing_is_proposed_below_the_repeat_count(log: Log) -> None:
    for _ in range(2):
        log.dissent("HEAD", "/files", {"a": (301, [], ""),
                                       "c": (301, [["content-length", "0"]], "")})
    learned = log.learn(demo_like(headers={"default_ignore": False}))
    assert learned.patch == {}
    assert "seen 2 times (at least 3 needed)" in "\n".join(learned.withheld["HEAD /files"])
    assert log.learn(demo_like(headers={"default_ignore": False}), min_count=2).patch


@pytest.mark.parametrize("header", ["set-cookie", "location", "access-control-allow-origin",
                                    "cache-control"])
def test_headers_carrying_security_decisions_are_never_exempted(log: Log, header: str) -> None:
    for _ in range(5):
        log.dissent("GET", "/notes/1", {"a": (200, [], "{}"),
                                        "c": (200, [[header, "attacker"]], "{}")})
    learned = log.learn(demo_like())
    assert learned.patch == {}
    assert "security decision" in "\n".join(learned.withheld["GET /notes/*"])


def test_a_status_difference_is_never_canonicalised(log: Log) -> None:
    for _ in range(5):
        log.dissent("GET", "//notes", {"a": (404, HTML, "nope"), "c": (200, HTML, "[]")})
    learned = log.learn(demo_like())
    assert learned.patch == {}
    assert "status: 404 / 200" in learned.withheld["GET //notes"][0]


def test_json_on_2xx_only_volatile_values_on_errors_any_leaf(log: Log) -> None:
    ct = [["content-type", "application/json"]]
    for i in range(3):
        log.dissent("GET", f"/notes/{i}", {
            "a": (200, ct, json.dumps({"id": i, "at": "2026-01-01T10:00:00Z", "text": "x"})),
            "c": (200, ct, json.dumps({"id": i, "at": "2026-01-01T10:00:01.5Z",
                                       "text": "x"}))})
        log.dissent("DELETE", "/notes", {
            "a": (405, ct, json.dumps({"error": "method not allowed"})),
            "c": (405, ct, json.dumps({"error": "Method Not Allowed", "allow": "GET"}))})
        log.dissent("GET", "/notes", {
            "a": (200, ct, json.dumps({"notes": [{"text": "x"}]})),
            "c": (200, ct, json.dumps({"notes": [{"text": "pwned"}]}))})
    data = demo_like(bodies=[{"path": "/notes*", "json": {"ignore": ["/created_at"]}}])
    learned = log.learn(data)
    bodies = learned.patch["canonicalise"]["bodies"]
    assert {"path": "/notes/*", "content_type": "application/json", "status": 200,
            "json": {"ignore": ["/created_at"], "mask": ["/at"]}} in bodies
    assert {"path": "/notes", "content_type": "application/json", "status": 405,
            "json": {"ignore": ["/created_at", "/allow"], "mask": ["/error"]}} in bodies
    assert len(bodies) == 2  # the changed note text on a 200 is content: withheld
    assert "2xx body is the content" in "\n".join(learned.withheld["GET /notes"])
    assert learned.explained == 6


def test_caddy_like_416_bodies_get_a_status_limited_text_rule(log: Log) -> None:
    page = "<html><body>416: the range is outside the file</body></html>"
    caddy = "Range Not Satisfiable"
    for _ in range(3):
        log.dissent("GET", "/data.json", {"a": (416, HTML, page), "c": (416, HTML, caddy)})
    data = demo_like(headers={"content_type": "exact"})
    learned = log.learn(data)
    rule = {"path": "/data.json", "status": 416, "text": {"masks": ["(?s).+"]}}
    assert learned.patch == {"canonicalise": {"bodies": [rule]}}
    assert agree_after(data, learned.patch, "/data.json", 416, (HTML, page), (HTML, caddy))
    # The same bodies on a 200 still disagree: the rule is limited to the status.
    assert not agree_after(data, learned.patch, "/data.json", 200, (HTML, page), (HTML, caddy))


def test_noise_between_twins_is_proposed_on_one_sighting(log: Log) -> None:
    data = demo_like()
    data["executors"].append({"name": "a2", "argv": ["true"], "profile": ["http:a"]})
    log.dissent("GET", "/x", {"a": (200, HTML, "ok"),
                              "a2": (200, [*HTML, ["x-instance", "2"]], "ok")},
                agreed=("a", "b", "c"), dissented=("a2",))
    learned = log.learn(data)
    assert learned.patch == {"canonicalise": {"headers": {"ignore": ["x-instance"]}}}
    assert learned.proposals[0].noise
    assert "noise" in render(learned, source="t", events="e")


def test_dns_refuses_only_types_nobody_asks_for_data() -> None:
    events = [{"event": "dissent", "method": m, "path": f"n{i}.example.test.",
               "dissented": ["knot"]} for i in range(3) for m in ("TYPE0", "A")]
    data = {"protocol": "dns", "executors": [
        {"name": n, "argv": ["true"], "profile": [f"dns:{n}"],
         "health": {"dns_query": "example.test. SOA"}} for n in ("b", "n", "k")]}
    config = config_from_mapping(data, source="t.yaml", here=Path.cwd())
    learned = learn(config, data, events, None)
    assert learned.patch == {"dns": {"refuse_types": ["TYPE0"]}}
    assert "real data" in learned.withheld["A queries"][0]


def test_patches_merge_like_an_operator_would() -> None:
    data = {"canonicalise": {"headers": {"ignore": ["date"], "ignore_on_status": {
        416: ["content-range"]}}, "bodies": [{"json": {}}]}, "listen": "x"}
    patch = {"canonicalise": {"headers": {"ignore": ["date", "x-id"], "ignore_on_status": {
        301: ["content-length"]}}, "bodies": [{"path": "/a", "exact": {}}]}}
    merged = apply_patch(data, patch)
    assert merged == {"canonicalise": {
        "headers": {"ignore": ["date", "x-id"],
                    "ignore_on_status": {416: ["content-range"], 301: ["content-length"]}},
        "bodies": [{"path": "/a", "exact": {}}, {"json": {}}]}, "listen": "x"}
    assert data["canonicalise"]["headers"]["ignore"] == ["date"]  # not modified


def test_read_events_keeps_dissent_only(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text('{"event": "dissent", "dissented": ["a"]}\nnot json\n'
                    '{"event": "quarantine", "executor": "a"}\n'
                    '{"event": "dissent", "dissented": []}\n')
    assert read_events(path) == [{"event": "dissent", "dissented": ["a"]}]


# -- the web example, recorded for real ----------------------------------------------------------


def _web_config(base: Path) -> dict[str, Any]:
    """The shipped web example on ephemeral ports, bodies kept as evidence, and without any
    exemption of Content-Length on a 301 (the rule learn must find)."""
    data = yaml.safe_load((WEB / "endosec.yaml").read_text())
    data["listen"] = "127.0.0.1:0"
    data["admin"]["listen"] = "127.0.0.1:0"
    data["evidence"] = {"bodies": True}
    data["gateway"]["events"] = str(base / "events.jsonl")
    on_status = data["canonicalise"]["headers"].get("ignore_on_status") or {}
    if "content-length" in on_status.get(301, []):
        on_status[301].remove("content-length")
    for e in data["executors"]:
        e["argv"] = [a.replace("{here}", str(WEB)) for a in e["argv"]]
        e["cwd"] = str(WEB)
    return data


def _head_files(gw: Any, times: int, expect_dissent: bool) -> None:
    """``HEAD /files`` from ``times`` clients (one client's repeats would be held against it,
    not against the executors). Each request waits for the one before to be judged (the
    straggler's dissent comes after the reply, and the pool looks whole until it does), and
    for the pool to be whole again."""
    for i in range(times):
        gw.wait_for(lambda s: len(s["active"]) == 3 and all(
            e["state"] == "active" for e in s["executors"]), "the pool whole")
        status, _, _ = gw.request("HEAD", "/files", source=f"127.0.0.{i + 2}")
        assert status == 301
        deadline = time.monotonic() + (15 if expect_dissent else 0.5)
        while time.monotonic() < deadline and len(
                [e for e in gw.event_kinds() if e["event"] == "dissent"]) <= i:
            time.sleep(0.05)


@pytest.mark.slow
def test_learn_removes_the_head_files_dissent_of_the_web_example() -> None:
    missing = [s for s in ("nginx", "apache2", "lighttpd") if shutil.which(s) is None
               and not Path(f"/usr/sbin/{s}").exists()]
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"web servers missing: {missing}")
        pytest.skip(f"web servers missing: {missing}")
    base = Path(tempfile.mkdtemp(prefix="endosec-learn-"))
    base.chmod(0o755)  # the servers' workers run as nobody when run as root
    try:
        data = _web_config(base / "first")
        gw = Gateway(base / "first", data, base=WEB)
        try:
            _head_files(gw, 3, expect_dissent=True)
        finally:
            gw.stop()
        events = base / "first" / "events.jsonl"
        assert len([e for e in read_events(events) if e["path"] == "/files"]) == 3
        cfg = base / "first" / "endosec.yaml"
        out = base / "patch.yaml"
        proc = subprocess.run(
            [sys.executable, "-m", "endosec.cli", "learn", "--config", str(cfg), "--events",
             str(events), "--state-dir", str(gw.state), "--out", str(out)],
            capture_output=True, text=True, timeout=60, check=True)
        patch = yaml.safe_load(out.read_text())
        assert proc.stdout == out.read_text()
        assert "content-length" in patch["canonicalise"]["headers"]["ignore_on_status"][301]

        patched = apply_patch(yaml.safe_load(cfg.read_text()), patch)
        patched["gateway"]["events"] = str(base / "second" / "events.jsonl")
        gw = Gateway(base / "second", patched, base=WEB)
        try:
            _head_files(gw, 3, expect_dissent=False)
        finally:
            gw.stop()
        assert [e for e in read_events(base / "second" / "events.jsonl")
                if e["path"] == "/files"] == []
    finally:
        shutil.rmtree(base, ignore_errors=True)
