"""Learned detectors across gateways: herd immunity, false positives, poisoning, and the cost
of sealed exchange.

    python bench/bench_immune.py [--quick] [--json PATH]

*Detection.* Synthetic notes traffic and six implant families (`endosec.immune.synthetic`)
are dealt out non-IID: one client per family, each with its family's antigens and a share of
self traffic, plus one poisoned client whose labels are all flipped. Each scheme trains for
the same number of epochs per client: local-only (the baseline), plain FedAvg (every update
averaged), FedAvg with verification, Algorithm 1 as literally written (the mutant trained every
round), and Algorithm 1 as built (`endosec.immune.clonal`). Per honest client, on a test set
no one trained on: detection of its own family (seen), of the families it never saw locally
(unseen: herd immunity), and false positives on self traffic; means over clients and seeds,
unseen detection also as a ratio to local-only's; and how many of the poisoned client's and
of the honest clients' updates verification rejected.

*Cost.* One round with six clients for models of 1 KB, 1 MB and 10 MB: every client seals its
update (X25519 + HKDF-SHA256 + AES-256-GCM), the server opens all six, averages them and
seals the aggregate for a trust level, and every client opens it. The ratio is to copying
the same bytes once per message (the floor: every message must be read and written once).

PASS/MISS: Algorithm 1's unseen detection at least local-only's; its false positives at most
2%; the poisoned client rejected by verification in every round; and a sealed round with
10 MB models within 1 s.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from endosec.core.trust import Level
from endosec.immune.clonal import run_clonal
from endosec.immune.experiment import POISONED, Split, score, split
from endosec.immune.federation import Plan, Run, run_fedavg, run_local
from endosec.immune.seal import LevelKeys, open_aggregate, open_update, seal_aggregate, seal_update
from endosec.immune.synthetic import mixed

FP_BOUND = 0.02
ROUND_BUDGET = 1.0
CLIENTS = 6
SIZES = {"1 KB": 1 << 10, "1 MB": 1 << 20, "10 MB": 10 << 20}
SCHEMES: dict[str, Callable[[Split, Plan, np.random.Generator], Run]] = {
    "local-only": lambda d, p, r: run_local(d.clients, p),
    "fedavg": lambda d, p, r: run_fedavg(d.clients, d.check, dataclasses.replace(p, verify=False)),
    "fedavg+verify": lambda d, p, r: run_fedavg(d.clients, d.check, p),
    "clonal literal": lambda d, p, r: run_clonal(d.clients, d.check,
                                                 dataclasses.replace(p, literal=True), r),
    "clonal": lambda d, p, r: run_clonal(d.clients, d.check, p, r),
}


def detection(seeds: int, per_family: int, selves: int, rounds: int) -> dict[str, dict[str, float]]:
    """Mean seen/unseen/false-positive per scheme over ``seeds`` runs, and poisoned rounds."""
    sums: dict[str, dict[str, list[float]]] = {s: {} for s in SCHEMES}
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        data = split(mixed(rng, per_family, selves), rng, dim=1024, poisoned=True)
        plan = Plan(rounds=rounds)
        for name, scheme in SCHEMES.items():
            started = time.perf_counter()
            run = scheme(data, plan, np.random.default_rng(1000 + seed))
            elapsed = time.perf_counter() - started
            s = score(run, data)
            rejected = sum(POISONED in r.rejected for r in run.rounds)
            honest = sum(len(r.rejected) for r in run.rounds) - rejected
            for key, value in (("seen", s.seen), ("unseen", s.unseen),
                               ("false_positive", s.false_positive), ("seconds", elapsed),
                               ("poisoned_rejected", rejected), ("rounds", len(run.rounds)),
                               ("honest_rejected", honest), ("updates", sum(
                                   len(r.accepted) + len(r.rejected) for r in run.rounds))):
                sums[name].setdefault(key, []).append(float(value))
    counts = ("poisoned_rejected", "rounds", "honest_rejected", "updates")
    return {name: {k: (sum(v) if k in counts else statistics.mean(v))
                   for k, v in fields.items()} for name, fields in sums.items()}


def _median(action: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def cost(size: int, repeat: int) -> dict[str, float]:
    """Seconds for one sealed round of `CLIENTS` models of ``size`` bytes, and the floor."""
    server = X25519PrivateKey.generate()
    clients = [X25519PrivateKey.generate() for _ in range(CLIENTS)]
    keys = LevelKeys.generate()
    granted = keys.granted(Level.L2)
    rng = np.random.default_rng(0)
    models = [rng.standard_normal(size // 8).tobytes() for _ in clients]

    def one_round() -> None:
        sealed = [seal_update(c, server.public_key(), f"gw-{i}", 1, m)
                  for i, (c, m) in enumerate(zip(clients, models, strict=True))]
        opened = [np.frombuffer(open_update(server, c.public_key(), f"gw-{i}", 1, s))
                  for i, (c, s) in enumerate(zip(clients, sealed, strict=True))]
        out = seal_aggregate(keys, Level.L2, 1, np.mean(opened, axis=0).tobytes())
        for _ in clients:
            open_aggregate(granted, 1, out)

    def floor() -> None:
        for m in [*models, *models, models[0], *models]:
            bytearray(m)

    return {"seconds": _median(one_round, repeat), "floor": _median(floor, repeat)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="one seed, less traffic")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures here")
    args = parser.parse_args()
    seeds, per_family, selves, rounds = (1, 100, 800, 12) if args.quick else (5, 200, 1500, 20)
    rows = detection(seeds, per_family, selves, rounds)
    base = rows["local-only"]["unseen"]
    print(f"detection: {CLIENTS} families, one client each + {POISONED}; {rounds} rounds, "
          f"{seeds} seed(s), means over honest clients")
    print(f"  {'scheme':<15} {'seen':>6} {'unseen':>7} {'vs local':>9} {'false+':>7} "
          f"{'poisoned rejected':>18} {'honest rejected':>16} {'time':>7}")
    for name, r in rows.items():
        poisoned = "-" if not r["rounds"] else f"{r['poisoned_rejected']:.0f}/{r['rounds']:.0f}"
        honest = "-" if not r["rounds"] else \
            f"{r['honest_rejected']:.0f}/{r['updates'] - r['rounds']:.0f}"
        ratio = r["unseen"] / base if base > 0 else float("inf")
        print(f"  {name:<15} {r['seen']:>6.3f} {r['unseen']:>7.3f} {ratio:>8.1f}x "
              f"{r['false_positive']:>7.3f} {poisoned:>18} {honest:>16} {r['seconds']:>6.2f}s")
    costs = {label: cost(size, 3 if args.quick else 7) for label, size in SIZES.items()}
    print(f"cost of one sealed round, {CLIENTS} clients (seal, open, average, seal, open):")
    print(f"  {'model':>6} {'round':>10} {'per MB':>10} {'vs copy':>10}")
    for label, c in costs.items():
        per_mb = c["seconds"] / (SIZES[label] * CLIENTS / (1 << 20))
        print(f"  {label:>6} {c['seconds'] * 1e3:>8.2f}ms {per_mb * 1e3:>8.2f}ms "
              f"{c['seconds'] / c['floor']:>9.1f}x")
    clonal = rows["clonal"]
    targets = {
        "clonal unseen >= local-only": clonal["unseen"] >= base,
        f"clonal false positives <= {FP_BOUND:.0%}": clonal["false_positive"] <= FP_BOUND,
        "poisoned client rejected in every round": clonal["poisoned_rejected"] == clonal["rounds"],
        f"sealed round of 10 MB models <= {ROUND_BUDGET:g} s": (
            costs["10 MB"]["seconds"] <= ROUND_BUDGET),
    }
    print(f"  {POISONED}: rejected by verification in {clonal['poisoned_rejected']:.0f} of "
          f"{clonal['rounds']:.0f} clonal rounds"
          + (" (excluded)" if clonal["poisoned_rejected"] == clonal["rounds"] else ""))
    for what, ok in targets.items():
        print(f"  [{'PASS' if ok else 'MISS'}] {what}")
    if args.json:
        args.json.write_text(json.dumps({"detection": rows, "cost": costs,
                                         "targets": targets}, indent=1))


if __name__ == "__main__":
    main()
