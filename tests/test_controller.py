from __future__ import annotations

import random
from collections import deque

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from endosec.core.controller import TRANSITIONS, Controller, ControllerPolicy, Signal
from endosec.core.controller_events import (
    Action,
    ActionDone,
    Activate,
    AdminRequest,
    Alert,
    Cleanse,
    Deactivate,
    Event,
    HealthReport,
    IdentityReport,
    ProbationResult,
    Quarantine,
    Reconfigure,
    RequestWakeup,
    ThreatChanged,
    Tick,
    VerdictReached,
)
from endosec.core.model import ExecutorState, Outcome, Profile, Verdict
from endosec.core.scheduler import RoundRobinScheduler, scheduler_from_config
from endosec.core.trust import Identity, Level, TrustBook

S = ExecutorState
NAMES = ["a", "b", "c", "d", "e"]


# -- a Playbook: feed events with >>, expect actions with << ----------------------------------


class AnyAlert:
    """Matches an Alert of this level whose message contains ``text``."""

    def __init__(self, level: str, text: str = "") -> None:
        self.level, self.text = level, text

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Alert) and other.level == self.level
                and self.text in other.message)

    def __hash__(self) -> int:
        return hash((self.level, self.text))

    def __repr__(self) -> str:
        return f"AnyAlert({self.level!r}, {self.text!r})"


class Playbook:
    """A conversation with a controller, in the style of mitmproxy's test Playbook.

    ``pb >> event`` feeds an event (every earlier action must have been expected);
    ``pb << action`` expects the next action; ``pb.done(action)`` builds the completion of the
    emitted order equal to ``action``; ``assert pb`` checks nothing is left unexpected.
    """

    def __init__(self, controller: Controller, now: float = 0.0) -> None:
        self.controller = controller
        self.pending: deque[Action] = deque(controller.start(now))
        self.emitted: list[Action] = list(self.pending)

    def __rshift__(self, event: Event) -> Playbook:
        assert not self.pending, f"unexpected actions: {list(self.pending)}"
        actions = self.controller.handle(event)
        self.pending.extend(actions)
        self.emitted.extend(actions)
        return self

    def __lshift__(self, expected: object) -> Playbook:
        assert self.pending, f"expected {expected!r}, got nothing"
        got = self.pending.popleft()
        assert got == expected, f"expected {expected!r}, got {got!r}"
        return self

    def __bool__(self) -> bool:
        assert not self.pending, f"unexpected actions: {list(self.pending)}"
        return True

    def done(self, action: Action, ok: bool = True, now: float = 0.0,
             detail: str = "") -> ActionDone:
        for sent in reversed(self.emitted):
            if sent == action:
                return ActionDone(sent, ok, now, detail)
        raise AssertionError(f"{action!r} was never emitted")

    def activate_all(self, *names: str) -> Playbook:
        for name in names:
            self >> self.done(Activate(name))
        return self


class MeanWaits(random.Random):
    """Random choices, but every exponential wait is its mean: timelines stay exact."""

    def expovariate(self, lambd: float = 1.0) -> float:
        return 1.0 / lambd


def make(names=NAMES, **policy) -> tuple[Controller, TrustBook]:
    profiles = [Profile(n, frozenset({f"impl:{n}"})) for n in names]
    trust = TrustBook(names)
    ctrl = Controller(profiles, ControllerPolicy(**policy), RoundRobinScheduler(), trust,
                      MeanWaits(0))
    return ctrl, trust


def started(names=NAMES, **policy) -> tuple[Playbook, TrustBook]:
    """A controller whose first three executors (round-robin picks a, b, c) vote."""
    ctrl, trust = make(names, **policy)
    pb = Playbook(ctrl)
    active = names[:ctrl.policy.active_size]
    for n in active:
        pb << Activate(n)
    if ctrl.policy.rotate_every is not None:
        pb << RequestWakeup(ctrl.policy.rotate_every)
    pb.activate_all(*active)
    assert ctrl.voters == tuple(active)
    return pb, trust


def verdict(agreed=(), dissented=(), failed=(), outcome=Outcome.ACCEPTED) -> Verdict:
    return Verdict(outcome, None, tuple(agreed), tuple(dissented), tuple(failed), "test")


# -- start and the table ----------------------------------------------------------------------


def test_start_activates_the_first_set_and_nobody_votes_until_ready() -> None:
    ctrl, _ = make()
    pb = Playbook(ctrl)
    pb << Activate("a") << Activate("b") << Activate("c")
    assert pb
    assert ctrl.voters == ()
    assert ctrl.states == {"a": S.ACTIVATING, "b": S.ACTIVATING, "c": S.ACTIVATING,
                           "d": S.SPARE, "e": S.SPARE}
    pb >> pb.done(Activate("a"))
    assert ctrl.voters == ("a",)
    assert ctrl.counters("a")["activations"] == 1


def test_start_on_a_small_pool_alerts() -> None:
    ctrl, _ = make(["a"], active_size=3, floor=2)
    pb = Playbook(ctrl)
    pb << Activate("a") << AnyAlert("warning", "no spare") << AnyAlert("critical", "floor")
    assert pb


