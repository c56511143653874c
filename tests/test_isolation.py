"""Component localisation and load-aware rotation in the controller: a dissent points at the
components only the dissenter has; an isolated one is held by at most one voter; a busy host
puts off a due rotation for a bounded time, never what dissent forces."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from endosec.core.controller import Controller, ControllerPolicy
from endosec.core.controller_events import (
    Action,
    ActionDone,
    Activate,
    AdminRequest,
    Alert,
    Cleanse,
    Event,
    Isolate,
    LoadChanged,
    MarkComponents,
    Quarantine,
    RequestWakeup,
    Tick,
    VerdictReached,
)
from endosec.core.model import ExecutorState, Outcome, Profile, Verdict
from endosec.core.scheduler import scheduler_from_config
from endosec.core.suspicion import Suspicion, SuspicionPolicy, implicated
from endosec.core.trust import TrustBook
from endosec.observe.load import CpuLoad

LLHTTP = "http-parser:llhttp"
# The demo's three stacks and a fourth that shares nothing but the OS.
POOL = [
    Profile("stdlib", frozenset({"os:linux", "runtime:cpython-3", "http:stdlib-http.server",
                                 "json:stdlib-json"})),
    Profile("aiohttp", frozenset({"os:linux", "runtime:cpython-3", "http:aiohttp", LLHTTP,
                                  "json:stdlib-json"})),
    Profile("go", frozenset({"os:linux", "runtime:go", "http:net-http", "json:encoding-json"})),
    Profile("node", frozenset({"os:linux", "runtime:nodejs", "http:node-http", LLHTTP,
                               "json:v8"})),
]


class Runtime:
    """Carries out every order at once, as a runtime that never fails would, and keeps the
    controller's wake-ups; ``log`` is every action."""

    def __init__(self, ctrl: Controller, now: float = 0.0) -> None:
        self.ctrl, self.now = ctrl, now
        self.log: list[Action] = []
        self.wakeups: list[float] = []
        self.history: list[frozenset[str]] = []  # the voters after every action
        self._apply(ctrl.start(now))

    def _apply(self, actions: list[Action]) -> None:
        queue = list(actions)
        while queue:
            action = queue.pop(0)
            self.log.append(action)
            if isinstance(action, RequestWakeup):
                self.wakeups.append(action.at)
            elif isinstance(action, (Activate, Cleanse)):
                queue.extend(self.ctrl.handle(ActionDone(action, True, self.now)))
            self.history.append(frozenset(self.ctrl.voters))

    def feed(self, event: Event) -> list[Action]:
        start = len(self.log)
        self._apply(self.ctrl.handle(event))
        return self.log[start:]

    def committed(self) -> frozenset[str]:
        return frozenset(n for n, s in self.ctrl.states.items()
                         if s in (ExecutorState.ACTIVE, ExecutorState.ACTIVATING))

    def run_until(self, end: float) -> None:
        """Deliver every wake-up due before ``end``, in time order."""
        while True:
            due = sorted(w for w in self.wakeups if w >= self.now)
            if not due or due[0] >= end:
                self.now = end
                return
            self.now = due[0]
            self.wakeups.remove(due[0])
            self.feed(Tick(self.now))


def controller(policy: ControllerPolicy, pool: list[Profile] = POOL, seed: int = 1) -> Controller:
    return Controller(pool, policy, scheduler_from_config("round-robin"),
                      TrustBook([p.name for p in pool]), random.Random(seed))


def dissent(rt: Runtime, dissenter: str) -> list[Action]:
    agreed = tuple(n for n in rt.ctrl.voters if n != dissenter)
    verdict = Verdict(Outcome.ACCEPTED, None, agreed, (dissenter,), (), "")
    return rt.feed(VerdictReached(verdict, rt.now))


def test_implicated_components_are_those_no_agreeing_executor_holds() -> None:
    stdlib, aiohttp, go, node = (p.components for p in POOL)
    assert implicated([aiohttp], [stdlib, go]) == {"http:aiohttp", LLHTTP}
    assert implicated([aiohttp], [stdlib, node]) == {"http:aiohttp"}  # node cleared llhttp
    assert implicated([aiohttp, node], [stdlib]) >= {LLHTTP, "runtime:nodejs"}


