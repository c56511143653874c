"""Arbiter throughput: endosec's ballot against a naive parse-everything vote.

    python bench/bench_arbiter.py [--quick]

One decision = build the n outputs, open a majority ballot, add every output, close it. Bodies
are JSON under a rule that ignores one field (``/created_at``). Cases:

* agree          - every executor returns the same bytes (the common case);
* dissent        - the last executor changes one non-ignored value;
* agree-ignored  - every executor differs only in the ignored field, so every body is parsed.

The naive baseline, timed in the same run, parses every output with ``json.loads``, drops the
ignored field and groups equal dicts. Figures are the median of several rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from endosec.core.arbiter import Ballot, Majority
from endosec.core.canonical_json import JsonRule
from endosec.core.model import Outcome, Output

IGNORED = "created_at"
RULE = JsonRule(ignore=[f"/{IGNORED}"])
STRATEGY = Majority()


def _item(i: int) -> dict[str, Any]:
    return {"id": i, "name": f"item-{i:05d}", "price": round(i * 1.25, 2), "in_stock": i % 3 != 0,
            "tags": ["red", "large"] if i % 2 else ["blue"], "owner": {"uid": 1000 + i % 7}}


def _document(size: int, stamp: str, change: bool) -> bytes:
    doc: dict[str, Any] = {IGNORED: stamp, "kind": "inventory", "items": []}
    i = 0
    while len(json.dumps(doc)) < size - 120:
        doc["items"].append(_item(i))
        i += 1
    if change:
        doc["items"][len(doc["items"]) // 2]["price"] = -1.0
    return json.dumps(doc).encode()


def _bodies(n: int, size: int, case: str) -> list[bytes]:
    same = _document(size, "2024-05-01T12:00:00.000Z", change=False)
    if case == "agree":
        return [same] * n
    if case == "dissent":
        return [same] * (n - 1) + [_document(size, "2024-05-01T12:00:00.000Z", change=True)]
    return [_document(size, f"2024-05-01T12:00:0{i}.000Z", change=False) for i in range(n)]


def _endosec(bodies: Sequence[bytes]) -> Callable[[], Outcome]:
    names = tuple(f"e{i}" for i in range(len(bodies)))
    pairs = tuple(zip(names, bodies, strict=True))

    def decide() -> Outcome:
        ballot = Ballot(STRATEGY, names)
        for name, body in pairs:
            ballot.add(Output(name, body, RULE))
        return ballot.close().outcome

    return decide


def _naive(bodies: Sequence[bytes]) -> Callable[[], Outcome]:
    def decide() -> Outcome:
        groups: list[list[Any]] = []
        for body in bodies:
            doc = json.loads(body)
            doc.pop(IGNORED, None)
            for group in groups:
                if group[0] == doc:
                    group[1] += 1
                    break
            else:
                groups.append([doc, 1])
        counts = sorted((g[1] for g in groups), reverse=True)
        best = counts[0]
        won = best * 2 > len(bodies) and (len(counts) == 1 or counts[1] < best)
        return Outcome.ACCEPTED if won else Outcome.NO_QUORUM

    return decide


def _seconds_per_call(fn: Callable[[], object], budget: float, rounds: int) -> float:
    reps = 1
    while True:  # calibrate: one round should take about `budget` seconds
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed >= budget / 4:
            break
        reps *= 4
    reps = max(1, int(reps * budget / elapsed))
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        samples.append((time.perf_counter() - start) / reps)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short rounds, for a smoke run")
    args = parser.parse_args()
    budget, rounds = (0.05, 3) if args.quick else (0.3, 7)
    header = (f"{'n':>2} {'size':>6} {'case':<14} {'endosec us':>11} {'decisions/s':>12} "
              f"{'naive us':>10} {'naive/s':>10} {'speed-up':>9}")
    print(header)
    print("-" * len(header))
    results: dict[tuple[int, str, str], tuple[float, float]] = {}
    for size, label in ((200, "200B"), (64 * 1024, "64KiB")):
        for n in (3, 5, 7):
            for case in ("agree", "dissent", "agree-ignored"):
                bodies = _bodies(n, size, case)
                ours, naive = _endosec(bodies), _naive(bodies)
                assert ours() is naive() is Outcome.ACCEPTED
                t_ours = _seconds_per_call(ours, budget, rounds)
                t_naive = _seconds_per_call(naive, budget, rounds)
                results[(n, label, case)] = (t_ours, t_naive)
                print(f"{n:>2} {label:>6} {case:<14} {t_ours * 1e6:>11.2f} {1 / t_ours:>12,.0f} "
                      f"{t_naive * 1e6:>10.2f} {1 / t_naive:>10,.0f} {t_naive / t_ours:>8.1f}x")
    small = results[(3, "200B", "agree")][0] * 1e6
    ratios = {n: results[(n, "64KiB", "agree")][1] / results[(n, "64KiB", "agree")][0]
              for n in (3, 5, 7)}
    speedups = ", ".join(f"n={n}: {r:.0f}x" for n, r in ratios.items())
    print(f"\n3-way majority, 200 B agreeing: {small:.2f} us per decision (target < 20 us)")
    print(f"64 KiB agreeing, speed-up over naive: {speedups} (target >= 10x)")
    print(f"body sizes: {len(_document(200, 'x' * 24, False))} B and "
          f"{len(_document(64 * 1024, 'x' * 24, False))} B; strategy majority; "
          f"rule ignores /{IGNORED}")


if __name__ == "__main__":
    main()