def test_quarantined_reaches_an_activation_only_through_cleansing() -> None:
    assert (S.QUARANTINED, Signal.ACTIVATE) not in TRANSITIONS
    assert (S.CLEANSING, Signal.ACTIVATE) not in TRANSITIONS
    # every path out of QUARANTINED that avoids CLEANSING stays in QUARANTINED
    reach, frontier = {S.QUARANTINED}, [S.QUARANTINED]
    while frontier:
        state = frontier.pop()
        for (src, _), dst in TRANSITIONS.items():
            if src is state and dst is not S.CLEANSING and dst not in reach:
                reach.add(dst)
                frontier.append(dst)
    assert reach == {S.QUARANTINED}


def test_lifecycle_errors() -> None:
    ctrl, _ = make()
    with pytest.raises(RuntimeError, match="start"):
        ctrl.handle(Tick(0.0))
    ctrl.start(0.0)
    with pytest.raises(RuntimeError, match="already"):
        ctrl.start(1.0)
    with pytest.raises(TypeError):
        ctrl.handle("tick")  # type: ignore[arg-type]


# -- dissent, quarantine, cleanse, replace ----------------------------------------------------


def test_first_dissent_quarantines_cleanses_and_replaces() -> None:
    pb, trust = started()
    ctrl = pb.controller
    (pb >> VerdictReached(verdict(agreed="ab", dissented="c"), 1.0)
        << Quarantine("c", "dissented 1 time(s) within 60s") << Cleanse("c") << Activate("d"))
    assert pb
    assert ctrl.voters == ("a", "b")
    assert ctrl.state("c") is S.CLEANSING
    assert trust.behaviour("c") < 0.5 < trust.behaviour("a")
    pb >> pb.done(Activate("d"), now=2.0)
    assert ctrl.voters == ("a", "b", "d")
    pb >> pb.done(Cleanse("c"), now=3.0)
    assert ctrl.state("c") is S.SPARE
    assert ctrl.counters("c") == {"dissents": 1, "quarantines": 1, "cleanses": 1,
                                  "rotations": 0, "activations": 1}


def test_cleansing_keeps_the_trust_history() -> None:
    pb, trust = started()
    pb >> VerdictReached(verdict(agreed="ab", dissented="c"), 1.0)
    pb << Quarantine("c", "dissented 1 time(s) within 60s") << Cleanse("c") << Activate("d")
    low = trust.score("c")
    pb >> pb.done(Cleanse("c"))
    assert trust.score("c") == low < 0.5


def test_dissents_must_fall_within_the_window() -> None:
    pb, _ = started(quarantine_after=2, dissent_window=10.0)
    pb >> VerdictReached(verdict(agreed="ab", dissented="c"), 0.0)
    pb >> VerdictReached(verdict(agreed="ab", dissented="c"), 10.0)  # the first has expired
    assert pb
    pb >> VerdictReached(verdict(agreed="ab", failed="c"), 15.0)
    pb << Quarantine("c", "dissented 2 time(s) within 10s") << Cleanse("c") << Activate("d")
    assert pb


def test_failures_count_only_when_configured() -> None:
    pb, trust = started(failures_are_dissent=False)
    pb >> VerdictReached(verdict(agreed="ab", failed="c"), 1.0)
    assert pb
    assert pb.controller.state("c") is S.ACTIVE
    assert trust.evidence("c") == (0.0, 0.0)


def test_no_quorum_warns_and_holds_only_the_failed_to_account() -> None:
    pb, trust = started()
    v = verdict(dissented="a", failed="c", outcome=Outcome.NO_QUORUM)
    (pb >> VerdictReached(v, 1.0)
        << AnyAlert("warning", "no-quorum")
        << Quarantine("c", "dissented 1 time(s) within 60s") << Cleanse("c") << Activate("d"))
    assert pb
    assert pb.controller.state("a") is S.ACTIVE
    assert trust.evidence("a") == (0.0, 0.0)


def test_stragglers_lose_trust_but_are_not_quarantined_again() -> None:
    pb, trust = started()
    pb >> VerdictReached(verdict(agreed="ab", dissented="c"), 1.0)
    pb << Quarantine("c", "dissented 1 time(s) within 60s") << Cleanse("c") << Activate("d")
    # a late verdict from before the quarantine names c (now CLEANSING) and e (a spare)
    pb >> VerdictReached(verdict(agreed="abe", dissented="c"), 1.5)
    assert pb
    assert trust.evidence("c") == (0.0, pytest.approx(1.99))
    assert trust.evidence("e")[0] == 1.0
    assert pb.controller.counters("c")["dissents"] == 2
    assert pb.controller.counters("c")["quarantines"] == 1


def test_activating_straggler_is_quarantined() -> None:
    pb, _ = started()
    pb >> VerdictReached(verdict(agreed="ab", dissented="c"), 1.0)
    pb << Quarantine("c", "dissented 1 time(s) within 60s") << Cleanse("c") << Activate("d")
    pb >> VerdictReached(verdict(agreed="ab", dissented="d"), 1.1)
    pb << Quarantine("d", "dissented 1 time(s) within 60s") << Cleanse("d") << Activate("e")
    assert pb


@pytest.mark.parametrize("event", [
    VerdictReached(verdict(agreed="az"), 0.0),
    ProbationResult("z", True, 0.0),
    HealthReport("z", False, 0.0),
    ActionDone(Activate("z"), True, 0.0),
    ActionDone(Quarantine("z", "x"), True, 0.0),
    AdminRequest("activate", "z", 0.0),
])
def test_unknown_executors_are_refused(event) -> None:
    pb, trust = started()
    with pytest.raises(ValueError, match="'z'"):
        pb >> event
    assert trust.evidence("a") == (0.0, 0.0)  # the verdict was refused whole


