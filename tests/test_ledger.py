from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tempfile
from functools import cache
from pathlib import Path
from types import MappingProxyType

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from endosec.observe.ledger import TRUNCATED, Ledger, _bounded
from endosec.observe.ledger_cli import ledger as ledger_group
from endosec.observe.ledger_format import (
    GENESIS,
    LedgerError,
    canonical,
    fingerprint,
    key_path,
    ledger_files,
)
from endosec.observe.ledger_verify import Reason, read_records, verify

T0 = 1_700_000_000.0


def build(directory: Path, n: int, *, key: Ed25519PrivateKey | None = None,
          **options: int | float) -> Path:
    with Ledger(directory, key=key, **options) as led:  # type: ignore[arg-type]
        for i in range(n):
            led.append("verdict", {"i": i, "outcome": "agreed", "agreed": ["a", "b"],
                                   "dissented": ["c"] if i % 2 else []}, now=T0 + i)
    return directory


def first_file(directory: Path) -> Path:
    return ledger_files(directory)[0]


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def failure_of(directory: Path, **kwargs: object) -> tuple[Reason, int, str, int]:
    report = verify(directory, **kwargs)  # type: ignore[arg-type]
    assert not report.ok
    f = report.failure
    assert f is not None
    return f.reason, f.index, f.file.name, f.line


# --- writing ---------------------------------------------------------------------------------


def test_records_chain_and_verify(tmp_path: Path) -> None:
    directory = tmp_path / "ledger"
    with Ledger(directory) as led:
        first = led.append("verdict", {"outcome": "agreed"}, now=T0)
        second = led.append("controller-action", {"action": "quarantine", "executor": "b"},
                            now=T0 + 1.25)
        assert (first.seq, second.seq) == (1, 2)
        assert first.prev == GENESIS and second.prev == first.digest()
        assert led.head == second.digest() and led.seq == 2
    lines = lines_of(first_file(directory))
    assert lines == [first.line() + b"\n", second.line() + b"\n"]
    parsed = json.loads(lines[1])
    assert canonical(parsed) == lines[1].rstrip(b"\n")
    assert parsed["kind"] == "controller-action" and parsed["ts"] == T0 + 1.25
    report = verify(directory)
    assert report.ok and report.records == 2 and report.last_hash == second.digest()
    assert report.summary() == "ok: 2 records, chain intact, signatures valid"


def test_key_is_created_beside_the_directory_and_reused(tmp_path: Path) -> None:
    directory = build(tmp_path / "ledger", 3)
    key_file = tmp_path / "ledger.key"
    assert key_path(directory) == key_file
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert (directory / "ledger.pub").exists() and not list(directory.glob("*.key"))
    with Ledger(directory) as led:
        assert led.seq == 3
        record = led.append("admin-action", {"who": "ops"}, now=T0 + 10)
    assert record.seq == 4
    report = verify(directory)
    assert report.ok and report.records == 4


def test_an_existing_ledger_refuses_another_key(tmp_path: Path) -> None:
    directory = build(tmp_path / "ledger", 2)
    with pytest.raises(LedgerError, match="opened with"):
        Ledger(directory, key=Ed25519PrivateKey.generate())
    (directory / "ledger.pub").unlink()
    with pytest.raises(LedgerError, match="cannot be continued"):
        Ledger(directory, key=Ed25519PrivateKey.generate())


def test_one_writer_at_a_time(tmp_path: Path) -> None:
    with Ledger(tmp_path / "ledger"), pytest.raises(LedgerError, match="already open"):
        Ledger(tmp_path / "ledger")
    Ledger(tmp_path / "ledger").close()


def test_closed_ledger_refuses_appends(tmp_path: Path) -> None:
    led = Ledger(tmp_path / "ledger")
    led.close()
    led.close()
    with pytest.raises(LedgerError, match="closed"):
        led.append("verdict", {}, now=T0)


def test_bad_kinds_times_and_payloads_are_refused(tmp_path: Path) -> None:
    with Ledger(tmp_path / "ledger") as led:
        for kind in ("", "Verdict", "ledger-rotate", "x" * 65, "a b"):
            with pytest.raises(ValueError, match="kind"):
                led.append(kind, {}, now=T0)
        with pytest.raises(ValueError, match="finite"):
            led.append("verdict", {}, now=float("nan"))
        with pytest.raises(TypeError):
            led.append("verdict", ["not", "a", "mapping"], now=T0)  # type: ignore[arg-type]
        assert led.seq == 0


