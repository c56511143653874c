"""The behaviour judge: hard rules over what an executor does besides answering, a baseline
taken at each start, and the controller quarantining on what breaks a rule."""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from endosec.core.behaviour import ALLOWED_PATHS, BehaviourPolicy, Judge, PathSet, Sample
from endosec.core.controller import Controller, ControllerPolicy
from endosec.core.controller_events import BehaviourObserved, Cleanse, Quarantine
from endosec.core.model import ExecutorState, Profile
from endosec.core.scheduler import scheduler_from_config
from endosec.core.trust import TrustBook
from endosec.identity import Admission, Identity, Initiator, Responder, Trust, Verifier, public_key
from endosec.protocols.http import Request
from endosec.runtime.agent import AgentHandler
from endosec.runtime.opens import Opens, opens_possible
from endosec.runtime.process import ExecutorSpec, ProcessExecutor
from endosec.runtime.wire import exchange
from tests.test_isolation import Runtime

NODE = frozenset({"/usr/bin/python3.11", "/usr/bin/node"})


def test_a_connection_out_and_a_new_program_are_reported_once_each() -> None:
    judge = Judge()
    assert judge.judge([Sample("node", 1.0, 0, NODE)], 10.0) == []  # the baseline
    assert judge.judge([Sample("node", 1.0, 0, NODE)], 11.0) == []
    [out] = judge.judge([Sample("node", 1.0, 3, NODE)], 12.0)
    assert (out.rule, out.count, out.at) == ("connect-out", 3, 12.0)
    assert judge.judge([Sample("node", 1.0, 3, NODE)], 13.0) == []  # nothing new
    [shell] = judge.judge([Sample("node", 1.0, 3, NODE | {"/usr/bin/dash"})], 14.0)
    assert shell.rule == "new-program" and "/usr/bin/dash" in shell.evidence
    assert judge.judge([Sample("node", 1.0, 3, NODE | {"/usr/bin/dash"})], 15.0) == []


def test_a_new_start_takes_a_new_baseline() -> None:
    judge = Judge()
    judge.judge([Sample("node", 1.0, 0, NODE)], 10.0)
    assert judge.judge([Sample("node", 1.0, 5, NODE)], 11.0)
    # cleansed: a new run, whose first sample is its baseline (a fresh segment counts from 0)
    assert judge.judge([Sample("node", 20.0, 0, NODE)], 21.0) == []
    assert judge.judge([Sample("node", 20.0, 0, NODE)], 22.0) == []
    # but packets refused before the first look still count: the segment starts at 0
    [early] = judge.judge([Sample("node", 30.0, 2, NODE)], 31.0)
    assert (early.rule, early.count) == ("connect-out", 2)
    assert judge.judge([Sample("stdlib", 1.0, None, frozenset({"/usr/bin/python3"}))], 1) == []


traces = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 5),
                            st.frozensets(st.sampled_from(["a", "b", "c", "d"]))),
                  min_size=1, max_size=40)


@given(traces)
def test_reports_come_only_from_what_is_new_in_a_run(trace) -> None:
    """Whatever the trace: a report names only packets beyond the most seen in that run (from
    0), or programs beyond what the run has shown (its first sample is their baseline)."""
    judge = Judge()
    runs: dict[int, tuple[int, frozenset[str]]] = {}
    started = 0
    for step, (restart, refused_add, programs) in enumerate(trace):
        if restart == 0:
            started += 1
        seen = runs.get(started) or (0, programs)
        refused = seen[0] + refused_add
        reports = judge.judge([Sample("x", float(started), refused, programs)], float(step))
        rules = {r.rule for r in reports}
        assert ("connect-out" in rules) == (refused > seen[0])
        assert ("new-program" in rules) == bool(programs - seen[1])
        runs[started] = (max(refused, seen[0]), seen[1] | programs)


def test_the_controller_quarantines_on_behaviour_even_below_the_floor() -> None:
    pool = [Profile("a", frozenset({"x"})), Profile("b", frozenset({"y"}))]
    ctrl = Controller(pool, ControllerPolicy(active_size=2, floor=2, rotate_every=None),
                      scheduler_from_config("random"), TrustBook(["a", "b"]),
                      random.Random(1))
    rt = Runtime(ctrl)
    before = ctrl.counters("a")["quarantines"]
    out = rt.feed(BehaviourObserved("a", "behaviour: connect-out: 1 packet(s)", 1.0))
    assert Quarantine("a", "behaviour: connect-out: 1 packet(s)") in out
    assert any(isinstance(x, Cleanse) and x.executor == "a" for x in out)
    assert ctrl.counters("a")["quarantines"] == before + 1
    # it comes back only through the cleanse (the runtime here completes it at once)
    assert ctrl.state("a") is ExecutorState.ACTIVE


