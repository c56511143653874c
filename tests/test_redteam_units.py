"""Unit tests for the red-team suite: implant descriptions, alterations, config rewrite, report,
and the implant wrapper around a real executor process."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from endosec.config import load_config
from endosec.protocols.http import Request, Response
from endosec.redteam.cases import CLASSES, DIFFERENTIAL, catalogue, fill
from endosec.redteam.cli import redteam
from endosec.redteam.deploy import drill_config, new_deployment
from endosec.redteam.divergence import BENIGN_DIVERGENCE
from endosec.redteam.drill import CaseResult, alarm_notes
from endosec.redteam.evidence import EVIDENCE
from endosec.redteam.identity import IDENTITY
from endosec.redteam.implant import INNER_PORT
from endosec.redteam.recon import RECONNAISSANCE
from endosec.redteam.report import (
    Benign,
    Requirements,
    build_report,
    render_markdown,
    summary_table,
)
from endosec.redteam.spec import (
    KINDS,
    ImplantError,
    alter_response,
    fraction_draw,
    parse_implant,
)
from endosec.redteam.workload import Tally

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "src" / "endosec" / "demo"


def request(target: bytes = b"/notes/1", headers: tuple = ()) -> Request:
    return Request(b"GET", target, ((b"host", b"h"), *headers))


JSON_REPLY = Response(200, b"OK", ((b"content-type", b"application/json"),),
                      b'{"notes": [{"id": 1, "text": "a"}, {"id": 2, "text": "b"}]}')


# -- implant descriptions ----------------------------------------------------------------------


def test_every_catalogue_implant_parses_once_filled() -> None:
    for case in catalogue(3.0):
        body = fill(case.implant, canary="c", field="text", json_path="/notes*",
                    admin="127.0.0.1:1", allies="a,b")
        assert parse_implant(body).kind == case.implant["kind"]


@pytest.mark.parametrize("bad, needle", [
    ({"kind": "nope"}, "kind must be one of"),
    ({"kind": "alter-status"}, "missing 'status'"),
    ({"kind": "alter-status", "status": 99}, "200..599"),
    ({"kind": "alter-status", "status": "418"}, "must be int"),
    ({"kind": "inject-header", "header": "Bad Name", "value": "v"}, "header name"),
    ({"kind": "inject-header", "header": "X", "value": "a\r\nb"}, "header value"),
    ({"kind": "crash", "after": 0}, "'after'"),
    ({"kind": "crash", "fraction": 0}, "'fraction'"),
    ({"kind": "crash", "extra": 1}, "unknown field"),
    ({"kind": "crash", "trigger": {"header": "x"}}, "missing 'value'"),
    ({"kind": "crash", "informed": {"admin": "nowhere", "allies": "a"}}, "HOST:PORT"),
    ({"kind": "crash", "informed": {"admin": "h:1"}}, "missing 'allies'"),
    ([], "JSON object"),
])
def test_bad_implants_are_refused_naming_the_field(bad: object, needle: str) -> None:
    with pytest.raises(ImplantError, match=needle):
        parse_implant(bad)


@given(st.dictionaries(st.sampled_from(["kind", "status", "after", "fraction", "trigger",
                                        "paths", "header", "value", "ms", "secret"]),
                       st.one_of(st.sampled_from(list(KINDS)), st.integers(-5, 700),
                                 st.floats(allow_nan=True), st.text(max_size=5),
                                 st.lists(st.text(max_size=3), max_size=2), st.none())))
@settings(max_examples=300)
def test_any_description_parses_or_raises_implant_error(data: dict) -> None:
    with contextlib.suppress(ImplantError):
        parse_implant(data)


def test_conditions_trigger_after_fraction_paths_methods() -> None:
    trig = parse_implant({"kind": "crash", "trigger": {"header": "X-Debug", "value": "k"}})
    assert not trig.matches(request(), 1)
    assert trig.matches(request(headers=((b"x-debug", b"k"),)), 1)
    after = parse_implant({"kind": "crash", "after": 3})
    assert [after.matches(request(), n) for n in (1, 2, 3, 4)] == [False, False, True, True]
    paths = parse_implant({"kind": "crash", "paths": ["/data*"], "methods": ["post"]})
    assert not paths.matches(request(b"/data.json"), 1)
    assert paths.matches(Request(b"POST", b"/data.json?x", ((b"host", b"h"),)), 1)
    frac = parse_implant({"kind": "crash", "fraction": 0.25})
    hits = sum(frac.matches(request(), n) for n in range(1, 4001))
    assert 800 < hits < 1200
    assert [frac.matches(request(), n) for n in range(1, 50)] == \
        [fraction_draw(n) < 0.25 for n in range(1, 50)]


def test_an_informed_implant_strikes_only_with_a_majority_or_in_the_dark() -> None:
    informed = parse_implant({"kind": "crash",
                              "informed": {"admin": "127.0.0.1:9", "allies": "a,b"}})
    assert informed.informed == (("127.0.0.1", 9), frozenset({"a", "b"}))
    assert informed.strikes(["a", "b", "c"]) and not informed.strikes(["a", "c", "d"])
    assert not informed.strikes(["a", "b", "c", "d"])  # half is not a majority
    assert informed.strikes(None)  # it could not tell: as an uninformed implant
    assert parse_implant({"kind": "crash"}).strikes(["c"])


def test_alterations() -> None:
    field = parse_implant({"kind": "alter-json-field", "field": "text", "value": "X"})
    body = json.loads(alter_response(field, JSON_REPLY).body)
    assert [n["text"] for n in body["notes"]] == ["X", "X"]
    nudge = parse_implant({"kind": "nudge-numbers", "delta": 1})
    assert [n["id"] for n in json.loads(alter_response(nudge, JSON_REPLY).body)["notes"]] \
        == [2, 3]
    text = Response(200, b"", (), b"<p>year 2024</p>")
    assert alter_response(nudge, text).body == b"<p>year 3024</p>"
    header = parse_implant({"kind": "inject-header", "header": "Set-Cookie", "value": "a=b"})
    assert (b"set-cookie", b"a=b") in alter_response(header, JSON_REPLY).headers
    status = parse_implant({"kind": "alter-status", "status": 418})
    assert alter_response(status, JSON_REPLY).status == 418
    with pytest.raises(ValueError, match="does not alter"):
        alter_response(parse_implant({"kind": "crash"}), JSON_REPLY)


# -- configuration rewrite -----------------------------------------------------------------------


def test_a_dns_configuration_is_refused_at_once_naming_its_protocol(tmp_path: Path) -> None:
    config = ROOT / "examples/dns/endosec.yaml"
    result = CliRunner().invoke(redteam, ["--config", str(config), "--report", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert "protocol dns: the red team drills HTTP gateways only" in result.output
    assert not list(tmp_path.iterdir())  # nothing was started, so nothing reported


def test_drill_config_wraps_every_executor_and_keeps_profiles(tmp_path: Path) -> None:
    config = load_config(DEMO / "endosec.yaml")
    dep = new_deployment(tmp_path)
    data = drill_config(config, dep, duplicate=True,
                        overrides={"controller": {"rotate_every": 1.0}})
    assert data["listen"] == "127.0.0.1:0" and data["admin"]["listen"] == "127.0.0.1:0"
    assert data["admin"]["token"] == dep.token
    assert data["controller"]["rotate_every"] == 1.0 and data["controller"]["active"] == 3
    names = [e["name"] for e in data["executors"]]
    assert names == ["stdlib", "aiohttp", "node", "stdlib-b", "aiohttp-b", "node-b"]
    for e, orig in zip(data["executors"], config.executors * 2, strict=True):
        assert e["argv"][1:3] == ["-m", "endosec.redteam.implant"]
        inner = e["argv"][e["argv"].index("--") + 1:]
        assert inner == [a.replace("{port}", INNER_PORT) for a in orig.argv]
        assert e["profile"] == orig.profile
        assert "{port}" in e["argv"] and "{scratch}" in e["argv"]


# -- the report ----------------------------------------------------------------------------------


def result(name: str, cls: str, *, suppressed: bool = True, detected: bool = True,
           ok: int = 1000, bad: int = 0, expected: bool = True) -> CaseResult:
    r = CaseResult(name, cls, "d", ["a"], expected, fired=1, suppressed=suppressed,
                   detected=detected)
    r.benign = Tally(total=ok + bad, correct=ok, failed=bad)
    return r


def report(results: list[CaseResult], *, benign: int = 10_000, alarms: int = 0,
           crashed: bool = False) -> dict:
    for cls, name in ((BENIGN_DIVERGENCE, "options"), (RECONNAISSANCE, "fingerprint"),
                      (IDENTITY, "tampered-image"), (EVIDENCE, "tail-cut")):
        if not any(r.cls == cls for r in results):
            results = [result(name, cls), *results]
    return build_report(config="c.yaml", workload="notes", quick=False, seconds=1.0,
                        benign=Benign(benign, benign, alarms, 0, 0, 1.0), results=results,
                        incremental=None, crashed=crashed, detail="died",
                        requirements=Requirements())


def test_report_has_the_stable_keys_and_passes_when_every_figure_holds() -> None:
    rep = report([result("x", DIFFERENTIAL), result("y", "faults"),
                  result("z", "common-mode", suppressed=False, detected=False,
                         expected=False)])
    assert rep["verdict"] == {"passed": True, "failures": []}
    assert list(rep["classes"]) == [c for c in CLASSES if c in rep["classes"]]
    for figures in rep["classes"].values():
        assert {"cases", "suppressed", "detected", "availability", "false_alarms",
                "expected_suppressible"} <= set(figures)
    assert rep["classes"]["common-mode"]["expected_suppressible"] is False
    json.dumps(rep)
    md = render_markdown(rep)
    assert "PASSED" in md and summary_table(rep) in md and "Common-mode" in md


@pytest.mark.parametrize("kwargs, needle", [
    ({"results": [result("x", DIFFERENTIAL, suppressed=False)]}, "suppressed"),
    ({"results": [result("x", DIFFERENTIAL, detected=False)]}, "detected"),
    ({"results": [result("x", DIFFERENTIAL, ok=998, bad=2)]}, "availability"),
    ({"results": [result("x", DIFFERENTIAL)], "benign": 9_999}, "benign requests"),
    ({"results": [result("x", DIFFERENTIAL)], "alarms": 1}, "false alarms"),
    ({"results": [result("x", DIFFERENTIAL)], "crashed": True}, "crashed"),
    ({"results": [result("x", DIFFERENTIAL), result("i", "input-agent", suppressed=False)]},
     "input-agent"),
    ({"results": [result("x", DIFFERENTIAL), result("o", BENIGN_DIVERGENCE, detected=False)]},
     "benign-divergence"),
    ({"results": [result("x", DIFFERENTIAL), result("o", BENIGN_DIVERGENCE, ok=99, bad=1)]},
     "availability"),
    ({"results": [result("x", DIFFERENTIAL), result("f", RECONNAISSANCE, suppressed=False)]},
     "reconnaissance"),
    ({"results": [result("x", DIFFERENTIAL), result("t", IDENTITY, detected=False)]},
     "identity"),
    ({"results": [result("x", DIFFERENTIAL), result("c", EVIDENCE, detected=False)]},
     "evidence"),
])
def test_report_fails_when_a_required_figure_regresses(kwargs: dict, needle: str) -> None:
    rep = report(**kwargs)
    assert not rep["verdict"]["passed"]
    assert any(needle in f for f in rep["verdict"]["failures"]), rep["verdict"]
    assert "FAILED" in render_markdown(rep)


def crash(lost: int, without: int, acknowledged: int = 150) -> CaseResult:
    r = result("gateway-crash", "faults", suppressed=lost == 0, ok=0)
    r.acknowledged_writes, r.lost_writes, r.lost_writes_without_journal = \
        acknowledged, lost, without
    return r


def test_a_gateway_crash_reports_lost_writes_and_passes_only_at_zero() -> None:
    rep = report([result("x", DIFFERENTIAL), crash(0, 150)])
    assert rep["verdict"]["passed"], rep["verdict"]
    case = rep["cases"][-1]
    assert (case["acknowledged_writes"], case["lost_writes"],
            case["lost_writes_without_journal"]) == (150, 0, 150)
    assert "lost_writes" not in rep["cases"][0]
    md = render_markdown(rep)
    assert "## Gateway crash" in md and "| gateway-crash | 150 | 0 | 150 |" in md
    lost = report([result("x", DIFFERENTIAL), crash(3, 150)])
    assert any("3 acknowledged writes lost" in f for f in lost["verdict"]["failures"])
    blind = report([result("x", DIFFERENTIAL), crash(0, 0)])
    assert any("cannot see a loss" in f for f in blind["verdict"]["failures"])


def test_a_false_alarm_names_the_verdict_that_counted_against_an_honest_executor() -> None:
    def verdict(event: str, ts: float, **kw: object) -> dict:
        return {"event": event, "ts": ts, "method": "GET", "path": "/a", "agreed": ["a", "b"],
                "dissented": [], "failed": [], **kw}

    events = [
        verdict("dissent", 1.0, dissented=["c"]),                        # before the case
        verdict("dissent", 2.0, dissented=["c"]),                        # c is the victim
        verdict("dissent", 3.0, dissented=["b"], attributed=True),       # the client's doing
        {"event": "quarantine", "ts": 4.0, "executor": "b"},
        verdict("dissent", 5.0, failed=["b"], errors={"b": "connection reset"}),
        verdict("no-quorum", 6.0, agreed=[], dissented=["a", "b"]),
    ]
    assert alarm_notes(events, ["a", "b"], since=2.0) == [
        "b failed (connection reset) on GET /a: dissent",
        "a dissented (agreed: none) on GET /a: no-quorum",
        "b dissented (agreed: none) on GET /a: no-quorum",
    ]
    assert alarm_notes(events, ["a"], since=6.5) == []


# -- the wrapper around a real executor ---------------------------------------------------------


@pytest.fixture
def wrapped(tmp_path: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "t.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "endosec.redteam.implant", "--listen-port", str(port),
         "--scratch", str(tmp_path), "--name", "t", "--log-dir", str(tmp_path),
         "--image-implant", str(tmp_path / "image.json"), "--",
         sys.executable, "executors/stdlib_notes.py", "--port", INNER_PORT],
        cwd=DEMO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if "implant wrapper" in line:
            break
    else:
        pytest.fail("the wrapper did not start")
    yield port, tmp_path, log, proc
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    proc.stdout.close()


def get(port: int, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def plant(scratch: Path, body: dict, name: str = "implant.json") -> None:
    tmp = scratch / (name + ".tmp")
    tmp.write_text(json.dumps(body))
    tmp.replace(scratch / name)
    time.sleep(0.01)  # a new mtime even on coarse clocks


def test_wrapper_is_transparent_then_applies_and_drops_implants(wrapped) -> None:
    port, scratch, log, proc = wrapped
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("POST", "/notes", body=b'{"text": "hi"}')
    assert conn.getresponse().read() and conn.sock is not None
    conn.close()
    status, _, body = get(port, "/notes/1")
    assert status == 200 and json.loads(body)["text"] == "hi"
    plant(scratch, {"kind": "exfiltrate-secret", "secret": "S3",
                    "trigger": {"header": "X-Debug", "value": "k"}})
    assert get(port, "/notes/1")[2] != b"S3"
    assert get(port, "/notes/1", {"X-Debug": "k"})[2] == b"S3"
    plant(scratch, {"kind": "alter-status", "status": 418, "after": 2})
    assert [get(port, "/notes/1")[0] for _ in range(3)] == [200, 418, 418]
    assert get(port, "/health")[0] == 200  # never counted, never altered
    (scratch / "implant.json").unlink()
    assert get(port, "/notes/1")[0] == 200
    plant(scratch, {"kind": "never-healthy"}, "image.json")
    assert get(port, "/health")[0] == 503 and get(port, "/notes/1")[0] == 200
    kinds = [json.loads(line)["kind"] for line in log.read_text().splitlines()]
    assert kinds.count("exfiltrate-secret") == 1 and kinds.count("alter-status") == 2
    assert "never-healthy" in kinds
    assert proc.poll() is None


def test_an_informed_implant_reads_the_active_set_where_it_is_shown(wrapped) -> None:
    """Where the admin listener shows the active set to anyone, an implant holding a minority
    stays quiet (and would never be caught); where it is refused, it must act blind."""
    port, scratch, log, _ = wrapped
    shown = {"active": ["t", "x", "y"]}

    class Admin(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(shown).encode() if shown else b'{"error": "unauthorised"}'
            self.send_response(200 if shown else 401)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    admin = ThreadingHTTPServer(("127.0.0.1", 0), Admin)
    threading.Thread(target=admin.serve_forever, daemon=True).start()
    try:
        plant(scratch, {"kind": "alter-status", "status": 418, "informed": {
            "admin": f"127.0.0.1:{admin.server_address[1]}", "allies": "t"}})
        assert get(port, "/health")[0] == 200
        assert get(port, "/notes")[0] == 200  # t alone is a minority of t, x, y: quiet
        plant(scratch, {"kind": "alter-status", "status": 418, "informed": {
            "admin": f"127.0.0.1:{admin.server_address[1]}", "allies": "t,x"}})
        time.sleep(1.0)  # it looks once a second
        assert get(port, "/notes")[0] == 418  # t and x: a majority
        shown = {}
        time.sleep(1.0)
        assert get(port, "/notes")[0] == 418  # refused: it cannot tell, it acts
    finally:
        admin.shutdown()
        admin.server_close()
    learned = [json.loads(line).get("learned") for line in log.read_text().splitlines()]
    assert learned[-2:] == [True, False]


def test_wrapper_crash_takes_the_executor_down(wrapped) -> None:
    port, scratch, _, proc = wrapped
    plant(scratch, {"kind": "crash"})
    with pytest.raises((ConnectionError, OSError)):
        get(port, "/notes/1")
    assert proc.wait(timeout=10) == 3