# -- replacement, spares and the floor --------------------------------------------------------


def test_running_out_of_spares_alerts_once_then_critical_below_the_floor() -> None:
    pb, _ = started(names=["a", "b", "c", "d"])
    pb >> HealthReport("a", False, 1.0)
    pb << Quarantine("a", "failed its health check") << Cleanse("a") << Activate("d")
    pb >> HealthReport("b", False, 2.0)
    (pb << Quarantine("b", "failed its health check") << Cleanse("b")
        << AnyAlert("warning", "no spare left: 2 of 3"))
    pb >> HealthReport("c", False, 3.0)
    (pb << Quarantine("c", "failed its health check") << Cleanse("c")
        << AnyAlert("critical", "only 1 executor(s)"))
    assert pb
    # cleansed executors come straight back in, and the alerts re-arm
    pb >> pb.done(Cleanse("a")) << Activate("a")
    pb >> pb.done(Cleanse("b")) << Activate("b")
    pb >> pb.done(Cleanse("c"))  # the set is full again: c waits as a spare
    assert pb.controller.state("c") is S.SPARE
    pb >> HealthReport("d", False, 4.0)
    pb << Quarantine("d", "failed its health check") << Cleanse("d") << Activate("c")
    pb >> HealthReport("a", False, 5.0)
    (pb << Quarantine("a", "failed its health check") << Cleanse("a")
        << AnyAlert("warning", "no spare left"))
    assert pb


def test_failed_activation_quarantines_and_tries_another_spare() -> None:
    ctrl, _ = make()
    pb = Playbook(ctrl)
    pb << Activate("a") << Activate("b") << Activate("c")
    (pb >> pb.done(Activate("b"), ok=False, detail="replay failed")
        << AnyAlert("warning", "activating b failed: replay failed")
        << Quarantine("b", "activation failed: replay failed") << Cleanse("b") << Activate("d"))
    assert pb


def test_stale_activation_is_ignored() -> None:
    pb, _ = started()
    pb >> HealthReport("a", False, 1.0)
    pb << Quarantine("a", "failed its health check") << Cleanse("a") << Activate("d")
    old = pb.done(Activate("d"))
    pb >> HealthReport("d", False, 1.5)
    pb << Quarantine("d", "failed its health check") << Cleanse("d") << Activate("e")
    pb >> pb.done(Cleanse("d"))
    assert pb.controller.state("d") is S.SPARE
    pb >> HealthReport("e", False, 2.0)
    pb << Quarantine("e", "failed its health check") << Cleanse("e") << Activate("d")
    pb >> old  # the first activation of d finishing now must not make d a voter
    assert pb.controller.state("d") is S.ACTIVATING
    pb >> pb.done(Activate("d"))
    assert pb.controller.state("d") is S.ACTIVE


def test_health_of_spares_and_quarantined() -> None:
    pb, _ = started()
    pb >> HealthReport("e", True, 1.0)
    assert pb
    pb >> HealthReport("e", False, 1.0) << Quarantine("e", "failed its health check")
    pb << Cleanse("e")
    pb >> HealthReport("e", False, 1.2)  # already being cleansed
    assert pb
    assert pb.controller.voters == ("a", "b", "c")


# -- cleanse failures -------------------------------------------------------------------------


def test_failed_cleanse_stays_quarantined_and_retries_with_backoff() -> None:
    pb, _ = started(cleanse_retry=2.0, cleanse_retry_max=5.0)
    ctrl = pb.controller
    pb >> VerdictReached(verdict(agreed="ab", dissented="c"), 10.0)
    pb << Quarantine("c", "dissented 1 time(s) within 60s") << Cleanse("c") << Activate("d")
    (pb >> pb.done(Cleanse("c"), ok=False, now=11.0, detail="image missing")
        << AnyAlert("warning", "cleansing c failed: image missing") << RequestWakeup(13.0))
    assert ctrl.state("c") is S.QUARANTINED and ctrl.held == ()  # its retry will come
    pb >> AdminRequest("activate", "c", 12.0) << AnyAlert("warning", "refused to activate c")
    pb >> Tick(12.9)
    assert pb
    pb >> Tick(13.0) << Cleanse("c")
    pb >> pb.done(Cleanse("c"), ok=False, now=14.0)
    pb << AnyAlert("warning", "retry 2 in 4s") << RequestWakeup(18.0)
    pb >> Tick(18.0) << Cleanse("c")
    pb >> pb.done(Cleanse("c"), ok=False, now=20.0)
    pb << AnyAlert("warning", "retry 3 in 5s") << RequestWakeup(25.0)  # capped
    pb >> Tick(25.0) << Cleanse("c")
    pb >> pb.done(Cleanse("c"), now=26.0)
    assert ctrl.state("c") is S.SPARE
    assert ctrl.counters("c")["cleanses"] == 1


