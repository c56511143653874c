"""Evidence of dissent: redacted, bounded, content-addressed, and readable as a diff."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from endosec.cli import main
from endosec.observe.evidence import EvidenceStore, Redaction, diff, find
from tests.gatewayctl import DEMO, Gateway, demo_config, with_env

SECRET_FILE = DEMO.parent / "secret.txt"
SECRET = SECRET_FILE.read_text().strip()

VERDICT = {"method": "GET", "path": "/notes/1", "outcome": "accepted", "winner": "a",
           "agreed": ["a", "b"], "dissented": ["c"], "failed": []}


def replies(leak: bytes) -> dict:
    ok = b'{"id": 1, "text": "hello", "token": "t-1"}'
    head = [["content-type", "application/json"], ["set-cookie", "s=abc"]]
    return {"a": {"status": 200, "headers": head, "body": ok},
            "b": {"status": 200, "headers": head, "body": ok},
            "c": {"status": 200, "headers": [*head, ["x-leak", "1"]], "body": leak}}


def test_a_record_shows_what_the_dissenter_changed(tmp_path: Path) -> None:
    store = EvidenceStore(tmp_path, keep=10, max_bytes=1 << 20, redaction=Redaction())
    leak = b'{"id": 1, "text": "hello", "token": "t-1", "secret": "root:x:0:0"}'
    evidence_id = store.keep(VERDICT, replies(leak))
    found, record = find(tmp_path, evidence_id[:12])
    assert found == evidence_id
    text = diff(found, record)
    assert '+ /secret: "root:x:0:0"' in text and "+ x-leak: 1" in text
    assert "s=abc" not in json.dumps(record)
    assert ["set-cookie", "<masked>"] in record["replies"]["c"]["headers"]
    assert "- /text" not in text, "what agrees is not shown"


def test_rules_redact_fields_and_patterns(tmp_path: Path) -> None:
    rules = Redaction(fields=["/**/token"], patterns=[r"root:[^\"]*"])
    store = EvidenceStore(tmp_path, keep=10, max_bytes=1 << 20, redaction=rules)
    leak = b'{"id": 1, "text": "hello", "token": "t-9", "secret": "root:x:0:0"}'
    _, record = find(tmp_path, store.keep(VERDICT, replies(leak)))
    stored = json.dumps(record)
    assert "t-9" not in stored and "t-1" not in stored and "root:x" not in stored
    assert "<masked>" in diff("x", record)


def test_the_store_keeps_the_newest_within_its_bounds(tmp_path: Path) -> None:
    store = EvidenceStore(tmp_path, keep=3, max_bytes=1 << 20, redaction=Redaction())
    ids = []
    for i in range(5):
        ids.append(store.keep({**VERDICT, "path": f"/notes/{i}"}, replies(b"x%d" % i)))
        time.sleep(0.01)
    kept = {p.stem for p in tmp_path.glob("*.json")}
    assert kept == set(ids[-3:])
    small = EvidenceStore(tmp_path / "small", keep=100, max_bytes=1, redaction=Redaction())
    small.keep(VERDICT, replies(b"y"))
    assert list((tmp_path / "small").glob("*.json")) == []


def test_a_store_reopened_counts_the_records_already_kept(tmp_path: Path) -> None:
    """The bounds hold across restarts: the records an earlier gateway kept are the oldest."""
    first = EvidenceStore(tmp_path, keep=3, max_bytes=1 << 20, redaction=Redaction())
    ids = [first.keep({**VERDICT, "path": f"/a/{i}"}, replies(b"a%d" % i)) for i in range(2)]
    time.sleep(0.01)
    again = EvidenceStore(tmp_path, keep=3, max_bytes=1 << 20, redaction=Redaction())
    ids += [again.keep({**VERDICT, "path": f"/b/{i}"}, replies(b"b%d" % i)) for i in range(2)]
    assert {p.stem for p in tmp_path.glob("*.json")} == set(ids[1:])
    # The same record kept again is the newest, not the next to go.
    assert again.keep({**VERDICT, "path": "/a/1"}, replies(b"a1")) == ids[1]
    again.keep({**VERDICT, "path": "/c"}, replies(b"c"))
    assert ids[1] in {p.stem for p in tmp_path.glob("*.json")}
    EvidenceStore(tmp_path, keep=1, max_bytes=1 << 20, redaction=Redaction())  # prunes at once
    assert len(list(tmp_path.glob("*.json"))) == 1


def test_the_command_lists_and_shows_records(tmp_path: Path) -> None:
    store = EvidenceStore(tmp_path / "evidence", keep=10, max_bytes=1 << 20,
                          redaction=Redaction())
    evidence_id = store.keep(VERDICT, replies(b"not json"))
    listed = CliRunner().invoke(main, ["evidence", "list", "--state-dir", str(tmp_path)])
    assert listed.exit_code == 0 and evidence_id[:16] in listed.output
    assert "against: c" in listed.output
    shown = CliRunner().invoke(main, ["evidence", "show", evidence_id[:8], "--state-dir",
                                      str(tmp_path)])
    assert shown.exit_code == 0 and "+not json" in shown.output, shown.output
    missing = CliRunner().invoke(main, ["evidence", "show", "ffff", "--state-dir",
                                        str(tmp_path)])
    assert missing.exit_code == 1 and "0 evidence records match" in missing.output


def backdoored(**evidence: object) -> dict:
    data = with_env(demo_config(evidence=evidence), "stdlib",
                    NOTES_BACKDOOR_SECRET=str(SECRET_FILE))
    return data


def leak(gw: Gateway) -> dict:
    assert gw.request("POST", "/notes", {"text": "before"})[0] == 201
    code, _, body = gw.request("GET", "/notes/1", headers={"X-Debug": "letmein"})
    assert code == 200 and SECRET not in body.decode()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = [e for e in gw.event_kinds() if e["event"] == "dissent" and "evidence" in e]
        if found:
            return found[0]
        time.sleep(0.1)
    raise AssertionError("no dissent with evidence")


@pytest.mark.slow
def test_the_backdoors_leak_is_shown_to_the_admin_only(tmp_path: Path) -> None:
    gw = Gateway(tmp_path, backdoored(bodies=True))
    try:
        event = leak(gw)
        assert event["dissented"] == ["stdlib"]
        shown = CliRunner().invoke(main, ["evidence", "show", event["evidence"][:12],
                                          "--state-dir", str(gw.state)])
        assert shown.exit_code == 0 and SECRET in shown.output, shown.output
        assert gw.request("GET", f"/evidence/{event['evidence']}", admin=True,
                          headers={"Authorization": ""})[0] == 401
        code, _, body = gw.request("GET", f"/evidence/{event['evidence']}", admin=True,
                                   headers={"Authorization": "Bearer test-token"})
        assert code == 200 and SECRET in json.loads(body)["diff"]
        # The ledger's record of the dissent names the evidence by its digest (records are
        # written in batches, within half a second).
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            ledger = "".join(p.read_text() for p in (gw.state / "ledger").glob("ledger-*"))
            if event["evidence"] in ledger:
                break
            time.sleep(0.2)
        assert event["evidence"] in ledger and SECRET not in ledger
    finally:
        gw.stop()


@pytest.mark.slow
def test_a_redaction_rule_keeps_the_secret_out_of_the_evidence(tmp_path: Path) -> None:
    gw = Gateway(tmp_path, backdoored(bodies=True, redact={"patterns": [r"hunter2-\w+"]}))
    try:
        event = leak(gw)
        stored = (gw.state / "evidence" / f"{event['evidence']}.json").read_text()
        assert "hunter2" not in stored and "DEMO-SECRET" in stored and "<masked>" in stored
    finally:
        gw.stop()
