"""``endosec immune``: train learned detectors across simulated gateways and compare schemes."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import click
import numpy as np

from endosec.core.trust import Level
from endosec.immune.clonal import run_clonal
from endosec.immune.detector import DEFAULT_DIM
from endosec.immune.exchange import record_round
from endosec.immune.experiment import Score, Split, score, split
from endosec.immune.federation import Plan, Run, run_fedavg, run_local
from endosec.immune.synthetic import mixed
from endosec.immune.traffic import Labelled, TrafficError, parse_jsonl

__all__ = ["immune"]

SCHEMES = ("local", "fedavg", "clonal")


@click.group()
def immune() -> None:
    """Detectors learned by clone selection with federated learning (docs/immune.md)."""


def _traffic(paths: tuple[Path, ...], synthetic: bool, per_family: int, selves: int,
             rng: np.random.Generator) -> list[Labelled]:
    rows: list[Labelled] = []
    for path in paths:
        try:
            rows += parse_jsonl(path.read_text().splitlines(), str(path))
        except (OSError, UnicodeDecodeError, TrafficError) as exc:
            raise click.ClickException(str(exc)) from exc
    if synthetic or not paths:
        rows += mixed(rng, per_family, selves)
    return rows


def _run(scheme: str, data: Split, plan: Plan, rng: np.random.Generator) -> Run:
    if scheme == "local":
        return run_local(data.clients, plan)
    if scheme == "fedavg":
        return run_fedavg(data.clients, data.check, dataclasses.replace(plan, verify=False))
    return run_clonal(data.clients, data.check, plan, rng)


def _row(s: Score, run: Run) -> dict[str, object]:
    last = run.rounds[-1] if run.rounds else None
    return {"scheme": s.scheme, "seen": s.seen, "unseen": s.unseen,
            "false_positive": s.false_positive, "excluded": list(s.excluded),
            "eta": None if last is None else last.eta,
            "rounds": [dataclasses.asdict(r) for r in run.rounds]}


@immune.command()
@click.option("--traffic", "paths", multiple=True, type=click.Path(path_type=Path,
              exists=True, dir_okay=False), help="A JSON-lines file of labelled requests "
              "(docs/immune.md); repeatable.")
@click.option("--synthetic/--no-synthetic", default=False,
              help="Add the synthetic notes traffic and implant families (the default when "
                   "no --traffic is given).")
@click.option("--per-family", default=200, show_default=True, help="Synthetic antigens per "
              "family.")
@click.option("--self", "selves", default=1500, show_default=True,
              help="Synthetic self requests.")
@click.option("--scheme", type=click.Choice([*SCHEMES, "all"]), default="all",
              show_default=True)
@click.option("--rounds", default=20, show_default=True, type=click.IntRange(1))
@click.option("--dim", default=DEFAULT_DIM, show_default=True, type=click.IntRange(8),
              help="Hash buckets per detector.")
@click.option("--margin", default=0.05, show_default=True, type=click.FloatRange(0, 1),
              help="Accuracy an update or aggregate may lose and still be accepted.")
@click.option("--min-level", type=click.Choice([lv.name for lv in Level]), default="L2",
              show_default=True, help="Trust level a client needs to take part.")
@click.option("--period", default=3, show_default=True, type=click.IntRange(1),
              help="Observation period T.")
@click.option("--clones", default=2, show_default=True, type=click.IntRange(1),
              help="Mutated clones per client (d).")
@click.option("--poison/--no-poison", default=False,
              help="Add a client whose labels are all flipped.")
@click.option("--seed", default=0, show_default=True, help="Seed of every random draw.")
@click.option("--ledger", "ledger_dir", type=click.Path(path_type=Path, file_okay=False),
              help="Record every federated round in the ledger in this directory.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def train(paths: tuple[Path, ...], synthetic: bool, per_family: int, selves: int, scheme: str,
          rounds: int, dim: int, margin: float, min_level: str, period: int, clones: int,
          poison: bool, seed: int, ledger_dir: Path | None, as_json: bool) -> None:
    """Train detectors over non-IID clients (one antigen family each) and score them."""
    rng = np.random.default_rng(seed)
    traffic = _traffic(paths, synthetic, per_family, selves, rng)
    try:
        data = split(traffic, rng, dim=dim, poisoned=poison)
        plan = Plan(rounds=rounds, margin=margin, min_level=Level[min_level], period=period,
                    clones=clones)
        runs = [_run(s, data, plan, rng) for s in (SCHEMES if scheme == "all" else (scheme,))]
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    if ledger_dir is not None:
        from endosec.observe.ledger import Ledger  # noqa: PLC0415 (only with --ledger)
        with Ledger(ledger_dir) as ledger:
            for run in runs:
                for outcome in run.rounds:
                    record_round(ledger, run.scheme, outcome, now=time.time())
    scores = [score(run, data) for run in runs]
    if as_json:
        click.echo(json.dumps({"clients": [c.name for c in data.clients],
                               "schemes": [_row(s, r) for s, r in zip(scores, runs,
                                                                        strict=True)]},
                              indent=1))
        return
    click.echo(f"{len(data.clients)} clients, {len(traffic)} requests, dim {dim}")
    click.echo(f"  {'scheme':<8} {'seen':>6} {'unseen':>7} {'false+':>7}  excluded")
    for s in scores:
        click.echo(f"  {s.scheme:<8} {s.seen:>6.3f} {s.unseen:>7.3f} "
                   f"{s.false_positive:>7.3f}  {', '.join(s.excluded) or '-'}")
