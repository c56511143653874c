"""kill -9 a process that appends as fast as it can: the ledger loses at most one batch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from endosec.observe.ledger import Ledger
from endosec.observe.ledger_format import ledger_files
from endosec.observe.ledger_verify import Reason, read_records, verify

BATCH = 8

CHILD = """
import sys, time
from pathlib import Path
from endosec.observe.ledger import Ledger

led = Ledger(Path(sys.argv[1]), batch_records=int(sys.argv[2]), batch_seconds=3600.0,
             max_file_bytes=256 * 1024)
while True:
    record = led.append("verdict", {"outcome": "agreed", "agreed": ["a", "b"],
                                    "dissented": ["c"], "note": "x" * 200}, now=time.time())
    sys.stdout.write(f"{record.seq}\\n")
    sys.stdout.flush()
"""


def append_until_killed(directory: Path, after: int) -> int:
    """Run the appending child, SIGKILL it after ``after`` more records; the last seq it saw."""
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(directory), str(BATCH)],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    try:
        first = int(child.stdout.readline())
        for line in child.stdout:
            if int(line) >= first + after:
                break
        os.kill(child.pid, signal.SIGKILL)
        rest = child.stdout.read().split()
        last = int(rest[-1]) if rest else int(line)
    finally:
        if child.poll() is None:
            child.kill()
        assert child.wait(timeout=30) == -signal.SIGKILL
        child.stdout.close()
    return last


@pytest.mark.slow
def test_kill_9_loses_at_most_one_batch_and_the_chain_continues(tmp_path: Path) -> None:
    directory = tmp_path / "ledger"
    for round_ in range(3):
        acknowledged = append_until_killed(directory, after=1500 + 700 * round_)
        before = verify(directory)
        if not before.ok:  # only a torn last record is acceptable after a crash
            assert before.failure is not None
            assert before.failure.reason is Reason.TRUNCATED
        assert before.last_seq >= acknowledged - (BATCH - 1)
        with Ledger(directory) as led:
            assert led.seq >= acknowledged - (BATCH - 1)
            assert verify(directory).ok
            record = led.append("admin-action", {"after": "kill -9", "round": round_}, now=0.0)
            assert record.seq == led.seq
        report = verify(directory)
        assert report.ok, report.summary()
        assert report.last_seq == record.seq
    assert len(ledger_files(directory)) > 1
    marks = [e.record.payload["round"] for e in read_records(directory)
             if e.record is not None and e.record.kind == "admin-action"]
    assert marks == [0, 1, 2]
