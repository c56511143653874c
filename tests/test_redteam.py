"""The red-team suite end to end: `endosec redteam` against the demo and the web example.

Each test runs the whole catalogue (10,000 benign requests for the false-alarm figure), prints
the summary table straight to the terminal (visible without -s) and fails the build if a
required figure regresses: 100% suppression and detection for every differential-mode case,
no false alarm on benign traffic, availability of at least 99.9% during differential-mode and
fault classes, no gateway crash on any input-agent case, and (against the demo, whose
workload writes) no acknowledged write lost when the gateway is killed and restarted.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from endosec.quantify.stats import wilson_ci
from endosec.redteam.report import summary_table
from endosec.runtime.opens import opens_possible
from endosec.runtime.segment import segment_possible

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BENIGN = 10_000
WEB_SERVERS = ("nginx", "apache2", "lighttpd")


@pytest.fixture
def report_dir() -> Iterator[Path]:
    # The web example's workers drop to "nobody" when run as root: every ancestor of the
    # scratch directories must be searchable by others, which pytest's tmp_path is not.
    path = Path(tempfile.mkdtemp(prefix="endosec-redteam-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def show(request: pytest.FixtureRequest, text: str) -> None:
    """Write to the terminal whether or not pytest captures output (-s or not)."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


def run_suite(request: pytest.FixtureRequest, config: Path, report: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "endosec.redteam.cli", "--config", str(config),
         "--report", str(report), "--benign-requests", str(BENIGN)],
        capture_output=True, text=True, timeout=600, check=False)
    path = report / "report.json"
    assert path.exists(), f"no report (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
    data = json.loads(path.read_text())
    text = (f"\nendosec redteam --config {config.relative_to(ROOT)} ({data['seconds']} s)\n"
            f"{summary_table(data)}")
    if data["incremental"]:
        inc = data["incremental"]
        text += (f"\nincremental: majority compromised in {inc['majority_compromised']}/"
                 f"{inc['episodes']} episodes; predicted {inc['predicted_markov']:.2f} "
                 f"(Markov), {inc['predicted_faithful']:.2f} (faithful simulation)")
        aware = inc.get("threat_aware")
        if aware:
            text += (f"\nthreat-aware: {aware['majority_compromised']}/{aware['episodes']} "
                     f"{aware['observed_ci']}; predicted {aware['predicted_faithful']:.2f}; "
                     f"{aware['rotations_per_second']} rotations/s against "
                     f"{inc['rotations_per_second']} (agrees: {aware['agrees']})")
    show(request, text)
    assert proc.returncode in (0, 1), proc.stderr[-4000:]
    return data


def shown(data: dict, cls: str) -> str:
    """The cases of class ``cls`` in full, one per line (a failed assertion shows them
    uncut)."""
    return "\n".join(json.dumps({k: c.get(k) for k in ("name", "detected", "suppressed",
                                                         "victims", "notes")})
                     for c in data["cases"] if c["class"] == cls)