def test_a_cleanse_that_cannot_succeed_is_held_with_an_alert_not_retried() -> None:
    pb, _ = started(cleanse_retry=2.0)
    ctrl = pb.controller
    pb >> VerdictReached(verdict(agreed="ab", dissented="c"), 10.0)
    pb << Quarantine("c", "dissented 1 time(s) within 60s") << Cleanse("c") << Activate("d")
    done = pb.done(Cleanse("c"), ok=False, now=11.0, detail="replay of #5 fails every time")
    pb >> ActionDone(done.action, False, 11.0, done.detail, retry=False)
    pb << AnyAlert("warning", "c cannot be brought back: replay of #5 fails every time; it "
                              "stays quarantined until an operator orders a cleanse")
    assert pb  # no RequestWakeup: nothing to wait for
    assert ctrl.state("c") is S.QUARANTINED and ctrl.held == ("c",)
    pb >> Tick(1000.0)
    assert pb and ctrl.state("c") is S.QUARANTINED
    pb >> pb.done(Activate("d"), now=12.0)  # the rest of the pool goes on
    assert ctrl.voters == ("a", "b", "d")
    pb >> AdminRequest("cleanse", "c", 1001.0) << Cleanse("c")
    assert ctrl.held == ()
    pb >> pb.done(Cleanse("c"), now=1002.0)
    assert ctrl.state("c") is S.SPARE


def test_an_activation_that_cannot_succeed_quarantines_without_a_cleanse() -> None:
    ctrl, _ = make()
    pb = Playbook(ctrl)
    pb << Activate("a") << Activate("b") << Activate("c")
    done = pb.done(Activate("b"))
    (pb >> ActionDone(done.action, False, 1.0, "journal gap", retry=False)
        << AnyAlert("warning", "b cannot be brought back: journal gap")
        << Quarantine("b", "activation cannot succeed: journal gap") << Activate("d"))
    assert pb and ctrl.state("b") is S.QUARANTINED


# -- probation --------------------------------------------------------------------------------


def test_probation_shadows_until_enough_agreements() -> None:
    pb, trust = started(probation_agreements=2)
    ctrl = pb.controller
    pb >> VerdictReached(verdict(agreed="ab", dissented="c"), 1.0)
    pb << Quarantine("c", "dissented 1 time(s) within 60s") << Cleanse("c") << Activate("d")
    pb >> pb.done(Cleanse("c"))
    assert ctrl.state("c") is S.PROBATION
    assert ctrl.shadows == ("c",)
    assert "c" not in ctrl.voters
    pb >> ProbationResult("c", True, 2.0)
    assert ctrl.state("c") is S.PROBATION
    pb >> ProbationResult("c", True, 3.0)
    assert ctrl.state("c") is S.SPARE
    assert ctrl.shadows == ()
    pb >> ProbationResult("c", True, 3.1)  # stale: ignored
    assert trust.evidence("c")[0] == pytest.approx(1 * 0.99 + 1)
    assert pb


def test_probation_disagreement_sends_it_back() -> None:
    pb, _ = started(probation_agreements=3)
    pb >> HealthReport("c", False, 1.0)
    pb << Quarantine("c", "failed its health check") << Cleanse("c") << Activate("d")
    pb >> pb.done(Cleanse("c"))
    pb >> ProbationResult("c", True, 2.0)
    (pb >> ProbationResult("c", False, 3.0)
        << Quarantine("c", "disagreed while on probation") << Cleanse("c"))
    assert pb
    pb >> pb.done(Cleanse("c"))
    pb >> ProbationResult("c", True, 4.0) >> ProbationResult("c", True, 4.0)
    assert pb.controller.state("c") is S.PROBATION  # the streak restarted after the cleanse


# -- Proof-of-Trust levels ---------------------------------------------------------------------


def test_a_failed_attestation_quarantines_a_voter_at_once_even_below_the_floor() -> None:
    pb, trust = started(["a", "b", "c"], floor=3)
    ctrl = pb.controller
    pb >> IdentityReport("a", True, "", 1.0)
    assert ctrl.level("a", 1.0) is Level.L2 and trust.identity("a") is Identity.ATTESTED
    (pb >> IdentityReport("b", False, "exe:/usr/sbin/nginx", 2.0)
        << Quarantine("b", "attestation failed: exe:/usr/sbin/nginx") << Cleanse("b")
        << AnyAlert("warning", "no spare left") << AnyAlert("critical"))
    assert pb
    assert ctrl.voters == ("a", "c") and ctrl.level("b", 2.0) is Level.L0
    # cleansed but not re-attested: it stays L0 and never rejoins
    pb >> pb.done(Cleanse("b"))
    assert ctrl.state("b") is S.PROBATION and ctrl.level("b", 3.0) is Level.L0
    pb >> AdminRequest("activate", "b", 3.0) << AnyAlert("warning", "below L2")
    assert pb and "b" not in ctrl.voters


def test_an_executor_below_l2_shadows_until_its_points_come_back() -> None:
    pb, trust = started(quarantine_after=9)
    ctrl = pb.controller
    for t in range(3):
        pb >> VerdictReached(verdict(agreed="ab", dissented="c"), float(t))
    assert "c" in ctrl.voters and ctrl.level("c", 3.0) is Level.L2
    (pb >> VerdictReached(verdict(agreed="ab", dissented="c"), 3.0)
        << Quarantine("c", "trust fell to L1 (40 points)") << Cleanse("c") << Activate("d"))
    pb >> pb.done(Cleanse("c"))
    assert ctrl.state("c") is S.PROBATION and ctrl.shadows == ("c",)  # though no probation
    for t in range(9):
        pb >> ProbationResult("c", True, 4.0 + t)
    assert ctrl.state("c") is S.PROBATION and trust.points("c") == 49
    pb >> ProbationResult("c", True, 20.0)
    assert ctrl.state("c") is S.SPARE and ctrl.level("c", 20.0) is Level.L2
    assert pb


