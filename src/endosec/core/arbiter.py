"""The arbiter: turns executors' outputs into a verdict, as early as the verdict is certain.

A `Ballot` is opened for one request with the voters (the active set) and a `Strategy`. Outputs
arrive one by one through `Ballot.add`; outputs that agree (`Output.agrees_with`, compared with
each class's first member) form a *value class*. Errors and timeouts form no class: they never
agree with anything and never win.

Every strategy reduces to an integer quorum ``need`` on the support of a class (a head count,
or for `TrustWeightedMajority` the sum of the voters' weights in fixed point, so sums are exact
and independent of arrival order). With ``s1`` the best support, ``s2`` the second best (0 when
there is none) and ``P`` the weight still pending:

* a class *wins* when ``s1 >= need`` and ``s1 > s2 + P``: whatever the pending voters answer, it
  reaches the quorum and strictly out-supports every other class, existing or new. Ties never win.
* no class *can* win when ``s1 + P < need`` or ``s1 + P <= s2``. The outcome is then no-quorum
  once some value has been seen; while none has, it is held back (the pending voters decide
  between no-quorum and all-failed), so an early verdict always equals the final one.

A *discounted* voter (strict voting: one flagged by behaviour) is heard but lends no support;
the quorum stays that of every voter, so its class must win without it.

`Ballot.add` returns the verdict the first time it becomes certain, so the caller can answer
before the slowest executor; `Ballot.close` gives the final verdict in which pending voters count
as timed out. Reasons name counts and executors, never output contents.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from endosec.core.model import Outcome, Output, Verdict

__all__ = [
    "WEIGHT_SCALE",
    "Ballot",
    "Majority",
    "Plurality",
    "Strategy",
    "Threshold",
    "TrustWeightedMajority",
    "Unanimity",
    "judge",
    "strategy_from_config",
]

WEIGHT_SCALE = 1_000_000
"""Weights are held as integers in millionths: exact sums, so arrival order never matters."""


class Strategy(Protocol):
    """How much support a value class needs: a quorum on head counts or on weights."""

    @property
    def weighted(self) -> bool:
        """Whether support is the sum of the voters' weights rather than a head count."""
        ...

    @property
    def label(self) -> str:
        """A short human name for reasons and logs."""
        ...

    def quorum(self, total: int) -> int:
        """The least support that reaches the quorum, given the ballot's total weight."""
        ...


@dataclass(frozen=True, slots=True)
class Majority:
    """More than half of the voters agree."""

    @property
    def weighted(self) -> bool:
        return False

    @property
    def label(self) -> str:
        return "majority"

    def quorum(self, total: int) -> int:
        return total // 2 + 1


@dataclass(frozen=True, slots=True)
class Threshold:
    """At least ``k`` voters agree (k-of-n). With ``k <= n/2`` a tie is possible and never wins."""

    k: int

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"k: threshold needs an integer k >= 1, got {self.k!r}")

    @property
    def weighted(self) -> bool:
        return False

    @property
    def label(self) -> str:
        return f"threshold k={self.k}"

    def quorum(self, total: int) -> int:
        return self.k


@dataclass(frozen=True, slots=True)
class Plurality:
    """The most-supported value wins if it has at least ``min_support`` voters."""

    min_support: int = 1

    def __post_init__(self) -> None:
        m = self.min_support
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise ValueError(f"min_support: plurality needs an integer >= 1, got {m!r}")

    @property
    def weighted(self) -> bool:
        return False

    @property
    def label(self) -> str:
        return f"plurality min_support={self.min_support}"

    def quorum(self, total: int) -> int:
        return self.min_support


@dataclass(frozen=True, slots=True)
class Unanimity:
    """Every voter answers with the same value: one failure or dissent fails closed."""

    @property
    def weighted(self) -> bool:
        return False

    @property
    def label(self) -> str:
        return "unanimity"

    def quorum(self, total: int) -> int:
        return total


@dataclass(frozen=True, slots=True)
class TrustWeightedMajority:
    """The agreeing voters' trust adds up to more than half of all voters' trust."""

    @property
    def weighted(self) -> bool:
        return True

    @property
    def label(self) -> str:
        return "trust-weighted majority"

    def quorum(self, total: int) -> int:
        return total // 2 + 1


