"""Configuration validation: every mistake is reported with the field it is in."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from endosec.attest.manifest import sign_manifest, write_manifest
from endosec.attest.measure import Measurement
from endosec.cli import main
from endosec.config import Admitting, AgentRef, ConfigError, load_config, parse_address
from endosec.configfile import read_yaml, validate
from endosec.identity import new_key
from endosec.observe.ledger_format import raw_public
from endosec.runtime.agent import AgentConfig, load_agent_config
from endosec.runtime.certs import self_signed

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "src" / "endosec" / "demo" / "endosec.yaml"


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "endosec.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def demo_data() -> dict:
    return yaml.safe_load(DEMO.read_text())


def test_shipped_configs_are_valid() -> None:
    config = load_config(DEMO)
    assert [e.name for e in config.executors] == ["stdlib", "aiohttp", "node"]
    assert config.controller.effective_floor == 2
    assert all(e.cwd == DEMO.parent for e in config.executors)
    assert config.executors[0].argv[0] == sys.executable  # {python} expanded


@pytest.mark.parametrize(("mutate", "field"), [
    (lambda d: d["executors"][1].pop("argv"), r"executors\[1\]: needs exactly one of argv"),
    (lambda d: d["executors"][0].update(profile=[]), r"executors\[0\]\.profile"),
    (lambda d: d["controller"].update(active=0), r"controller\.active"),
    (lambda d: d["controller"].update(active=7), r"controller\.active \(7\) exceeds"),
    (lambda d: d["controller"].update(floor=5), r"floor \(5\) cannot exceed"),
    (lambda d: d["arbiter"].update(strategy="threshold"), r"needs k"),
    (lambda d: d["arbiter"].update(strategy="best-of"), r"arbiter\.strategy"),
    (lambda d: d.update(listen="localhost"), r"listen: .*HOST:PORT"),
    (lambda d: d.update(colour="blue"), r"colour: Extra inputs"),
    (lambda d: d["executors"].append(dict(d["executors"][0])), r"repeated: stdlib"),
    (lambda d: d["limits"].update(read_timeout=-1), r"limits\.read_timeout"),
    (lambda d: d["executors"][0].update(network="none"), r"executors\[0\]\.network"),
    (lambda d: d["executors"][0].update(argv=None, url="http://127.0.0.1:1", network="host"),
     r"network: only for argv executors"),
    (lambda d: d["controller"].update(defer_above=1.5), r"controller\.defer_above"),
    (lambda d: d["threat"].update(isolate_at=0) if "threat" in d else d.update(
        threat={"isolate_at": 0}), r"threat\.isolate_at"),
    (lambda d: d.update(cluster={"store": "etcd://nowhere"}), r"cluster\.store: .*HOST:PORT"),
    (lambda d: d.update(cluster={"boundary": "a/b"}), r"cluster\.boundary"),
    (lambda d: d.update(cluster={"lease_ttl": 1}), r"cluster\.lease_ttl"),
])
def test_bad_config_names_the_field(tmp_path: Path, mutate, field: str) -> None:
    data = demo_data()
    mutate(data)
    path = write(tmp_path, data)
    with pytest.raises(ConfigError, match=field):
        load_config(path)
    result = CliRunner().invoke(main, ["check", "--config", str(path)])
    assert result.exit_code == 1
    assert re.search(field, result.output), result.output


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: d["executors"][2].update(argv=["no-such-program-x", "{port}"]),
     r"executors\[2\] \(node\)\.argv\[0\]: 'no-such-program-x' is not found on PATH"),
    (lambda d: d["executors"][0].update(argv=["./missing.sh", "{port}"]),
     r"executors\[0\] \(stdlib\)\.argv\[0\]: .*missing\.sh is not an executable file"),
    (lambda d: d["executors"][1].update(argv=["{python}", "x.py"]),
     r"executors\[1\] \(aiohttp\)\.argv: no \{port\}"),
    (lambda d: d["admin"].update(listen=d["listen"]),
     r"admin\.listen: port 8080 is already taken by listen"),
    (lambda d: d["executors"][0].update(port=8081),
     r"executors\[0\]\.port: port 8081 is already taken by admin\.listen"),
    (lambda d: d["executors"][0].update(template="no-such-dir"),
     r"template: .*no-such-dir is not a readable directory"),
    (lambda d: d.update(lissen="127.0.0.1:1"), r"lissen: .*did you mean `listen`\?"),
    (lambda d: d["controller"].update(quarantine_aftr=2),
     r":\d+: controller\.quarantine_aftr: .*did you mean `quarantine_after`"),
    (lambda d: d["canonicalise"]["bodies"].append({"text": {"masks": ["(?<=x)y"]}}),
     r"canonicalise\.bodies\[2\]\.text\.masks\[0\]: invalid regular expression"),
])
def test_check_catches_what_would_fail_at_run_time(tmp_path: Path, mutate, message: str) -> None:
    data = demo_data()
    mutate(data)
    path = write(tmp_path, data)
    began = time.monotonic()
    result = CliRunner().invoke(main, ["check", "--config", str(path)])
    assert time.monotonic() - began < 1.0, "check must not try to start anything"
    assert result.exit_code == 1, result.output
    assert re.search(message, result.output), result.output


def test_yaml_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "endosec.yaml"
    path.write_text("listen: 127.0.0.1:8080\nadmin:\n  listen: [unclosed\n")
    result = CliRunner().invoke(main, ["check", "--config", str(path)])
    assert result.exit_code == 1
    assert re.search(r"endosec\.yaml:\d+: not valid YAML", result.output), result.output


def test_check_warns_about_components_a_majority_shares() -> None:
    result = CliRunner().invoke(main, ["check", "--config", str(DEMO)])
    assert result.exit_code == 0
    assert "common mode" in result.output and "os:linux (3 of 3)" in result.output


def test_check_warns_about_admin_reads_open_to_all_or_to_nobody(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["check", "--config", str(DEMO)])
    assert "admin.public_read: anyone who reaches the admin listener" in result.output
    data = demo_data()
    data["admin"] = {"listen": "127.0.0.1:8081", "token_env": "NO_SUCH_TOKEN_VAR",
                     "read_token_env": "NO_SUCH_READ_VAR"}
    path = tmp_path / "endosec.yaml"
    path.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(main, ["check", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert "every read of the admin listener but /healthz and /readyz is refused" in \
        result.output
    data["admin"]["read_token"] = "r"
    path.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(main, ["check", "--config", str(path)])
    assert "is refused" not in result.output and "public_read" not in result.output
    assert "verdict_names" not in result.output
    data["gateway"] = {"verdict_headers": True, "verdict_names": True}
    path.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(main, ["check", "--config", str(path)])
    assert "every client learns which executors agreed" in result.output


def test_bad_canonicalisation_rule_names_the_field(tmp_path: Path) -> None:
    data = demo_data()
    data["canonicalise"]["bodies"][0]["json"]["ignore"] = ["no-leading-slash"]
    result = CliRunner().invoke(main, ["check", "--config", str(write(tmp_path, data))])
    assert result.exit_code == 1
    assert "canonicalise.bodies[0].json.ignore[0]" in result.output


def test_check_accepts_the_demo() -> None:
    result = CliRunner().invoke(main, ["check", "--config", str(DEMO)])
    assert result.exit_code == 0, result.output
    assert "3 executors" in result.output


def test_unreadable_and_non_yaml_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("listen: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(bad)


def test_parse_address() -> None:
    assert parse_address("127.0.0.1:80") == ("127.0.0.1", 80)
    assert parse_address("[::1]:8080") == ("::1", 8080)
    for bad in ("nohost", ":80", "h:99999", "h:x"):
        with pytest.raises(ValueError):
            parse_address(bad)


def test_demo_prints_its_banner_and_stops_cleanly(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "endosec.cli", "demo", "--listen", "127.0.0.1:0",
         "--admin", "127.0.0.1:0", "--state-dir", str(tmp_path / "state")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert re.fullmatch(
            r"endosec demo: serving http://127\.0\.0\.1:\d+  admin http://127\.0\.0\.1:\d+  "
            r"executors: stdlib, aiohttp, node\n", line), line
    finally:
        proc.terminate()
        proc.communicate(timeout=20)
    assert proc.returncode == 0


def test_demo_rejects_an_unknown_backdoor_target() -> None:
    result = CliRunner().invoke(main, ["demo", "--backdoor", "nginx"])
    assert result.exit_code == 2
    assert "no executor named 'nginx'" in result.output


def test_run_reports_executors_that_cannot_start(tmp_path: Path) -> None:
    config = {
        "listen": "127.0.0.1:0", "admin": {"listen": "127.0.0.1:0"},
        "controller": {"active": 2, "floor": 2},
        "executors": [
            {"name": "broken", "argv": ["false", "{port}"], "profile": ["x"],
             "health": {"start_timeout": 1}},
            {"name": "fine", "argv": ["{python}", "-m", "http.server", "{port}", "--bind",
                                      "127.0.0.1"],
             "profile": ["y"], "health": {"path": "/", "start_timeout": 5}},
        ],
    }
    result = subprocess.run(
        [sys.executable, "-m", "endosec.cli", "run", "--config", str(write(tmp_path, config)),
         "--state-dir", str(tmp_path / "state")],
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert "only 1 executors became active; the floor is 2" in result.stderr
    assert "broken: " in result.stderr and "Traceback" not in result.stderr


def test_demo_falls_back_to_python_only_without_node(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "endosec.cli", "demo", "--listen", "127.0.0.1:0",
         "--admin", "127.0.0.1:0", "--state-dir", str(tmp_path / "state")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={"PATH": str(tmp_path / "empty"), "HOME": str(tmp_path)})
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line.endswith("executors: stdlib, aiohttp\n"), line
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert "Node.js not found; running the Python executors only (stdlib, aiohttp)" in err


def test_the_deployment_examples_follow_the_schema() -> None:
    gateway = load_config(ROOT / "examples" / "deploy" / "gateway.yaml")
    assert [e.kind for e in gateway.executors] == ["argv", "agent", "url"]
    data, locate = read_yaml(ROOT / "examples" / "deploy" / "agent.yaml")
    agent = validate(AgentConfig, data, "agent.yaml", locate)
    assert agent.executors[0].name == gateway.executors[1].name


AGENT_KEY = "5e4d9f33b646149c7e1b0d49539a4808a024898e767288c847f35f95f31a4fe7"


def with_agent(tmp_path: Path, **agent: object) -> dict:
    (tmp_path / "agent-cert.pem").write_text("pinned\n")
    if not (tmp_path / "gateway-id.pem").exists():
        new_key(tmp_path / "gateway-id.pem")
    data = demo_data()
    data["executors"].append({"name": "far", "profile": ["x"], "agent": {
        "url": "https://10.0.0.2:8443", "ca": str(tmp_path / "agent-cert.pem"),
        "identity": str(tmp_path / "gateway-id.pem"), "keys": [AGENT_KEY], **agent}})
    return data


@pytest.mark.parametrize(("agent", "message"), [
    ({"identity": "/no/such/gateway-id.pem"},
     r"executors\[3\] \(far\)\.agent\.identity: cannot read /no/such/gateway-id\.pem"),
    ({"keys": ["abcd"]}, r"executors\[3\] \(far\)\.agent\.keys\[0\]: not an Ed25519 public key"),
    ({"authority": "/no/such/ca.pem"}, r"\(far\)\.agent\.authority: cannot read"),
    ({"keys": [], "authority": None},
     r"executors\[3\]\.agent: give keys \(the agent's public keys\) or authority .* admits an "
     r"agent"),
    ({"token": "s3cret"}, r"executors\[3\]\.agent\.token: Extra inputs"),
])
def test_check_names_the_agent_setting_that_cannot_admit(tmp_path: Path, agent: dict,
                                                         message: str) -> None:
    ok = CliRunner().invoke(main, ["check", "--config", str(write(tmp_path, with_agent(
        tmp_path)))])
    assert ok.exit_code == 0, ok.output
    result = CliRunner().invoke(main, ["check", "--config", str(write(tmp_path, with_agent(
        tmp_path, **agent)))])
    assert result.exit_code == 1, result.output
    assert re.search(message, result.output), result.output


def test_an_agent_references_files_relative_to_its_configuration() -> None:
    ref = AgentRef(url="https://10.0.0.2:8443", ca=Path("tls/cert.pem"), identity=Path("id.pem"),
                   authority=Path("ca.pem"))
    moved = ref.relative_to(Path("/etc/endosec"))
    assert (moved.ca, moved.identity, moved.certificate, moved.authority) == (
        Path("/etc/endosec/tls/cert.pem"), Path("/etc/endosec/id.pem"), None,
        Path("/etc/endosec/ca.pem"))


def agent_file(tmp_path: Path, **changes: object) -> Path:
    self_signed(tmp_path / "tls", ("127.0.0.1",))
    if not (tmp_path / "agent-id.pem").exists():
        new_key(tmp_path / "agent-id.pem")
    data = {"listen": "127.0.0.1:0", "tls": {"cert": "tls/cert.pem", "key": "tls/key.pem"},
            "identity": "agent-id.pem", "keys": [AGENT_KEY],
            "executors": [{"name": "x", "argv": ["true", "{port}"], "profile": ["x"]}],
            **changes}
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in data.items() if v is not None}))
    return path


def test_the_agent_file_loads_its_identity_relative_to_itself(tmp_path: Path) -> None:
    config = load_agent_config(agent_file(tmp_path))
    assert config.identity == tmp_path / "agent-id.pem" and config.admit_for == 3600.0
    assert config.certificate is None and config.authority is None
    (tmp_path / "ca.pem").write_bytes((tmp_path / "tls" / "cert.pem").read_bytes())
    config = load_agent_config(agent_file(tmp_path, keys=None, authority="ca.pem"))
    assert (config.keys, config.authority) == ([], tmp_path / "ca.pem")


def test_the_gateway_and_the_agent_read_their_identity_settings_alike(tmp_path: Path) -> None:
    config = load_agent_config(agent_file(tmp_path))
    assert isinstance(config, Admitting) and issubclass(AgentRef, Admitting)
    with pytest.raises(ValidationError, match="frozen"):
        config.keys = []  # type: ignore[misc]


@pytest.mark.parametrize(("changes", "message"), [
    ({"identity": "missing.pem"}, r"agent\.yaml: identity: cannot read .*missing\.pem"),
    ({"identity": "tls/cert.pem"}, r"agent\.yaml: identity: .* not an unencrypted PEM"),
    ({"keys": ["abcd"]}, r"agent\.yaml: keys\[0\]: not an Ed25519 public key"),
    ({"certificate": "tls/cert.pem"}, r"agent\.yaml: certificate: .* for another key"),
    ({"keys": None}, r"agent\.yaml:\d+: \(top level\): give keys \(the gateways' public keys\) "
                     r"or authority .* admits a gateway"),
    ({"token_env": "ENDOSEC_AGENT_TOKEN"}, r"agent\.yaml:\d+: token_env: Extra inputs"),
    ({"admit_for": 0}, r"agent\.yaml:\d+: admit_for: "),
])
def test_the_agent_names_the_setting_that_cannot_admit(tmp_path: Path, changes: dict,
                                                       message: str) -> None:
    path = agent_file(tmp_path, **changes)
    with pytest.raises(ConfigError, match=message):
        load_agent_config(path)
    result = CliRunner().invoke(main, ["agent", "--config", str(path)])
    assert result.exit_code == 1 and re.search(message, result.output), result.output
    assert "Traceback" not in result.output


def test_check_speaks_of_executors_on_the_hosts_network(tmp_path: Path) -> None:
    data = demo_data()
    data["executors"][0]["network"] = "host"
    data["executors"][1]["network"] = "isolated"
    data["executors"][1]["host"] = "127.0.0.2"
    result = CliRunner().invoke(main, ["check", "--config", str(write(tmp_path, data))])
    assert result.exit_code == 0, result.output
    assert re.search(r"network: stdlib(, node)? share the host's network", result.output)
    data["executors"][1]["host"] = "::1"
    result = CliRunner().invoke(main, ["check", "--config", str(write(tmp_path, data))])
    assert "network: isolated needs an IPv4 loopback host, not ::1" in result.output
    assert result.exit_code != 0


def test_a_manifest_that_cannot_be_trusted_is_a_config_error(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    write_manifest(tmp_path / "attest.json", sign_manifest([Measurement("a", {"entry": "0" * 64})],
                                                           key))
    data = yaml.safe_load(DEMO.read_text())
    data["attest"] = {"manifest": "attest.json", "public_key": "operator.pub"}
    with pytest.raises(ConfigError, match=r"attest: public_key: .*operator.pub: cannot read"):
        load_config(write(tmp_path, data))
    (tmp_path / "operator.pub").write_text(raw_public(key.public_key()).hex())
    load_config(write(tmp_path, data))  # relative to the file, signed by that key: fine
    (tmp_path / "operator.pub").write_text(
        raw_public(Ed25519PrivateKey.generate().public_key()).hex())
    with pytest.raises(ConfigError, match="not by the operator key"):
        load_config(write(tmp_path, data))