# -- rotation ---------------------------------------------------------------------------------


def test_rotation_is_make_before_break() -> None:
    ctrl, _ = make(rotate_every=30.0)
    pb = Playbook(ctrl)
    pb << Activate("a") << Activate("b") << Activate("c") << RequestWakeup(30.0)
    pb.activate_all("a", "b", "c")
    pb >> Tick(29.0)
    assert pb
    pb >> Tick(30.0) << Activate("d") << RequestWakeup(60.0)
    assert ctrl.voters == ("a", "b", "c")  # nobody leaves before d can vote
    (pb >> pb.done(Activate("d"), now=31.0)
        << Deactivate("a", "rotated out for d") << Cleanse("a"))
    assert ctrl.voters == ("b", "c", "d")
    assert ctrl.counters("a")["rotations"] == 1
    pb >> pb.done(Cleanse("a"))
    pb >> Tick(60.0) << Activate("e") << RequestWakeup(90.0)
    pb >> pb.done(Activate("e")) << Deactivate("b", "rotated out for e") << Cleanse("b")
    assert pb


def test_rotation_without_cleanse_returns_to_spares() -> None:
    pb, _ = started(rotate_every=10.0, rotate_count=2, cleanse_on_rotate=False)
    pb >> Tick(10.0) << Activate("d") << Activate("e") << RequestWakeup(20.0)
    pb >> pb.done(Activate("e")) << Deactivate("b", "rotated out for e")
    assert pb.controller.state("b") is S.SPARE
    assert pb.controller.voters == ("a", "c", "e")


def test_rotation_only_retires_what_it_can_replace_or_cleanse_in_place() -> None:
    pb, _ = started(names=["a", "b", "c", "d"], rotate_every=10.0, rotate_count=3)
    pb >> Tick(10.0) << Activate("d") << RequestWakeup(20.0)
    pb >> pb.done(Activate("d")) << Deactivate("a", "rotated out for d") << Cleanse("a")
    # a is still cleansing: no spare, so one voter (three, less the floor of two) is cleansed
    # in place, and no "no spare left" alert is raised for it
    pb >> Tick(20.0) << Deactivate("b", "rotated out to be cleansed") << Cleanse("b")
    pb << RequestWakeup(30.0)
    assert pb
    assert pb.controller.voters == ("c", "d")
    pb >> pb.done(Cleanse("a")) << Activate("a")  # back to three with the first spare
    pb >> pb.done(Activate("a")) >> pb.done(Cleanse("b"))
    assert pb
    assert pb.controller.voters == ("a", "c", "d") and pb.controller.state("b") is S.SPARE


def test_without_spares_rotation_cleanses_in_place_above_the_floor_only() -> None:
    pb, _ = started(rotate_every=10.0, floor=3, names=["a", "b", "c"])
    pb >> Tick(10.0) << RequestWakeup(20.0)  # three voters, floor three: nobody can go
    assert pb and pb.controller.voters == ("a", "b", "c")


def test_failed_replacement_is_retried_with_another_spare_or_abandoned() -> None:
    pb, _ = started(rotate_every=10.0)
    pb >> Tick(10.0) << Activate("d") << RequestWakeup(20.0)
    (pb >> pb.done(Activate("d"), ok=False)
        << AnyAlert("warning", "activating d failed")
        << Quarantine("d", "activation failed") << Cleanse("d") << Activate("e"))
    (pb >> pb.done(Activate("e"), ok=False)
        << AnyAlert("warning", "activating e failed")
        << Quarantine("e", "activation failed") << Cleanse("e"))
    assert pb
    assert pb.controller.voters == ("a", "b", "c")  # the rotation is abandoned, a stays


def test_retiree_quarantined_mid_rotation_lets_the_replacement_fill_in() -> None:
    pb, _ = started(rotate_every=10.0)
    pb >> Tick(10.0) << Activate("d") << RequestWakeup(20.0)
    pb >> HealthReport("a", False, 11.0)
    pb << Quarantine("a", "failed its health check") << Cleanse("a")  # d is already on its way
    pb >> pb.done(Activate("d"))
    assert pb
    assert pb.controller.voters == ("b", "c", "d")


def test_rotations_come_faster_under_threat_and_slow_down_after() -> None:
    pb, _ = started(rotate_every=100.0, rotate_min=10.0)
    pb >> ThreatChanged(1.0, now=5.0) << RequestWakeup(15.0)  # redrawn at the faster rate
    pb >> ThreatChanged(0.5, now=6.0)  # falling: the wait already drawn stands
    assert pb
    pb >> Tick(15.0) << Activate("d") << RequestWakeup(15.0 + 55.0)  # halfway: mean 55
    pb >> ThreatChanged(0.0, now=16.0)
    pb >> pb.done(Activate("d")) << Deactivate("a", "rotated out for d") << Cleanse("a")
    pb >> Tick(70.0) << Activate("e") << RequestWakeup(170.0)  # calm again: mean 100
    assert pb


def test_the_active_set_grows_under_threat_and_shrinks_back() -> None:
    pb, _ = started(grow_under_threat=True)
    pb >> ThreatChanged(0.3, now=1.0)  # calm: nothing changes
    assert pb
    pb >> ThreatChanged(1.0, now=2.0) << Activate("d") << Activate("e")  # the whole pool
    pb.activate_all("d", "e")
    assert pb.controller.voters == ("a", "b", "c", "d", "e")
    pb >> ThreatChanged(0.0, now=3.0)
    pb << Deactivate("a", "the active set shrank") << Deactivate("b", "the active set shrank")
    assert pb
    assert len(pb.controller.voters) == 3