def test_batches_are_written_by_count_and_by_age(tmp_path: Path) -> None:
    directory = tmp_path / "ledger"
    with Ledger(directory, batch_records=4, batch_seconds=5.0) as led:
        for i in range(3):
            led.append("verdict", {"i": i}, now=T0)
        assert first_file(directory).read_bytes() == b""
        led.append("verdict", {"i": 3}, now=T0)
        assert len(lines_of(first_file(directory))) == 4
        led.append("verdict", {"i": 4}, now=T0 + 1)
        led.tick(T0 + 5.9)
        assert len(lines_of(first_file(directory))) == 4
        led.tick(T0 + 6)
        assert len(lines_of(first_file(directory))) == 5
        led.append("verdict", {"i": 5}, now=T0 + 7)
        led.append("verdict", {"i": 6}, now=T0 + 12)  # the oldest waited 5 s
        assert len(lines_of(first_file(directory))) == 7
        led.append("verdict", {"i": 7}, now=T0 + 13)
        led.flush()
        assert len(lines_of(first_file(directory))) == 8
        led.append("verdict", {"i": 8}, now=T0 + 13)
    assert len(lines_of(first_file(directory))) == 9


def test_payloads_are_bounded_and_plain(tmp_path: Path) -> None:
    with Ledger(tmp_path / "ledger", max_field_chars=100, max_record_bytes=4096) as led:
        record = led.append("verdict", {
            "long": "x" * 150, "body": b"\x00" * 10, "nan": float("inf"),
            "big": 10**100, "set": {"b", "a"}, "nested": {"k": ("v", 1, None, True)},
            3: "non-string key", "many": list(range(1000)),  # type: ignore[dict-item]
        }, now=T0)
        p = record.payload
        assert p["long"] == "x" * 100 + "...[truncated 50 chars]"
        assert p["body"].startswith("<10 bytes sha256:")
        assert p["nan"] == "inf" and p["big"] == "<int of 333 bits>"
        assert p["set"] == ["a", "b"] and p["nested"] == {"k": ["v", 1, None, True]}
        assert p["3"] == "non-string key"
        assert len(p["many"]) == 257 and p["many"][-1] == "...[truncated 744 items]"
        huge = led.append("verdict", {"outcome": "agreed",
                                      **{f"f{i}": "y" * 90 for i in range(100)}}, now=T0)
        assert len(huge.line()) <= 4096
        assert huge.payload["outcome"] == "agreed"
        assert huge.payload[TRUNCATED]["bytes"] > 9000
    assert verify(tmp_path / "ledger").ok


class _Text(str):
    """A str that is not exactly a str: it takes the general path of the bounding."""


def _general(value: object) -> object:
    """``value`` with every dict a read-only mapping and every str a subclass of it."""
    if isinstance(value, dict):
        return MappingProxyType({_general(k): _general(v) for k, v in value.items()})
    if isinstance(value, list):
        return [_general(v) for v in value]
    return _Text(value) if isinstance(value, str) else value


_leaves = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12) \
    | st.binary(max_size=4)
_payloads = st.recursive(_leaves, lambda inner: st.lists(inner, max_size=4)
                         | st.dictionaries(st.text(max_size=12) | st.integers(), inner,
                                           max_size=5), max_leaves=40)


@given(_payloads, st.integers(min_value=1, max_value=10))
def test_plain_dicts_and_strings_are_bounded_as_any_mapping_and_string(value: object,
                                                                      limit: int) -> None:
    """The exact-type shortcut for plain dicts and strings changes nothing."""
    assert _bounded(value, limit) == _bounded(_general(value), limit)


def test_deep_and_wide_plain_dicts_are_cut_as_any_mapping() -> None:
    deep: dict[str, object] = {}
    for _ in range(12):
        deep = {"k": deep}
    wide = {f"k{i}": i for i in range(300)}
    for value in (deep, wide):
        assert _bounded(value, 50) == _bounded(_general(value), 50)
    assert "...truncated" in _bounded(wide, 50)


# --- tampering -------------------------------------------------------------------------------


def rewrite(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(lines))


def test_a_flipped_byte_is_modified_at_that_record(tmp_path: Path) -> None:
    directory = build(tmp_path / "ledger", 6)
    path = first_file(directory)
    lines = lines_of(path)
    lines[3] = lines[3].replace(b'"outcome":"agreed"', b'"outcome":"agreeD"')
    rewrite(path, lines)
    assert failure_of(directory) == (Reason.MODIFIED, 4, path.name, 4)
    report = verify(directory)
    assert report.records == 3
    assert "signature" in report.summary()
    assert report.summary().startswith(f"FAIL at record #4 ({path.name}:4): modified")