def test_suspicion_decays_and_operator_marks_expire() -> None:
    s = Suspicion(SuspicionPolicy(isolate_at=0.5, half_life=10.0))
    s.dissent({LLHTTP}, now=0.0)
    assert s.isolated(9.0) == {LLHTTP}
    assert s.isolated(11.0) == frozenset()  # past one half-life: below the threshold
    s.dissent({LLHTTP}, now=20.0)  # 0.25 + 1
    assert s.scores(20.0)[LLHTTP] == pytest.approx(1.25)
    s.mark({"json:v8"}, until=20.0)
    assert s.isolated(19.0) == {LLHTTP, "json:v8"}
    assert "json:v8" not in s.isolated(21.0)
    with pytest.raises(ValueError, match="isolate_at"):
        SuspicionPolicy(isolate_at=0.0)


def test_after_a_dissent_attributed_to_llhttp_aiohttp_and_node_never_vote_together() -> None:
    ctrl = controller(ControllerPolicy(active_size=3, floor=2, rotate_every=1.0))
    rt = Runtime(ctrl)
    assert rt.committed() == {"stdlib", "aiohttp", "go"}
    out = dissent(rt, "aiohttp")  # stdlib and go agree: llhttp is only aiohttp's, here
    assert Quarantine("aiohttp", "dissented 1 time(s) within 60s") in out
    [isolate] = [a for a in out if isinstance(a, Isolate)]
    assert isolate.component == LLHTTP and isolate.on
    assert ctrl.isolated == {LLHTTP}
    start = len(rt.history)
    rt.run_until(200.0)  # ~200 rotations
    seen = rt.history[start:]
    assert not any({"aiohttp", "node"} <= s for s in seen)  # never both voting
    # they take turns: isolation keeps them apart, it does not bench either for good
    assert any("aiohttp" in s for s in seen) and any("node" in s for s in seen)
    assert sum(isinstance(a, Activate) for a in rt.log) > 100


def test_a_component_the_agreeing_executors_share_is_not_isolated() -> None:
    ctrl = controller(ControllerPolicy(active_size=3, floor=2, rotate_every=None),
                      pool=[POOL[0], POOL[1], POOL[3], POOL[2]])
    rt = Runtime(ctrl)
    assert rt.committed() == {"stdlib", "aiohttp", "node"}
    out = dissent(rt, "aiohttp")  # node agreed: llhttp answered correctly there
    assert not [a for a in out if isinstance(a, Isolate)]
    assert ctrl.isolated == frozenset()
    assert ctrl.suspicion(rt.now) == {"http:aiohttp": 1.0}


def test_isolation_ends_when_suspicion_fades_and_then_they_may_vote_together() -> None:
    ctrl = controller(ControllerPolicy(active_size=4, floor=2, rotate_every=None,
                                       suspicion_half_life=10.0))
    rt = Runtime(ctrl)
    assert rt.committed() == {p.name for p in POOL}
    out = rt.feed(MarkComponents(frozenset({LLHTTP}), until=5.0, now=0.0))
    [mark] = [a for a in out if isinstance(a, Isolate)]
    assert mark.on and mark.reason.startswith("marked by the operator")
    # one llhttp holder rotated out in place (no spare), cleansed, and kept out
    assert len(rt.committed() & {"aiohttp", "node"}) == 1
    assert ctrl.isolated == {LLHTTP}
    out = rt.feed(Tick(6.0))
    assert Isolate(LLHTTP, False, "no longer suspect") in out
    assert rt.committed() == {p.name for p in POOL}  # the spare that waited joins


def test_isolation_never_goes_below_the_floor() -> None:
    pool = [POOL[1], POOL[3]]
    ctrl = controller(ControllerPolicy(active_size=2, floor=2, rotate_every=None), pool=pool)
    rt = Runtime(ctrl)
    out = rt.feed(MarkComponents(frozenset({LLHTTP}), until=100.0, now=0.0))
    assert rt.committed() == {"aiohttp", "node"}
    assert [a.message for a in out if isinstance(a, Alert)] == [
        f"component {LLHTTP} is isolated but node keeps voting: without it fewer than the "
        "floor vote"]
    assert not [a for a in rt.feed(Tick(1.0)) if isinstance(a, Alert)]  # said once