def test_a_threat_level_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(ValueError, match="level"):
        ThreatChanged(1.5, now=0.0)
    with pytest.raises(ValueError, match="rotate_min"):
        ControllerPolicy(rotate_every=10.0, rotate_min=20.0)


# -- operator orders --------------------------------------------------------------------------


def test_admin_quarantine_holds_without_cleansing_and_warns_below_floor() -> None:
    pb, _ = started(names=["a", "b", "c"])
    (pb >> AdminRequest("quarantine", "a", 1.0) << Quarantine("a", "operator order")
        << AnyAlert("warning", "no spare left"))
    assert pb
    (pb >> AdminRequest("quarantine", "b", 2.0) << Quarantine("b", "operator order")
        << AnyAlert("warning", "below the floor of 2") << AnyAlert("critical", "fail closed"))
    pb >> Tick(100.0)
    assert pb
    assert pb.controller.state("a") is S.QUARANTINED  # held for inspection
    assert pb.controller.held == ("a", "b")
    pb >> AdminRequest("quarantine", "a", 3.0)
    assert pb


def test_admin_cleanse_and_activate() -> None:
    pb, _ = started()
    pb >> AdminRequest("cleanse", "e", 1.0) << Cleanse("e")  # a spare needs no quarantine
    pb >> AdminRequest("cleanse", "e", 1.1)  # already cleansing
    pb >> AdminRequest("activate", "e", 1.2) << AnyAlert("warning", "cleansing")
    (pb >> AdminRequest("cleanse", "a", 2.0) << Quarantine("a", "operator order")
        << Cleanse("a") << Activate("d"))
    pb >> pb.done(Cleanse("e"))
    pb >> AdminRequest("activate", "e", 3.0) << Activate("e")  # operators may grow the set
    pb >> AdminRequest("activate", "e", 3.1)  # already activating
    pb >> AdminRequest("activate", "b", 3.2)  # already active
    assert pb


# -- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"active_size": 0}, "active_size"),
    ({"floor": 0}, "floor"),
    ({"floor": 4}, "floor"),
    ({"quarantine_after": 0}, "quarantine_after"),
    ({"dissent_window": 0.0}, "dissent_window"),
    ({"probation_agreements": -1}, "probation_agreements"),
    ({"rotate_every": float("nan")}, "rotate_every"),
    ({"rotate_count": 0}, "rotate_count"),
    ({"cleanse_retry": -1.0}, "cleanse_retry"),
])
def test_policy_validation_names_the_field(kwargs, field) -> None:
    with pytest.raises(ValueError, match=field):
        ControllerPolicy(**kwargs)


def test_event_and_pool_validation() -> None:
    with pytest.raises(ValueError, match="now"):
        Tick(float("nan"))
    with pytest.raises(ValueError, match="kind"):
        AdminRequest("reboot", "a", 0.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="level"):
        Alert("info", "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unique"):
        make(["a", "a"])
    with pytest.raises(ValueError, match="'b'"):
        Controller([Profile("b", frozenset())], ControllerPolicy(), RoundRobinScheduler(),
                   TrustBook(["a"]), random.Random(0))


def test_orders_compare_by_executor_not_sequence() -> None:
    assert Activate("a", 1) == Activate("a", 2)
    assert Cleanse("a", 1) != Activate("a", 1)


# -- properties over random conversations ----------------------------------------------------


@st.composite
def scenarios(draw):
    n = draw(st.integers(1, 8))
    active = draw(st.integers(1, 5))
    policy = ControllerPolicy(
        active_size=active,
        floor=draw(st.integers(1, active)),
        quarantine_after=draw(st.integers(1, 3)),
        dissent_window=draw(st.sampled_from([1.0, 10.0, 100.0])),
        probation_agreements=draw(st.integers(0, 2)),
        rotate_every=draw(st.sampled_from([None, 1.0, 5.0])),
        rotate_count=draw(st.integers(1, 3)),
        cleanse_on_rotate=draw(st.booleans()),
        failures_are_dissent=draw(st.booleans()),
    )
    parts = ["os:a", "os:b", "srv:x", "srv:y", "srv:z", "lib:1"]
    profiles = [Profile(f"x{i}", draw(st.frozensets(st.sampled_from(parts), max_size=3)))
                for i in range(n)]
    pick = st.integers(0, 50)
    step = st.one_of(
        st.tuples(st.just("verdict"),
                  st.lists(st.tuples(pick, st.sampled_from(["agreed", "dissented", "failed"])),
                           max_size=5),
                  st.sampled_from(list(Outcome))),
        st.tuples(st.just("tick"), st.sampled_from([0.0, 0.5, 1.0, 5.0, 30.0])),
        st.tuples(st.just("wake")),
        st.tuples(st.just("finish")),
        # None: failed, and the runtime says another attempt would fail the same way
        st.tuples(st.just("done"), pick, st.sampled_from([True, True, True, False, None])),
        st.tuples(st.just("finish")),
        st.tuples(st.just("health"), pick, st.booleans()),
        st.tuples(st.just("admin"), st.sampled_from(["quarantine", "cleanse", "activate"]),
                  pick),
        st.tuples(st.just("probation"), pick, st.booleans()),
        st.tuples(st.just("forged"), pick),
        st.tuples(st.just("identity"), pick, st.booleans()),
    )
    steps = draw(st.lists(step, min_size=5, max_size=70))
    scheduler = draw(st.sampled_from(["random", "round-robin", "max-dissimilarity",
                                      "credibility-weighted"]))
    return profiles, policy, scheduler, steps, draw(st.integers(0, 2**32))


