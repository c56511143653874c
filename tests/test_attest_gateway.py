"""Attested launch at the gateway: a running executor whose files change is caught at its next
random re-measurement, quarantined, and held while its image stays changed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests.gatewayctl import DEMO, TOKEN, Gateway, demo_config


def _by_name(status: dict, name: str) -> dict:
    return next(e for e in status["executors"] if e["name"] == name)


def test_a_changed_program_is_caught_running_quarantined_and_held(tmp_path: Path) -> None:
    base = tmp_path / "demo"
    shutil.copytree(DEMO.parent, base, ignore=shutil.ignore_patterns("__pycache__"))
    data = demo_config(attest={"remeasure_mean": 0.3})
    gw = Gateway(tmp_path / "gw", data, base=base)
    script = base / "executors" / "stdlib_notes.py"
    try:
        gw.wait_for(lambda s: all(e["identity"] == "attested" for e in s["executors"])
                    and len(s["active"]) == 3, what="three attested voters")
        script.write_text(script.read_text() + "\n# one line more\n")
        status = gw.wait_for(lambda s: _by_name(s, "stdlib")["state"] == "quarantined"
                             and any(e["event"] == "cleanse-failed" for e in gw.event_kinds()),
                             what="stdlib quarantined and its relaunch refused")
        stdlib = _by_name(status, "stdlib")
        assert stdlib["level"] == "L0" and stdlib["identity"] == "failed", stdlib
        assert stdlib["level_history"][-1]["level"] == "L0", stdlib  # the change, with its time
        assert stdlib["points"] == 0 and "stdlib" not in status["active"]
        for other in ("aiohttp", "node"):
            assert _by_name(status, other)["level"] == "L2"
        failed = [e for e in gw.event_kinds() if e["event"] == "attestation" and not e["ok"]]
        assert [e["when"] for e in failed[:2]] == ["running", "launch"], failed
        assert all(e["files"] == [f"config:{script.resolve()}"] for e in failed), failed
        refused = [e for e in gw.event_kinds() if e["event"] == "cleanse-failed"]
        assert refused and "not as attested" in refused[0]["detail"], refused
        # the operator restores the file and orders a cleanse: attested again, on probation
        script.write_text(script.read_text().removesuffix("\n# one line more\n"))
        code, _, _ = gw.request("POST", "/executors/stdlib/cleanse", admin=True)
        assert code in (200, 202)
        status = gw.wait_for(lambda s: _by_name(s, "stdlib")["identity"] == "attested",
                             what="stdlib attested again")
        assert _by_name(status, "stdlib")["level"] in ("L0", "L1")  # no points: no vote yet
    finally:
        gw.stop()
    shown = subprocess.run([sys.executable, "-m", "endosec.cli", "ledger", "show",
                            str(tmp_path / "gw" / "state" / "ledger"), "--kind", "attestation",
                            "--json"], capture_output=True, text=True, check=True).stdout
    records = [json.loads(line)["payload"] for line in shown.splitlines()]
    assert any(r.get("files") == [f"config:{script.resolve()}"] for r in records), records
    assert TOKEN not in shown