def check_required_figures(data: dict) -> None:
    classes = data["classes"]
    # A drill that stopped early (the pool did not settle, ...) ran only some classes: say why.
    assert not data["gateway"]["crashed"] and not data["gateway"]["detail"], data["gateway"]
    assert data["benign"]["requests"] >= BENIGN
    assert data["benign"]["false_alarms"] == 0, data["benign"]
    assert classes["benign"]["false_alarms"] == 0
    diff = classes["differential"]
    assert diff["cases"] >= 8
    failing = [c for c in data["cases"] if c["class"] == "differential"
               and not (c["suppressed"] and c["detected"])]
    assert not failing, failing
    assert diff["suppressed"] == diff["cases"] and diff["detected"] == diff["cases"]
    alarmed = [(c["name"], c["notes"]) for c in data["cases"]
               if c["class"] == "differential" and c["false_alarms"]]
    assert diff["false_alarms"] == 0 and not alarmed, alarmed
    # The informed attacker strikes only with a majority, if it can learn the active set: it
    # cannot, so it acts blind and is caught as its uninformed twin is.
    informed = {c["name"]: c for c in data["cases"]
                if c["name"] in ("alter-json-field", "informed-alter-json-field")}
    assert len(informed) == 2 and all(c["detected"] for c in informed.values()), informed
    assert any(n.startswith("the implant read the active set before 0 of")
               for n in informed["informed-alter-json-field"]["notes"]), informed
    # Covert implants keep every reply right; behaviour gives them away, within 5 s, and
    # nobody else is punished (a connection out shows only in a network segment, a file read
    # only to fanotify: as root). The rules that weigh time and CPU against the host's are
    # given 10 s: the latency rule skips the windows in which the host is busy
    # (behaviour.busy_above), and on the two cores of CI the suite itself keeps it busy.
    covert = classes["covert"]
    assert covert["cases"] == 6 and covert["suppressed"] == 6
    assert covert["false_alarm_events"] == 0
    if segment_possible() is None and opens_possible() is None:
        assert covert["detected"] == 6, shown(data, "covert")
        caught = {c["name"]: c["time_to_quarantine"] for c in data["cases"]
                  if c["class"] == "covert"}
        slow = {n: t for n, t in caught.items()
                if t > (10.0 if n in ("micro-delay", "cpu-burn") else 5.0)}
        assert not slow, caught
    # Inputs the stacks legitimately disagree on, from one client at a high rate: refused or
    # agreed on, so nobody is quarantined and the floor holds.
    divergence = classes["benign-divergence"]
    assert divergence["cases"] >= 10
    assert divergence["false_alarm_events"] == 0, [
        c for c in data["cases"] if c["class"] == "benign-divergence" and c["false_alarms"]]
    assert divergence["suppressed"] == divergence["detected"] == divergence["cases"], [
        c for c in data["cases"] if c["class"] == "benign-divergence"
        and not (c["suppressed"] and c["detected"])]
    # What tells the executors apart, or the active set, stays hidden.
    recon = classes["reconnaissance"]
    assert recon["cases"] == 3 and recon["suppressed"] == recon["detected"] == 3, shown(
        data, "reconnaissance")
    # A squatter on an executor's port and a file planted in its image: both caught (health's
    # owner check; a re-measurement), neither by a dissent; and an agent's admission refuses
    # replayed, foreign and forged proofs and calls without a session, logging each.
    identity = classes["identity"]
    assert identity["cases"] == 3 and identity["suppressed"] == identity["detected"] == 3, shown(
        data, "identity")
    # A trigger seen once comes back in ten other guises: the memory it formed meets each
    # before the implicated executor can answer.
    immune = classes["immune"]
    assert immune["cases"] == 1 and immune["suppressed"] == immune["detected"] == 1, shown(
        data, "immune")
    for name in ("differential", "faults", "benign-divergence"):
        assert classes[name]["availability"] >= 0.999, (name, classes[name], [
            c["benign"] for c in data["cases"] if c["class"] == name])
    agent = classes["input-agent"]
    assert agent["suppressed"] == agent["cases"], [
        c for c in data["cases"] if c["class"] == "input-agent" and not c["suppressed"]]
    assert classes["common-mode"]["expected_suppressible"] is False
    crash = [c for c in data["cases"] if c["name"] == "gateway-crash"]
    if data["workload"] == "notes":  # the static workload has no writes to lose
        assert len(crash) == 1, "the gateway-crash case did not run"
        assert crash[0]["acknowledged_writes"] >= 100, crash[0]
        assert crash[0]["lost_writes"] == 0, crash[0]
        # The same count, with the journal deleted before the restart, sees every write lost.
        assert crash[0]["lost_writes_without_journal"] == crash[0]["acknowledged_writes"]
    # Dissent raises the threat level, and threat-aware rotation moves faster in the gateway;
    # the faithful simulation of the same threat-aware rotation agrees with what the gateway
    # let happen. The report prints 95% intervals (`agrees`); over ten episodes a 95% interval
    # misses one time in twenty, so the build holds the prediction to the 99% one.
    inc = data["incremental"]
    aware = inc["threat_aware"]
    assert aware["dissents_sent"] > 0, inc
    assert aware["rotations_per_second"] > 1.1 * inc["rotations_per_second"], inc
    low, high = wilson_ci(aware["majority_compromised"], aware["episodes"], z=2.576)
    assert low <= aware["predicted_faithful"] <= high, aware
    assert data["verdict"]["passed"], data["verdict"]


@pytest.mark.skipif(shutil.which("node") is None,
                    reason="node is needed for the three-stack demo "
                           "(scripts/install-system-deps.sh installs it)")
def test_redteam_against_the_demo(request: pytest.FixtureRequest, report_dir: Path) -> None:
    data = run_suite(request, ROOT / "src/endosec/demo/endosec.yaml", report_dir)
    check_required_figures(data)
    assert (report_dir / "report.md").read_text().startswith("# endosec red-team report")


def test_redteam_against_the_web_example(request: pytest.FixtureRequest,
                                         report_dir: Path) -> None:
    config = ROOT / "examples/web/endosec.yaml"
    missing = [s for s in WEB_SERVERS if shutil.which(s) is None
               and not Path(f"/usr/sbin/{s}").exists()]
    if not config.exists() or missing:
        why = (f"the web example needs {', '.join(missing) or 'examples/web/endosec.yaml'}; "
               "run scripts/install-system-deps.sh")
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    data = run_suite(request, config, report_dir)
    assert data["workload"] == "static"
    check_required_figures(data)