def run(profiles, policy, scheduler, steps, seed) -> list[str]:
    """Drive a controller through ``steps`` like a runtime would, checking invariants as it
    goes; return the log of every action."""
    names = [p.name for p in profiles]
    trust = TrustBook(names)
    ctrl = Controller(profiles, policy, scheduler_from_config(scheduler), trust,
                      random.Random(seed))
    now = 0.0
    log: list[str] = []
    orders: list[Action] = []  # Activate and Cleanse orders not yet completed
    wakeups: list[float] = []
    tainted: set[str] = set()  # quarantined, and no cleanse ordered since has succeeded
    cleared_by: dict[str, set[int]] = {}  # seqs of cleanses ordered after the quarantine
    alerted = False  # a critical alert since the voters last reached the floor

    def apply(actions: list[Action], before: tuple[str, ...]) -> None:
        nonlocal alerted
        for action in actions:
            log.append(repr(action))
            match action:
                case Quarantine(executor=x):
                    tainted.add(x)
                    cleared_by[x] = set()
                case Cleanse(executor=x, seq=seq):
                    orders.append(action)
                    cleared_by.setdefault(x, set()).add(seq)
                case Activate(executor=x):
                    assert x not in tainted, f"activated {x} before a cleanse succeeded"
                    orders.append(action)
                case Deactivate(executor=x, reason=reason):
                    # (or it began voting in this very event, and an isolation retires it)
                    assert x in before or reason.startswith("component "), (x, reason)
                case RequestWakeup(at=at):
                    wakeups.append(at)
                case Alert(level="critical"):
                    alerted = True
        after = ctrl.voters
        states = ctrl.states
        assert list(states) == names  # the states partition the pool
        assert after == tuple(n for n in names if states[n] is S.ACTIVE)
        assert ctrl.shadows == tuple(n for n in names if states[n] is S.PROBATION)
        if policy.probation_agreements == 0:  # only executors below L2 shadow
            assert all(not trust.may_vote(n) for n in ctrl.shadows)
        for n in after:  # no executor below L2 ever votes
            assert trust.may_vote(n) and ctrl.level(n, now) >= Level.L2, (n, trust.points(n))
        for n in names:
            if trust.identity(n) is Identity.FAILED:
                assert ctrl.level(n, now) is Level.L0 and n not in after
        removed = set(before) - set(after)
        quarantined = {a.executor for a in actions if isinstance(a, Quarantine)}
        rotated = {a.executor for a in actions if isinstance(a, Deactivate)}
        assert removed <= quarantined | rotated
        # rotation never lowers the number of voters: each leaver has a new voter in its place,
        # but for a rotation without a spare, which cleanses in place and keeps the floor
        in_place = {a.executor for a in actions if isinstance(a, Deactivate)
                    and (a.reason == "rotated out to be cleansed"
                         or a.reason.startswith("component "))}
        assert len((removed & rotated) - in_place) <= len(set(after) - set(before))
        assert not in_place or len(after) >= policy.floor
        committed = sum(states[n] in (S.ACTIVE, S.ACTIVATING) for n in names)
        if committed < policy.active_size:  # replacement from spares is immediate, but for a
            # spare sharing an isolated component with the set it would join
            members = [p for p in profiles if states[p.name] in (S.ACTIVE, S.ACTIVATING)]
            for p in profiles:
                if states[p.name] is S.SPARE:
                    shared = p.components & ctrl.isolated
                    assert any(q.components & shared for q in members), p.name
        if len(after) >= policy.floor:
            alerted = False
        elif committed < policy.floor:
            assert alerted, "below the floor without a critical alert"

    apply(ctrl.start(now), ())

    def feed(event: Event) -> None:
        before = ctrl.voters
        apply(ctrl.handle(event), before)

    def complete(action: Action, ok: bool | None) -> None:
        if ok and isinstance(action, Cleanse) and action.seq in cleared_by.get(
                action.executor, ()):
            tainted.discard(action.executor)
        feed(ActionDone(action, ok is True, now, retry=ok is not None))

    for step in steps:
        kind = step[0]
        if kind == "verdict":
            roles: dict[str, str] = {}
            for i, role in step[1]:
                voters = ctrl.voters
                name = voters[i % len(voters)] if voters and i % 2 else names[i % len(names)]
                roles.setdefault(name, role)
            by = {r: tuple(n for n, rr in roles.items() if rr == r)
                  for r in ("agreed", "dissented", "failed")}
            outcome = step[2]
            if outcome is Outcome.ACCEPTED:
                v = Verdict(outcome, None, by["agreed"], by["dissented"], by["failed"], "r")
            elif outcome is Outcome.NO_QUORUM:
                v = Verdict(outcome, None, (), (), by["failed"], "r")
            else:
                v = Verdict(outcome, None, (), (), tuple(roles), "r")
            feed(VerdictReached(v, now))
        elif kind == "tick":
            now += step[1]
            feed(Tick(now))
        elif kind == "wake":
            if wakeups:
                now = max(now, min(wakeups))
                wakeups = [w for w in wakeups if w > now]
                feed(Tick(now))
        elif kind == "done":
            if orders:
                complete(orders.pop(step[1] % len(orders)), step[2])
        elif kind == "finish":  # the runtime catches up: every order succeeds, in order
            while orders:
                complete(orders.pop(0), True)
        elif kind == "health":
            feed(HealthReport(names[step[1] % len(names)], step[2], now))
        elif kind == "admin":
            feed(AdminRequest(step[1], names[step[2] % len(names)], now))
        elif kind == "identity":
            feed(IdentityReport(names[step[1] % len(names)], step[2], "exe:/x", now))
        elif kind == "probation":
            shadows = ctrl.shadows
            pool = shadows if shadows and step[1] % 3 else names
            feed(ProbationResult(pool[step[1] % len(pool)], step[2], now))
        else:  # a completion for an order never given must change nothing
            name = names[step[1] % len(names)]
            snapshot = dict(ctrl.states)
            feed(ActionDone(Activate(name), True, now))
            feed(ActionDone(Cleanse(name), True, now))
            assert dict(ctrl.states) == snapshot
    return log


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_random_conversations_keep_the_invariants_and_replay(scenario) -> None:
    first = run(*scenario)
    assert run(*scenario) == first  # the same seed gives the same schedule