def _round(judge: Judge, at: float, cpu: dict[str, float], *, rss: int = 50 << 20,
           idle: frozenset[str] = frozenset()) -> list[str]:
    samples = [Sample(n, 1.0, 0, NODE, at=at, cpu=c, rss=rss, voting=n not in idle,
                      idle=n in idle) for n, c in cpu.items()]
    return [f"{r.executor}:{r.rule}" for r in judge.judge(samples, at)]


def test_cpu_burn_is_judged_against_the_other_voters_not_against_load() -> None:
    judge = Judge(BehaviourPolicy(cpu_floor=0.4, cpu_ratio=4.0, cpu_samples=2))
    used = {"a": 0.0, "b": 0.0, "c": 0.0}
    assert _round(judge, 0.0, used) == []
    # heavy load: all three at 0.9 of a core, for a while: nothing
    for t in range(1, 6):
        used = {n: v + 0.9 for n, v in used.items()}
        assert _round(judge, float(t), used) == []
    # b burns a core while the others go quiet: twice in a row, then reported once
    used = {"a": used["a"] + 0.1, "b": used["b"] + 1.0, "c": used["c"] + 0.1}
    assert _round(judge, 6.0, used) == []
    used = {"a": used["a"] + 0.1, "b": used["b"] + 1.0, "c": used["c"] + 0.1}
    assert _round(judge, 7.0, used) == ["b:cpu-burn"]
    used = {"a": used["a"] + 0.1, "b": used["b"] + 1.0, "c": used["c"] + 0.1}
    assert _round(judge, 8.0, used) == []


def test_a_spare_serving_nothing_is_judged_against_the_floor_alone() -> None:
    judge = Judge(BehaviourPolicy(cpu_floor=0.4, cpu_samples=2))
    spare = frozenset({"s"})
    assert _round(judge, 0.0, {"s": 0.0}, idle=spare) == []
    assert _round(judge, 1.0, {"s": 0.5}, idle=spare) == []
    assert _round(judge, 2.0, {"s": 1.0}, idle=spare) == ["s:cpu-burn"]


def test_memory_beyond_twice_the_start_and_a_margin_is_reported() -> None:
    judge = Judge(BehaviourPolicy(memory_ratio=2.0, memory_margin=100 << 20))
    assert _round(judge, 0.0, {"a": 0.0}, rss=50 << 20) == []
    # the baseline is the first sample's: 50 MiB, so the limit is 200 MiB
    assert judge.judge([Sample("a", 1.0, 0, NODE, at=1.0, rss=190 << 20)], 1.0) == []
    [r] = judge.judge([Sample("a", 1.0, 0, NODE, at=2.0, rss=210 << 20)], 2.0)
    assert r.rule == "memory" and "210 MiB" in r.evidence
    with pytest.raises(ValueError, match="cpu_ratio"):
        BehaviourPolicy(cpu_ratio=0)


async def test_a_process_is_sampled_here_or_by_its_agent(tmp_path: Path) -> None:
    """The driver that hosts an executor samples it; an agent sends its sample on."""
    spec = ExecutorSpec(name="x", argv=[sys.executable, "-m", "http.server", "{port}",
                                        "--bind", "127.0.0.1"],
                        scratch_root=tmp_path, health_path="/")
    executor = ProcessExecutor(spec)
    assert await executor.sample() is None  # not running
    await executor.start()
    try:
        here = await executor.sample()
        assert here is not None and here.rss > 1 << 20 and here.cpu >= 0
        assert here.processes >= 1 and here.fds >= 4  # stdio and its listening socket
        assert os.path.realpath(sys.executable) in {os.path.realpath(p) for p in here.programs}
        gateway, agent = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
        door = Responder(Identity(agent), Admission(Verifier(
            public_key(agent), Trust(frozenset({public_key(gateway)})), role="gateway"),
            admit_for=60))
        visitor = Initiator(Identity(gateway), Verifier(
            public_key(gateway), Trust(frozenset({public_key(agent)})), role="agent"))
        now = time.time()
        admitted = door.admit(visitor.proof(door.hello(visitor.hello(now), now), now), now)
        handler = AgentHandler({"x": executor}, door)
        auth = ((b"host", b"agent"),
                (b"authorization", b"Session " + admitted.session.hex().encode()))
        reply = await handler(Request(b"GET", b"/executors/x/sample", auth), "peer")
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        sent = Sample.from_dict("x", json.loads(body)["sample"])
        assert (sent.started, sent.programs, sent.refused, sent.processes) == (
            here.started, here.programs, here.refused, here.processes)
        assert sent.at >= here.at
    finally:
        await executor.stop()
    with pytest.raises((ValueError, KeyError)):
        Sample.from_dict("x", {"started": 1, "programs": "sh"})