def test_a_non_canonical_line_is_modified(tmp_path: Path) -> None:
    directory = build(tmp_path / "ledger", 3)
    path = first_file(directory)
    lines = lines_of(path)
    lines[1] = lines[1].replace(b'{"key"', b'{ "key"')
    rewrite(path, lines)
    reason, index, _, _ = failure_of(directory)
    assert (reason, index) == (Reason.MODIFIED, 2)
    assert "canonical" in verify(directory).summary()


def test_a_removed_record_is_named(tmp_path: Path) -> None:
    directory = build(tmp_path / "ledger", 6)
    path = first_file(directory)
    lines = lines_of(path)
    del lines[2]
    rewrite(path, lines)
    assert failure_of(directory) == (Reason.REMOVED, 3, path.name, 3)
    assert "record #3 missing" in verify(directory).summary()


def test_removed_first_records_are_named(tmp_path: Path) -> None:
    directory = build(tmp_path / "ledger", 5)
    path = first_file(directory)
    rewrite(path, lines_of(path)[2:])
    assert failure_of(directory) == (Reason.REMOVED, 1, path.name, 1)
    assert "#1..#2 missing" in verify(directory).summary()


def test_swapped_records_are_reordered(tmp_path: Path) -> None:
    directory = build(tmp_path / "ledger", 6)
    path = first_file(directory)
    lines = lines_of(path)
    lines[2], lines[3] = lines[3], lines[2]
    rewrite(path, lines)
    assert failure_of(directory) == (Reason.REORDERED, 3, path.name, 3)


def test_a_replayed_record_is_reordered(tmp_path: Path) -> None:
    directory = build(tmp_path / "ledger", 4)
    path = first_file(directory)
    lines = lines_of(path)
    rewrite(path, [*lines[:3], lines[1], lines[3]])
    assert failure_of(directory) == (Reason.REORDERED, 4, path.name, 4)


def test_a_torn_end_is_truncated(tmp_path: Path) -> None:
    directory = build(tmp_path / "ledger", 5)
    path = first_file(directory)
    data = path.read_bytes()
    path.write_bytes(data[:-40])
    assert failure_of(directory) == (Reason.TRUNCATED, 5, path.name, 5)


def test_the_wrong_public_key_is_named(tmp_path: Path) -> None:
    directory = build(tmp_path / "ledger", 3)
    other = Ed25519PrivateKey.generate()
    assert failure_of(directory, public_key=other.public_key()) == (
        Reason.WRONG_KEY, 1, first_file(directory).name, 1)
    assert fingerprint(other.public_key()) in verify(
        directory, public_key=other.public_key()).summary()


def test_records_signed_by_another_key_are_wrong_key(tmp_path: Path) -> None:
    genuine = build(tmp_path / "ledger", 5)
    forged = build(tmp_path / "forged", 5, key=Ed25519PrivateKey.generate())
    path = first_file(genuine)
    lines = lines_of(path)
    lines[3] = lines_of(first_file(forged))[3]
    rewrite(path, lines)
    assert failure_of(genuine) == (Reason.WRONG_KEY, 4, path.name, 4)
    # without ledger.pub the first record's key is the reference
    (genuine / "ledger.pub").unlink()
    assert failure_of(genuine)[:2] == (Reason.WRONG_KEY, 4)


def test_an_altered_key_field_is_modified(tmp_path: Path) -> None:
    directory = build(tmp_path / "ledger", 3)
    other = Ed25519PrivateKey.generate().public_key()
    other_hex = other.public_bytes(serialization.Encoding.Raw,
                                   serialization.PublicFormat.Raw).hex()
    path = first_file(directory)
    lines = lines_of(path)
    record = json.loads(lines[1])
    record["key"] = other_hex
    lines[1] = canonical(record) + b"\n"
    rewrite(path, lines)
    report = verify(directory)
    assert report.failure is not None and report.failure.reason is Reason.MODIFIED
    assert "key field was altered" in report.summary()


# --- rotation --------------------------------------------------------------------------------


def rotated(tmp_path: Path, n: int = 40) -> Path:
    return build(tmp_path / "ledger", n, max_file_bytes=2048, max_record_bytes=1024)


