"""What a leader publishes and followers report (`endosec.cluster.control`), and a controller
that resumes from a view another one left (`Controller.start(now, resume, held)`)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from endosec.cluster.control import (
    Agreements,
    ControlError,
    ControlView,
    decode_report,
    encode_report,
)
from endosec.core.controller import RESUMED, Controller, ControllerPolicy
from endosec.core.controller_events import (
    Activate,
    BehaviourObserved,
    Cleanse,
    IdentityReport,
    ProbationResult,
    VerdictReached,
)
from endosec.core.model import ExecutorState, Outcome, Profile, Verdict
from endosec.core.scheduler import scheduler_from_config
from endosec.core.trust import TrustBook

NAMES = ("a", "b", "c", "d", "e")
STATES = st.sampled_from(list(ExecutorState))


def test_a_view_survives_the_store_and_refuses_what_is_not_one() -> None:
    v = ControlView("gw-a", 7, 3, "http://127.0.0.1:1",
                    {"a": ExecutorState.ACTIVE, "b": ExecutorState.QUARANTINED},
                    ("a",), (), ("a",), (), ("b",), {"a": (130.0, 29.5, 0.0),
                                                     "b": (0.0, 3.0, 1.0)})
    assert ControlView.decode(v.encode()) == v
    assert not v.newer_than(ControlView.decode(v.encode()))
    assert v.newer_than(None)
    for raw, why in [(b"[]", "JSON object"), (b"{", "not JSON"),
                     (v.encode().replace(b'"quarantined"', b'"gone"'), "states"),
                     (v.encode().replace(b'"term":7', b'"term":-1'), "term"),
                     (v.encode().replace(b'"voters":["a"]', b'"voters":["b"]'), "active"),
                     (v.encode().replace(b'"held":["b"]', b'"held":["z"]'), "held"),
                     (v.encode().replace(b'"b":[0.0', b'"z":[0.0'), "trust"),
                     (v.encode().replace(b'"b":[0.0,3.0,1.0]', b'"b":[0.0]'), "trust")]:
        with pytest.raises(ControlError, match=why):
            ControlView.decode(raw)


@pytest.mark.parametrize("event", [
    VerdictReached(Verdict(Outcome.ACCEPTED, None, ("a", "b"), ("c",), (), "2 of 3"), 1.0),
    VerdictReached(Verdict(Outcome.NO_QUORUM, None, (), (), ("a",), "none"), 1.0, True),
    ProbationResult("d", False, 1.0),
    BehaviourObserved("b", "behaviour: exec: /bin/sh", 1.0),
    IdentityReport("c", False, "program differs", 1.0),
    Agreements({"a": 12, "b": 3}, 1.0),
])
def test_a_report_carries_its_event_and_takes_the_leaders_time(event: object) -> None:
    got = decode_report(encode_report(event), 42.0)  # type: ignore[arg-type]
    assert type(got) is type(event)
    assert got.now == 42.0
    assert {**_fields(got), "now": 1.0} == _fields(event)


def _fields(event: object) -> dict[str, object]:
    return {k: getattr(event, k) for k in event.__slots__}  # type: ignore[attr-defined]


def test_a_report_that_is_not_one_is_refused() -> None:
    for raw in (b'{"kind":"tick"}', b'{"kind":"probation","executor":"a","agreed":"yes"}',
                b'{"kind":"verdict","outcome":"won","agreed":[],"dissented":[],"failed":[],'
                b'"reason":"","confirmed":false}',
                b'{"kind":"agreements","counts":{"a":-1}}'):
        with pytest.raises(ControlError):
            decode_report(raw, 0.0)


def controller(active: int = 3) -> Controller:
    profiles = [Profile(n, frozenset({f"impl:{n}"})) for n in NAMES]
    policy = ControllerPolicy(active_size=active, floor=2, rotate_every=None)
    return Controller(profiles, policy, scheduler_from_config("random"), TrustBook(NAMES),
                      random.Random(1))


@given(st.fixed_dictionaries({n: STATES for n in NAMES}), st.sets(st.sampled_from(NAMES)))
def test_a_resumed_controller_redoes_only_what_was_under_way(
        states: dict[str, ExecutorState], held: set[str]) -> None:
    c = controller()
    actions = c.start(0.0, states, held)
    dirty = {n for n, s in states.items()
             if s in (ExecutorState.QUARANTINED, ExecutorState.CLEANSING)}
    cleansed = [a.executor for a in actions if isinstance(a, Cleanse)]
    # every dirty executor not held is cleansed exactly once; nothing else is
    assert sorted(cleansed) == sorted(dirty - held)
    assert {n for n in dirty & held if c.state(n) is ExecutorState.QUARANTINED} == dirty & held
    # nothing dirty is activated, and whoever voted still votes
    activated = {a.executor for a in actions if isinstance(a, Activate)}
    assert not activated & dirty
    assert {n for n, s in states.items() if s is ExecutorState.ACTIVE} <= set(c.voters)
    for name, state in states.items():
        if name not in dirty and name not in activated:
            assert c.state(name) is RESUMED[state]


def test_resuming_ignores_an_executor_the_pool_no_longer_has() -> None:
    c = controller()
    c.start(0.0, {"a": ExecutorState.ACTIVE, "gone": ExecutorState.ACTIVE})
    assert "a" in c.voters and "gone" not in c.states