def strategy_from_config(name: str, *, k: int | None = None,
                         min_support: int | None = None) -> Strategy:
    """Build a strategy from its configured name; a parameter it does not take is an error."""
    if k is not None and name != "threshold":
        raise ValueError(f"k: only the threshold strategy takes k (strategy is {name!r})")
    if min_support is not None and name != "plurality":
        raise ValueError(f"min_support: only the plurality strategy takes min_support "
                         f"(strategy is {name!r})")
    if name == "majority":
        return Majority()
    if name == "threshold":
        if k is None:
            raise ValueError("k: the threshold strategy needs k")
        return Threshold(k)
    if name == "plurality":
        return Plurality(1 if min_support is None else min_support)
    if name == "unanimity":
        return Unanimity()
    if name == "trust-weighted":
        return TrustWeightedMajority()
    raise ValueError(f"strategy: unknown {name!r} (expected majority, threshold, plurality, "
                     f"unanimity or trust-weighted)")


def _fixed_point(name: str, weights: Mapping[str, float]) -> int:
    try:
        w = weights[name]
    except KeyError:
        raise ValueError(f"weights: no weight for voter {name!r}") from None
    if not math.isfinite(w) or w < 0:
        raise ValueError(f"weights: weight for {name!r} must be a finite number >= 0, got {w!r}")
    return round(w * WEIGHT_SCALE)


class Ballot:
    """One request's vote. Not thread-safe: one owner adds outputs and closes it.

    ``weights`` (usually trust scores) count only for a weighted strategy; other strategies
    ignore them. Extra names in ``weights`` are ignored; a missing voter is an error.
    """

    __slots__ = ("_class_of", "_closed", "_decided", "_discounted", "_failed", "_firsts",
                 "_members", "_need", "_pending", "_pending_weight", "_s1", "_s2", "_support",
                 "_top", "_total", "_unit", "_weight", "strategy", "voters")

    def __init__(self, strategy: Strategy, voters: Sequence[str],
                 weights: Mapping[str, float] | None = None) -> None:
        self.strategy = strategy
        self.voters = tuple(voters)
        if not self.voters:
            raise ValueError("voters: a ballot needs at least one voter")
        if strategy.weighted and weights is not None:
            self._weight = {v: _fixed_point(v, weights) for v in self.voters}
            self._unit = WEIGHT_SCALE
        else:
            self._weight = dict.fromkeys(self.voters, 1)
            self._unit = 1
        if len(self._weight) != len(self.voters):
            raise ValueError("voters: a voter is listed twice")
        self._total = self._pending_weight = sum(self._weight.values())
        self._need = strategy.quorum(self._total)
        self._pending = self._weight.copy()
        self._class_of: dict[str, int] = {}  # executor -> class index, -1 for a failure
        self._firsts: list[Output] = []
        self._members: list[list[Output]] = []
        self._support: list[int] = []
        self._failed: list[Output] = []
        self._top = -1
        self._s1 = 0
        self._s2 = 0
        self._decided: Verdict | None = None
        self._closed: Verdict | None = None
        self._discounted: list[str] = []

    def discount(self, names: Iterable[str]) -> None:
        """Hear ``names`` without counting their support (before any output is added); the
        quorum does not change. Names that do not vote here are ignored."""
        if self._class_of:
            raise ValueError("discount before any output")
        wanted = set(names)
        for v in self.voters:
            if v in wanted and v not in self._discounted:
                self._pending_weight -= self._weight[v]
                self._weight[v] = self._pending[v] = 0
                self._discounted.append(v)

    @property
    def decided(self) -> Verdict | None:
        """The verdict `add` announced once it became certain (None until then)."""
        return self._decided

    @property
    def pending(self) -> frozenset[str]:
        """Voters not yet heard."""
        return frozenset(self._pending)

    @property
    def complete(self) -> bool:
        """Whether every voter has been heard."""
        return not self._pending

    @property
    def outputs(self) -> tuple[Output, ...]:
        """Every output recorded so far: value classes in order of appearance, then failures."""
        return (*(o for members in self._members for o in members), *self._failed)

    def add(self, output: Output) -> Verdict | None:
        """Record one output; return the verdict the first time it is certain, else None."""
        if self._closed is not None:
            raise ValueError("ballot is closed")
        name = output.executor
        w = self._pending.pop(name, None)
        if w is None:
            what = "duplicate output from" if name in self._weight else "unknown executor"
            raise ValueError(f"{what} {name!r}")
        self._pending_weight -= w
        if output.error is not None:
            self._class_of[name] = -1
            self._failed.append(output)
        else:
            for i, first in enumerate(self._firsts):
                if first.agrees_with(output):
                    self._members[i].append(output)
                    s = self._support[i] = self._support[i] + w
                    break
            else:
                i = len(self._firsts)
                self._firsts.append(output)
                self._members.append([output])
                self._support.append(w)
                s = w
            self._class_of[name] = i
            if i == self._top:
                self._s1 = s
            elif s > self._s1:
                self._s2 = self._s1
                self._s1 = s
                self._top = i
            elif s > self._s2:
                self._s2 = s
        if self._decided is not None:
            return None
        s1 = self._s1
        p = self._pending_weight
        need = self._need
        if s1 >= need and s1 > self._s2 + p:
            self._decided = self._verdict(Outcome.ACCEPTED, final=False)
        elif s1 + p < need or s1 + p <= self._s2:
            if self._firsts:
                self._decided = self._verdict(Outcome.NO_QUORUM, final=False)
            elif not self._pending:
                self._decided = self._verdict(Outcome.ALL_FAILED, final=False)
        return self._decided

    def close(self) -> Verdict:
        """The final verdict; voters still pending count as failed (timed out). Idempotent."""
        if self._closed is None:
            if not self._firsts:
                outcome = Outcome.ALL_FAILED
            elif self._s1 >= self._need and self._s1 > self._s2:
                outcome = Outcome.ACCEPTED
            else:
                outcome = Outcome.NO_QUORUM
            self._closed = self._verdict(outcome, final=True)
        return self._closed

    def _verdict(self, outcome: Outcome, *, final: bool) -> Verdict:
        accepted = outcome is Outcome.ACCEPTED
        top = self._top if accepted else -2
        agreed: list[str] = []
        dissented: list[str] = []
        failed: list[str] = []
        class_of = self._class_of
        for v in self.voters:
            c = class_of.get(v)
            if c is None:
                if final:
                    failed.append(v)
            elif c == top:
                agreed.append(v)
            elif c == -1:
                failed.append(v)
            elif accepted:
                dissented.append(v)
        return Verdict(outcome, _representative(self._members[top]) if accepted else None,
                       tuple(agreed), tuple(dissented), tuple(failed),
                       self._reason(outcome, dissented, failed))

    def _reason(self, outcome: Outcome, dissented: list[str], failed: list[str]) -> str:
        label = self.strategy.label
        if outcome is Outcome.ALL_FAILED:
            n = len(self.voters)
            return f"{label}: no value from any of {n} executors ({_failures(self._failed, n)})"
        if outcome is Outcome.ACCEPTED:
            text = (f"{label}: accepted with support {self._amount(self._s1)} of "
                    f"{self._amount(self._total)} (quorum {self._amount(self._need)})")
            if dissented:
                text += f"; dissented: {', '.join(dissented)}"
        else:
            classes = len(self._firsts)
            tie = " tied" if classes > 1 and self._s1 == self._s2 else ""
            text = (f"{label}: no quorum; {classes} distinct value(s), best support "
                    f"{self._amount(self._s1)}{tie}, quorum {self._amount(self._need)} of "
                    f"{self._amount(self._total)}")
        if failed:
            text += f"; failed: {', '.join(failed)} ({_failures(self._failed, len(failed))})"
        if self._discounted:
            text += f"; discounted: {', '.join(self._discounted)}"
        return text

    def _amount(self, units: int) -> str:
        return str(units) if self._unit == 1 else f"{units / self._unit:.3f}"