def _demo_with(tmp_path: Path, report_dir: Path, settings: str,
               only: str) -> tuple[dict, subprocess.CompletedProcess[str]]:
    """The red team's class ``only`` against the demo with ``settings`` (YAML) added."""
    demo = tmp_path / "demo"
    shutil.copytree(ROOT / "src/endosec/demo", demo,
                    ignore=shutil.ignore_patterns("__pycache__"))
    with (demo / "endosec.yaml").open("a") as f:
        f.write("\n" + settings)
    proc = subprocess.run(
        [sys.executable, "-m", "endosec.redteam.cli", "--config", str(demo / "endosec.yaml"),
         "--report", str(report_dir), "--only", only, "--no-incremental",
         "--benign-requests", "200"],
        capture_output=True, text=True, timeout=300, check=False)
    return json.loads((report_dir / "report.json").read_text()), proc


@pytest.mark.skipif(shutil.which("node") is None,
                    reason="node is needed for the three-stack demo "
                           "(scripts/install-system-deps.sh installs it)")
def test_without_attestation_the_identity_cases_go_unseen(tmp_path: Path,
                                                          report_dir: Path) -> None:
    """What catches them is attestation: with ``attest.action: off`` neither case is caught,
    though every answer stays right."""
    data, proc = _demo_with(tmp_path, report_dir, 'attest:\n  action: "off"\n', "identity")
    cases = {c["name"]: c for c in data["cases"] if c["class"] == "identity"}
    assert set(cases) == {"admission", "port-squat", "tampered-image"}, proc.stdout + proc.stderr
    for name in ("port-squat", "tampered-image"):
        assert not cases[name]["detected"] and not cases[name]["suppressed"], cases[name]
        assert cases[name]["fired"] == 1 and cases[name]["benign"]["wrong"] == 0, cases[name]
    assert cases["admission"]["suppressed"], cases["admission"]  # not attestation's doing


@pytest.mark.skipif(shutil.which("node") is None,
                    reason="node is needed for the three-stack demo "
                           "(scripts/install-system-deps.sh installs it)")
def test_without_immune_memory_the_recall_case_fails(tmp_path: Path, report_dir: Path) -> None:
    """What meets the disguised triggers is the memory: without it the victim answers them
    whenever it votes (outvoted, so every reply stays right), and is cleansed again."""
    data, proc = _demo_with(tmp_path, report_dir, "immune:\n  enabled: false\n", "immune")
    [case] = [c for c in data["cases"] if c["class"] == "immune"]
    assert not case["detected"] and not case["suppressed"], proc.stdout + proc.stderr
    recalled = re.search(r"recalled (\d+)/10", case["notes"][-1])
    assert recalled and int(recalled[1]) < 10 and case["attack"]["wrong"] == 0, case


SOAK = 100_000


@pytest.mark.skipif(shutil.which("node") is None,
                    reason="node is needed for the three-stack demo "
                           "(scripts/install-system-deps.sh installs it)")
def test_soak_holds_availability_through_single_executor_faults(
        request: pytest.FixtureRequest, report_dir: Path) -> None:
    """100,000 benign requests while one executor at a time is killed, stopped, slowed or
    made to answer wrongly: at least 99.99% answered correctly, none wrongly, no write lost."""
    proc = subprocess.run(
        [sys.executable, "-m", "endosec.redteam.cli", "--config",
         str(ROOT / "src/endosec/demo/endosec.yaml"), "--report", str(report_dir),
         "--soak", str(SOAK)],
        capture_output=True, text=True, timeout=900, check=False)
    path = report_dir / "report.json"
    assert path.exists(), f"no report (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
    data = json.loads(path.read_text())
    soak = data["soak"]
    assert soak is not None, (data["gateway"], proc.stderr[-4000:])
    show(request, f"\nendosec redteam --soak {SOAK}: {soak['availability']:.4%} of "
                  f"{soak['requests']} correct, {soak['wrong_answers']} wrong, "
                  f"{soak['lost_writes']} writes lost, {soak['faults_injected']} faults "
                  f"{soak['faults']} ({soak['seconds']} s)")
    assert soak["requests"] == SOAK
    assert soak["wrong_answers"] == 0, soak["problems"]
    assert soak["lost_writes"] == 0 and soak["acknowledged_writes"] > 0, soak
    assert set(soak["faults"]) == {"kill", "stop", "slow", "wrong-answer"}, soak["faults"]
    assert soak["availability"] >= 0.9999, soak["problems"]
    assert data["verdict"]["passed"] and proc.returncode == 0, data["verdict"]