# -- reconfiguration ---------------------------------------------------------------------------


def test_a_reload_adds_and_removes_executors_and_refills_the_active_set() -> None:
    pb, trust = started()
    policy = ControllerPolicy(active_size=3, floor=2)
    newcomer = Profile("f", frozenset({"impl:f"}))
    pb >> Reconfigure(policy, added=(newcomer,), removed=("b", "d"), now=1.0)
    # b voted: it goes at once, and a spare takes its place.
    replacement = pb.pending.popleft()
    assert isinstance(replacement, Activate) and replacement.executor in ("e", "f")
    assert pb
    ctrl = pb.controller
    assert set(ctrl.states) == {"a", "c", "e", "f"} and "b" not in ctrl.voters
    assert "f" in trust.snapshot() and "b" not in trust.snapshot()
    pb >> pb.done(replacement)
    assert len(ctrl.voters) == 3
    with pytest.raises(ValueError, match="unknown executor 'b'"):
        ctrl.state("b")


def test_a_reload_that_shrinks_the_active_set_retires_without_a_fault() -> None:
    pb, _ = started()
    pb >> Reconfigure(ControllerPolicy(active_size=2, floor=1), added=(), removed=(), now=1.0)
    retired = pb.pending.popleft()
    assert isinstance(retired, Deactivate) and retired.reason == "the active set shrank"
    assert pb
    assert len(pb.controller.voters) == 2
    assert pb.controller.counters(retired.executor)["quarantines"] == 0


def test_a_reload_that_turns_rotation_on_sets_its_timer() -> None:
    pb, _ = started()
    pb >> Reconfigure(ControllerPolicy(rotate_every=30.0), added=(), removed=(), now=5.0)
    pb << RequestWakeup(35.0)
    assert pb


def test_a_reload_cannot_empty_the_pool_or_add_a_known_name() -> None:
    pb, _ = started()
    with pytest.raises(ValueError, match="already in the pool"):
        pb >> Reconfigure(ControllerPolicy(), added=(Profile("a", frozenset({"x"})),),
                          removed=(), now=1.0)
    with pytest.raises(ValueError, match="at least one executor"):
        pb >> Reconfigure(ControllerPolicy(), added=(), removed=tuple(NAMES), now=1.0)


# -- never below the floor for dissent alone ---------------------------------------------------


def test_a_dissenter_the_floor_needs_keeps_voting_until_a_spare_replaces_it() -> None:
    pb, _ = started(names=["a", "b", "c", "d"], active_size=3, floor=3)
    pb >> VerdictReached(verdict(agreed=["a", "b"], dissented=["c"]), 1.0)
    pb << AnyAlert("warning", "keeps voting until a spare replaces it") << Activate("d")
    assert pb
    assert pb.controller.voters == ("a", "b", "c"), "c still votes (and is outvoted)"
    pb >> VerdictReached(verdict(agreed=["a", "b"], dissented=["c"]), 2.0)
    assert pb, "the same dissenter is not reported twice"
    pb >> pb.done(Activate("d"))
    pb << Quarantine("c", "dissented 1 time(s) within 60s") << Cleanse("c")
    assert pb
    assert pb.controller.voters == ("a", "b", "d")


def test_without_a_spare_the_dissenter_waits_and_a_cleansed_one_replaces_it() -> None:
    pb, _ = started(names=["a", "b", "c"], active_size=3, floor=3)
    pb >> VerdictReached(verdict(agreed=["a", "b"], dissented=["c"]), 1.0)
    pb << AnyAlert("warning", "keeps voting")
    assert pb and pb.controller.state("c") is S.ACTIVE


def test_a_confirmed_attack_is_quarantined_at_once_even_below_the_floor() -> None:
    pb, _ = started(names=["a", "b", "c"], active_size=3, floor=3)
    pb >> VerdictReached(verdict(agreed=["a", "b"], dissented=["c"]), 1.0, confirmed=True)
    pb << Quarantine("c", "dissented 1 time(s) within 60s") << Cleanse("c")
    pb << AnyAlert("warning", "no spare left") << AnyAlert("critical", "below the floor")
    assert pb