def _opened(judge: Judge, at: float, opened: set[str], *, started: float = 1.0,
            unlisted: int = 0) -> list[str]:
    sample = Sample("a", started, 0, NODE, at=at, opened=frozenset(opened), unlisted=unlisted)
    return [r.evidence for r in judge.judge([sample], at)]


def test_a_file_read_outside_what_it_read_to_start_is_reported_once() -> None:
    judge = Judge(BehaviourPolicy(allowed_paths=("/usr/", "/etc/hosts")))
    assert _opened(judge, 0.0, {"/etc/nginx/nginx.conf"}) == []  # the baseline: its start
    # its baseline again, what anyone may read, and nothing at all: nothing to report
    assert _opened(judge, 1.0, {"/etc/nginx/nginx.conf", "/usr/lib/x.so", "/etc/hosts"}) == []
    assert _opened(judge, 2.0, set()) == []
    assert _opened(judge, 3.0, {"/etc/shadow", "/etc/hosts"}) == ["opened /etc/shadow"]
    assert _opened(judge, 4.0, {"/etc/shadow"}) == []  # already reported in this run
    # too many files to list: reported, though not one is named (never in a baseline)
    assert _opened(judge, 5.0, set(), unlisted=3) == ["opened and 3 more file(s)"]
    assert _opened(judge, 6.0, {"/root/.ssh/id_ed25519"}, started=7.0) == []  # a new run
    assert _opened(judge, 7.0, set(), started=8.0, unlisted=9) == []
    with pytest.raises(ValueError, match="absolute"):
        BehaviourPolicy(allowed_paths=("etc/",))


opened_traces = st.lists(st.tuples(st.booleans(), st.frozensets(st.sampled_from(
    ["/etc/a", "/etc/b", "/usr/c", "/srv/d", "/usr"]))), min_size=1, max_size=30)


@given(opened_traces)
def test_only_files_new_to_the_run_and_not_allowed_are_reported(trace) -> None:
    """Whatever the trace: a report names exactly the files that are neither allowed, nor in
    the run's first sample, nor reported before in that run."""
    judge = Judge(BehaviourPolicy(allowed_paths=("/usr/",)))
    started, seen = 0.0, None
    for step, (restart, opened) in enumerate(trace):
        if restart or seen is None:
            started, seen = started + 1, set(opened)
            assert _opened(judge, float(step), set(opened), started=started) == []
            continue
        new = sorted(p for p in opened if p not in seen and not p.startswith("/usr/"))
        reports = _opened(judge, float(step), set(opened), started=started)
        assert reports == ([f"opened {', '.join(new)}"] if new else [])
        seen |= opened


async def test_the_kernel_shows_the_files_an_executor_opens(tmp_path: Path) -> None:
    """fanotify, as root: a file outside the executor's directories, opened after its start,
    reaches its sample; its own scratch directory and the system's files do not."""
    reason = opens_possible()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    secret = tmp_path / "secret"
    secret.write_text("s3cret")
    opens = Opens()
    spec = ExecutorSpec(name="x", argv=[
        sys.executable, "-m", "endosec.redteam.implant", "--listen-port", "{port}",
        "--scratch", "{scratch}", "--", sys.executable, "-m", "http.server", "{inner_port}",
        "--bind", "127.0.0.1"], scratch_root=tmp_path / "executors", health_path="/")
    executor = ProcessExecutor(spec, opens)
    await executor.start()
    try:
        baseline = await executor.sample()
        assert baseline is not None and baseline.opened is not None
        assert not {p for p in baseline.opened if p.startswith(str(executor.scratch))}
        (executor.scratch / "implant.json").write_text(json.dumps(
            {"kind": "read-outside-scratch", "path": str(secret)}))
        host, port = executor.address
        assert (await exchange(host, port, "GET", "/")).status == 200
        later = await executor.sample()
        assert later is not None and later.opened is not None
        assert str(secret) in later.opened
        assert not any(p in PathSet(ALLOWED_PATHS) for p in later.opened)
        judge = Judge()
        judge.judge([baseline], 1.0)
        [report] = judge.judge([later], 2.0)
        assert report.rule == "read-outside" and str(secret) in report.evidence
    finally:
        await executor.stop()
        opens.close()


@given(traces)
def test_a_flagged_executor_recovers_only_through_cleansing(trace) -> None:
    """Flagged (for strict voting) from its first report until a new run starts: quiet
    samples in the same run never clear it."""
    judge = Judge()
    started, reported, refused = 0, False, 0
    for step, (restart, refused_add, programs) in enumerate(trace):
        if restart == 0:
            started, reported, refused = started + 1, False, 0
        refused += refused_add
        sample = Sample("x", float(started), refused, frozenset({"a"}) | programs)
        reported = bool(judge.judge([sample], float(step))) or reported
        assert ("x" in judge.flags) == reported