def test_rotation_continues_the_chain_across_files(tmp_path: Path) -> None:
    directory = rotated(tmp_path)
    files = ledger_files(directory)
    assert len(files) > 5
    assert [f.name for f in files[:2]] == ["ledger-000001.jsonl", "ledger-000002.jsonl"]
    assert all(f.stat().st_size <= 2048 + 600 for f in files)
    last = json.loads(lines_of(files[0])[-1])
    assert last["kind"] == "ledger-rotate" and last["payload"] == {"next": files[1].name}
    report = verify(directory)
    assert report.ok and report.files == len(files)
    user = [e.record for e in read_records(directory)
            if e.record is not None and e.record.kind == "verdict"]
    assert [r.payload["i"] for r in user] == list(range(40))
    # a middle file verifies on its own, anchored at its first record
    assert verify(files[2]).ok


def test_a_missing_middle_file_is_removed(tmp_path: Path) -> None:
    directory = rotated(tmp_path)
    files = ledger_files(directory)
    files[2].unlink()
    reason, _, name, line = failure_of(directory)
    assert (reason, name, line) == (Reason.REMOVED, files[3].name, 1)
    assert f"{files[2].name} is missing" in verify(directory).summary()


def test_a_missing_last_file_is_truncated(tmp_path: Path) -> None:
    directory = rotated(tmp_path)
    files = ledger_files(directory)
    files[-1].unlink()
    reason, _, name, _ = failure_of(directory)
    assert (reason, name) == (Reason.TRUNCATED, files[-1].name)


def test_a_file_cut_at_a_record_boundary_shows_at_the_next_file(tmp_path: Path) -> None:
    directory = rotated(tmp_path)
    files = ledger_files(directory)
    rewrite(files[1], lines_of(files[1])[:-1])  # drops the rotation record
    reason, _, name, line = failure_of(directory)
    assert (reason, name, line) == (Reason.REMOVED, files[2].name, 1)


def test_moved_records_between_files_are_reordered(tmp_path: Path) -> None:
    directory = rotated(tmp_path)
    files = ledger_files(directory)
    one, two = lines_of(files[1]), lines_of(files[2])
    rewrite(files[1], [*one, two[0]])  # first record of file 3 appended to file 2
    rewrite(files[2], two[1:])
    reason, _, name, _ = failure_of(directory)
    assert (reason, name) == (Reason.REORDERED, files[1].name)