def _representative(members: list[Output]) -> Output:
    """The class member whose exact bytes most members share (earliest on a tie).

    An executor whose bytes differ from its class only in what canonicalisation forgives
    (ignored fields, number spellings) is thus not the one served when others agree to the byte.
    """
    best = members[0]
    if len(members) < 3:
        return best
    best_count = 0
    for m in members:
        count = sum(1 for o in members if o.raw == m.raw and o.head == m.head)
        if count > best_count:
            best, best_count = m, count
            if count * 2 > len(members):
                break
    return best


def _failures(failed: list[Output], count: int) -> str:
    kinds: dict[str, int] = {}
    for o in failed:
        kind = str(o.error)
        kinds[kind] = kinds.get(kind, 0) + 1
    unheard = count - len(failed)
    if unheard > 0:
        kinds["no answer"] = unheard
    return ", ".join(f"{kind}: {k}" for kind, k in kinds.items())


def judge(strategy: Strategy, outputs: Iterable[Output],
          weights: Mapping[str, float] | None = None,
          discounted: Iterable[str] = ()) -> Verdict:
    """Decide over a complete set of outputs at once (voters are the outputs' executors)."""
    outputs = tuple(outputs)
    ballot = Ballot(strategy, [o.executor for o in outputs], weights)
    ballot.discount(discounted)
    for o in outputs:
        ballot.add(o)
    return ballot.close()