def test_an_operator_cannot_activate_a_second_holder_of_an_isolated_component() -> None:
    ctrl = controller(ControllerPolicy(active_size=3, floor=2, rotate_every=None))
    rt = Runtime(ctrl)
    rt.feed(MarkComponents(frozenset({LLHTTP}), until=100.0, now=0.0))
    out = rt.feed(AdminRequest("activate", "node", 1.0))
    assert [a.message for a in out if isinstance(a, Alert)] == [
        f"refused to activate node: {LLHTTP} is isolated and an executor holding it votes"]
    assert "node" not in rt.committed()


def test_a_busy_host_defers_a_due_rotation_until_the_load_falls() -> None:
    policy = ControllerPolicy(active_size=3, floor=2, rotate_every=10.0, defer_max=30.0)
    rt = Runtime(controller(policy))
    [due] = rt.wakeups
    rt.feed(LoadChanged(0.95, 0.0))
    before = rt.committed()
    out = rt.feed(Tick(due))
    assert not [a for a in out if isinstance(a, Activate)]
    assert RequestWakeup(due + 30.0) in out
    assert any(isinstance(a, Alert) and "busy (95% CPU)" in a.message for a in out)
    assert rt.committed() == before
    out = rt.feed(LoadChanged(0.3, due + 5.0))  # the load fell: it rotates now
    assert [a for a in out if isinstance(a, Activate)]


def test_a_deferred_rotation_happens_at_the_deadline_however_busy() -> None:
    policy = ControllerPolicy(active_size=3, floor=2, rotate_every=10.0, defer_max=30.0)
    rt = Runtime(controller(policy))
    [due] = rt.wakeups
    rt.feed(LoadChanged(1.0, 0.0))
    assert not [a for a in rt.feed(Tick(due)) if isinstance(a, Activate)]
    assert [a for a in rt.feed(Tick(due + 30.0)) if isinstance(a, Activate)]


def test_dissent_is_never_deferred_and_defer_above_none_never_defers() -> None:
    rt = Runtime(controller(ControllerPolicy(active_size=3, floor=2, rotate_every=10.0)))
    rt.feed(LoadChanged(1.0, 0.0))
    out = dissent(rt, "go")
    assert any(isinstance(a, Quarantine) for a in out)
    assert any(isinstance(a, Cleanse) for a in out)
    assert any(isinstance(a, Activate) and a.executor == "node" for a in out)
    calm = Runtime(controller(ControllerPolicy(active_size=3, floor=2, rotate_every=10.0,
                                               defer_above=None)))
    [due] = calm.wakeups
    calm.feed(LoadChanged(1.0, 0.0))
    assert [a for a in calm.feed(Tick(due)) if isinstance(a, Activate)]


@pytest.mark.parametrize("bad", [{"defer_above": 0.0}, {"defer_above": 1.5},
                                 {"defer_max": 0.0}, {"isolate_at": -1.0},
                                 {"suspicion_half_life": float("nan")}])
def test_bad_policy_values_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        ControllerPolicy(**bad)  # type: ignore[arg-type]


def test_the_controller_wakes_itself_when_an_isolation_ends() -> None:
    ctrl = controller(ControllerPolicy(active_size=3, floor=2, rotate_every=None,
                                       suspicion_half_life=10.0))
    rt = Runtime(ctrl)
    dissent(rt, "aiohttp")  # suspicion 1, threshold 0.5: isolated for one half-life
    assert ctrl.isolated == {LLHTTP}
    rt.run_until(100.0)  # nothing but the controller's own wake-ups
    assert ctrl.isolated == frozenset()
    assert Isolate(LLHTTP, False, "no longer suspect") in rt.log
    assert len(rt.committed()) == 3


def test_cpu_load_reads_the_kernel_counters(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 100 800 0 0 0 0 0 0\n")
    load = CpuLoad(stat)
    stat.write_text("cpu  175 0 175 850 0 0 0 0 0 0\n")  # 150 busy of 200
    assert load.sample() == pytest.approx(0.75)
    assert load.sample() is None  # no time passed
    assert CpuLoad(tmp_path / "missing").sample() is None