def test_no_files_is_truncated(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert failure_of(tmp_path / "empty")[0] is Reason.TRUNCATED


# --- recovery --------------------------------------------------------------------------------


def test_a_torn_last_line_is_cut_on_reopen_and_noted(tmp_path: Path) -> None:
    directory = build(tmp_path / "ledger", 5)
    path = first_file(directory)
    whole = path.read_bytes()
    path.write_bytes(whole[:-70])
    assert failure_of(directory)[0] is Reason.TRUNCATED
    with Ledger(directory) as led:
        assert led.recovered is not None and led.recovered.dropped_bytes > 0
        assert led.seq == 4
        assert path.read_bytes() == b"".join(lines_of(path)[:4])
        assert verify(directory).ok
        record = led.append("verdict", {"after": "crash"}, now=T0 + 100)
    assert record.seq == 6
    kinds = [e.record.kind for e in read_records(directory) if e.record is not None]
    assert kinds[-2:] == ["ledger-recovery", "verdict"]
    assert verify(directory).records == 6


def test_a_damaged_last_record_is_not_continued(tmp_path: Path) -> None:
    directory = build(tmp_path / "ledger", 3)
    path = first_file(directory)
    lines = lines_of(path)
    lines[-1] = lines[-1].replace(b'"i":2', b'"i":7')
    rewrite(path, lines)
    with pytest.raises(LedgerError, match="bad signature"):
        Ledger(directory)


def test_a_crash_between_rotation_and_the_new_file_is_repaired(tmp_path: Path) -> None:
    directory = rotated(tmp_path, 60)
    gone = ledger_files(directory)[-1]
    gone.unlink()  # as if the crash came after the rotation record, before the new file
    assert failure_of(directory)[0] is Reason.TRUNCATED
    with Ledger(directory, max_file_bytes=2048, max_record_bytes=1024) as led:
        record = led.append("verdict", {"i": "next"}, now=T0)
        assert led.path.name == gone.name
    assert verify(directory).ok
    assert record.seq == verify(directory).last_seq


# --- any single byte ---------------------------------------------------------------------------


@cache
def sample_ledger() -> tuple[bytes, bytes]:
    with tempfile.TemporaryDirectory() as tmp:
        directory = build(Path(tmp) / "ledger", 4)
        return first_file(directory).read_bytes(), (directory / "ledger.pub").read_bytes()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_single_byte_change_is_detected(data: st.DataObject) -> None:
    original, pub = sample_ledger()
    at = data.draw(st.integers(0, len(original) - 1), label="offset")
    byte = data.draw(st.integers(0, 255).filter(lambda b: b != original[at]), label="byte")
    changed = original[:at] + bytes([byte]) + original[at + 1:]
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        (directory / "ledger-000001.jsonl").write_bytes(changed)
        (directory / "ledger.pub").write_bytes(pub)
        assert not verify(directory).ok
        (directory / "ledger.pub").unlink()
        assert not verify(directory).ok
        assert not verify(directory / "ledger-000001.jsonl").ok


# --- command line ------------------------------------------------------------------------------


def test_cli_verify_ok_and_fail(tmp_path: Path) -> None:
    directory = build(tmp_path / "ledger", 4)
    runner = CliRunner()
    result = runner.invoke(ledger_group, ["verify", str(directory)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == "ok: 4 records, chain intact, signatures valid"
    path = first_file(directory)
    lines = lines_of(path)
    lines[2] = lines[2].replace(b'"outcome":"agreed"', b'"outcome":"disagr"')
    rewrite(path, lines)
    result = runner.invoke(ledger_group, ["verify", str(directory)])
    assert result.exit_code == 1
    assert result.output.startswith(f"FAIL at record #3 ({path.name}:3): modified")


def test_cli_verify_with_a_public_key_file(tmp_path: Path) -> None:
    directory = build(tmp_path / "ledger", 2)
    runner = CliRunner()
    result = runner.invoke(ledger_group, ["verify", str(directory),
                                          "--public-key", str(directory / "ledger.pub")])
    assert result.exit_code == 0, result.output
    other = tmp_path / "other.pub"
    other.write_bytes(Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex().encode())
    result = runner.invoke(ledger_group, ["verify", str(directory), "--public-key", str(other)])
    assert result.exit_code == 1 and "wrong key" in result.output
    junk = tmp_path / "junk.pub"
    junk.write_text("not a key")
    result = runner.invoke(ledger_group, ["verify", str(directory), "--public-key", str(junk)])
    assert result.exit_code == 1 and "not a PEM or hex" in result.output
    (directory / "ledger.pub").write_text("not a key either")
    result = runner.invoke(ledger_group, ["verify", str(directory)])
    assert result.exit_code == 1 and "ledger.pub: not a PEM or hex" in result.output


def test_cli_show_filters(tmp_path: Path) -> None:
    directory = tmp_path / "ledger"
    with Ledger(directory) as led:
        led.append("verdict", {"outcome": "agreed", "agreed": ["a", "b"], "dissented": ["c"]},
                   now=T0)
        led.append("controller-action", {"action": "cleanse", "executor": "c"}, now=T0 + 60)
        led.append("verdict", {"outcome": "agreed", "agreed": ["a", "b"]}, now=T0 + 120)
    runner = CliRunner()

    def show(*args: str) -> list[str]:
        result = runner.invoke(ledger_group, ["show", str(directory), *args])
        assert result.exit_code == 0, result.output
        return result.output.splitlines()

    everything = show()
    assert len(everything) == 3
    assert everything[1] == ('#2 2023-11-14T22:14:20.000000Z controller-action '
                             'action="cleanse" executor="c"')
    assert [line.split()[0] for line in show("--executor", "c")] == ["#1", "#2"]
    assert [line.split()[0] for line in show("--kind", "verdict")] == ["#1", "#3"]
    assert [line.split()[0] for line in show("--since", str(T0 + 60))] == ["#2", "#3"]
    assert [line.split()[0] for line in show("--since", "2023-11-14T22:15:00+00:00")] == ["#3"]
    as_json = [json.loads(line) for line in show("--json", "--kind", "controller-action")]
    assert as_json[0]["payload"] == {"action": "cleanse", "executor": "c"}
    bad = runner.invoke(ledger_group, ["show", str(directory), "--since", "yesterday"])
    assert bad.exit_code == 2


def test_cli_show_reports_unreadable_lines(tmp_path: Path) -> None:
    directory = build(tmp_path / "ledger", 2)
    with first_file(directory).open("ab") as f:
        f.write(b"garbage\n")
    result = CliRunner().invoke(ledger_group, ["show", str(directory)])
    assert result.exit_code == 0
    assert "skipped ledger-000001.jsonl:3" in result.output


def test_cli_runs_as_a_module(tmp_path: Path) -> None:
    directory = build(tmp_path / "ledger", 3)
    command = [sys.executable, "-m", "endosec.observe.ledger_cli", "verify", str(directory)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "PYTHONWARNINGS": "error"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok: 3 records")
    first_file(directory).write_bytes(first_file(directory).read_bytes()[:-1])
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1 and "truncated" in done.stdout
