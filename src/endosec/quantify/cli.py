"""``endosec quantify``: how likely an attacker is to defeat a configuration, and how fast.

Every subcommand prints a readable table, or JSON with ``--json`` (the keys are a stable
interface), and accepts ``--sweep PARAM=a:b:steps`` (with ``--plot out.png`` to draw the curve).
Bad parameters give a one-line error and exit status 2.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import click
from tqdm import tqdm

from endosec.core.model import Profile
from endosec.core.rotation_policy import PolicyFileError, RotationPolicy
from endosec.quantify.components import ComponentSystem, analyse
from endosec.quantify.config import read_config
from endosec.quantify.errors import ParameterError, check_k
from endosec.quantify.faithful import simulate_faithful
from endosec.quantify.markov import markov as solve_markov
from endosec.quantify.models import vote as solve_vote
from endosec.quantify.output import Sweep, format_table, parse_sweep, plot_sweep, render, to_json
from endosec.quantify.scenario import ATTACKERS, Progress, Scenario, synthetic_profiles
from endosec.quantify.train import train_rotation_policy
from endosec.quantify.vectorised import simulate_vectorised

__all__ = ["quantify"]

Params = dict[str, Any]
Row = Mapping[str, object]


class QuantifyError(click.UsageError):
    """A bad parameter, shown as one line (no usage text) with exit status 2."""

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"Error: {self.format_message()}", err=True, file=file)


def _attack_options(f: Callable[..., None]) -> Callable[..., None]:
    """Who attacks, and the pool the scheduler chooses from."""
    for option in reversed([
        click.option("--attacker", type=click.Choice(ATTACKERS), default="parallel",
                     show_default=True),
        click.option("--recon", type=float, default=0.0, show_default=True,
                     help="The recon attacker: seconds on duty before an exploit works."),
        click.option("--shared", type=int, help="Executors holding one common component "
                     "(shared-component attacker without --config; default k-1)."),
        click.option("--config", "config", type=click.Path(dir_okay=False, path_type=Path),
                     help="Take the pool of executors and profiles from an endosec "
                          "configuration."),
        click.option("--policy", default="random", show_default=True,
                     help="Scheduler policy (faithful engine: random, round-robin, "
                          "max-dissimilarity, credibility-weighted)."),
    ]):
        f = option(f)
    return f


def _sweep_options(f: Callable[..., None]) -> Callable[..., None]:
    f = click.option("--plot", type=click.Path(dir_okay=False, path_type=Path),
                     help="With --sweep: draw the curve into this PNG file.")(f)
    f = click.option("--sweep", metavar="PARAM=a:b:steps",
                     help="Evaluate over a range of one parameter.")(f)
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(f)


def _run(params: Params, compute: Callable[[Params], Row], *, sweepable: Mapping[str, type],
         metrics: Sequence[str], title: str, as_json: bool, sweep: str | None,
         plot: Path | None, extra: Callable[[Row], str] | None = None) -> None:
    """Evaluate once or over a sweep, then print (and plot) the result."""
    try:
        if plot is not None and sweep is None:
            raise ParameterError("--plot needs --sweep PARAM=a:b:steps")
        if sweep is None:
            result = compute(params)
            click.echo(to_json(result) if as_json else _human(result, extra))
            return
        spec: Sweep = parse_sweep(sweep, sweepable)
        cast = sweepable[spec.param]
        points = []
        for value in spec.values:
            row = dict(compute({**params, spec.param: cast(value)}))
            row[spec.param] = cast(value)
            points.append(row)
        if plot is not None:
            plot_sweep(plot, spec.param, points=points, metrics=metrics, title=title,
                       compute_ci=_interval)
        if as_json:
            click.echo(to_json({"sweep": spec.param, "points": points}))
        else:
            shown = [m for m in metrics if m in points[0]]
            click.echo(format_table(points, [spec.param, *shown]))
    except ParameterError as exc:
        raise QuantifyError(str(exc)) from None


def _human(result: Row, extra: Callable[[Row], str] | None) -> str:
    text = render(result)
    return text + ("\n\n" + extra(result) if extra is not None else "")


def _interval(row: Row, metric: str) -> tuple[float, float] | None:
    key = "ci" if metric == "mttsf" else f"{metric}_ci"
    if metric == "p_defeat" and row.get("method") == "monte-carlo":
        key = "ci"
    ci = row.get(key)
    if isinstance(ci, list) and len(ci) == 2:
        return (float(ci[0]), float(ci[1]))
    return None


@click.group(name="quantify")
def quantify() -> None:
    """Compute how likely an attacker is to defeat a DHR configuration, and how fast."""


@quantify.command()
@click.option("--n", "n", type=int, required=True, help="Executors voting.")
@click.option("--k", "k", type=int, help="Compromised executors that defeat the vote "
              "(default: a majority, n//2+1).")
@click.option("--p", "p", type=float, required=True, help="Per-executor compromise probability.")
@click.option("--beta", type=float, help="Common-cause beta factor.")
@click.option("--rho", type=float, help="Intra-class correlation (beta-binomial).")
@_sweep_options
def vote(**o: Any) -> None:
    """Static vote: P(at least k of n executors compromised at once)."""
    _run({key: o[key] for key in ("n", "k", "p", "beta", "rho")},
         lambda a: solve_vote(a["n"], a["p"], k=a["k"], beta=a["beta"], rho=a["rho"]).as_dict(),
         sweepable={"n": int, "k": int, "p": float, "beta": float, "rho": float},
         metrics=["p_defeat"], title="P(defeat) of a static vote",
         as_json=o["as_json"], sweep=o["sweep"], plot=o["plot"])


@quantify.command()
@click.option("--n", "n", type=int, required=True, help="Executors voting.")
@click.option("--k", "k", type=int, help="Compromised executors that defeat the vote.")
@click.option("--lam", type=float, required=True, help="Compromise rate per executor.")
@click.option("--mu", type=float, required=True, help="Detection and cleansing rate.")
@click.option("--t", "t", type=float, help="Also give P(defeated by time t).")
@click.option("--sequential", is_flag=True, help="The attacker works on one executor at a time.")
@click.option("--rotate", type=float, help="Rotate one executor every T (adds 1/(nT) to mu).")
@_sweep_options
def markov(**o: Any) -> None:
    """Markov chain: mean time to system compromise (MTTSF) and P(defeated by t)."""
    _run({key: o[key] for key in ("n", "k", "lam", "mu", "t", "rotate")},
         lambda a: solve_markov(a["n"], a["lam"], a["mu"], k=a["k"], t=a["t"],
                                sequential=o["sequential"], rotate=a["rotate"]).as_dict(),
         sweepable={"n": int, "k": int, "lam": float, "mu": float, "t": float,
                    "rotate": float},
         metrics=["mttsf", *(["p_defeat_by_t"] if o["t"] is not None else [])],
         title="Markov model of compromise and cleansing",
         as_json=o["as_json"], sweep=o["sweep"], plot=o["plot"])


def _component_pair(text: str) -> tuple[str, float]:
    name, sep, value = text.rpartition("=")
    try:
        if not sep or not name:
            raise ValueError
        return name, float(value)
    except ValueError:
        raise ParameterError(f"--component must be NAME=P, got {text!r}") from None


def _select(profiles: Sequence[Profile], names: str | None) -> list[Profile]:
    if names is None:
        return list(profiles)
    wanted = [s.strip() for s in names.split(",") if s.strip()]
    known = {p.name: p for p in profiles}
    for name in wanted:
        if name not in known:
            raise ParameterError(f"--executors: no executor named {name!r} in the config")
    return [known[name] for name in wanted]


def _contributions(result: Row) -> str:
    rows = result.get("contributions")
    if not isinstance(rows, list) or not rows:
        return "no component is shared by two or more executors"
    table = [{**r, "executors": ",".join(r["executors"])} for r in rows]
    return "shared components, largest risk first\n" + format_table(
        table, ["component", "executors", "p", "p_defeat_if_exploited", "contribution", "share"])


@quantify.command()
@click.option("--config", "config", type=click.Path(dir_okay=False, path_type=Path),
              required=True, help="An endosec configuration (executors and profiles).")
@click.option("--k", "k", type=int, help="Compromised executors that defeat the vote.")
@click.option("--p-default", "p_default", type=float,
              help="Exploit probability of components not named (default 0.01).")
@click.option("--component", "component", multiple=True, metavar="NAME=P",
              help="Exploit probability of one component (repeatable).")
@click.option("--executors", help="Comma-separated executors to consider (default: all).")
@click.option("--method", type=click.Choice(["auto", "exact", "monte-carlo"]), default="auto",
              show_default=True)
@click.option("--trials", type=int, default=100_000, show_default=True,
              help="Monte Carlo trials.")
@click.option("--seed", type=int, help="Random seed for Monte Carlo.")
@_sweep_options
def components(**o: Any) -> None:
    """Components: P(defeat) from each executor's profile, and which shared parts dominate."""
    def compute(a: Params) -> Row:
        cfg = read_config(o["config"])
        probabilities = dict(cfg.components)
        probabilities.update(_component_pair(c) for c in o["component"])
        default = a["p_default"] if a["p_default"] is not None else cfg.default_p
        system = ComponentSystem(_select(cfg.profiles, o["executors"]), probabilities,
                                 0.01 if default is None else default)
        method = None if o["method"] == "auto" else o["method"]
        return analyse(system, k=a["k"], method=method, trials=a["trials"],
                       seed=o["seed"]).as_dict()

    _run({key: o[key] for key in ("k", "p_default", "trials")}, compute,
         sweepable={"k": int, "p_default": float, "trials": int}, metrics=["p_defeat"],
         title=f"P(defeat) of {o['config'].name}", as_json=o["as_json"], sweep=o["sweep"],
         plot=o["plot"], extra=_contributions)


@contextmanager
def _progress_bar(total: int) -> Iterator[Progress]:
    """tqdm on stderr: at once on a terminal, otherwise only for runs over two seconds."""
    bar = tqdm(total=total, file=sys.stderr, unit="trial", leave=False,
               delay=0.0 if sys.stderr.isatty() else 2.0, mininterval=0.5)
    try:
        yield bar.update
    finally:
        bar.close()


@quantify.command()
@click.option("--n", "n", type=int, required=True, help="Executors voting.")
@click.option("--k", "k", type=int, help="Compromised executors that defeat the vote.")
@click.option("--lam", type=float, required=True, help="Attacker's compromise rate.")
@click.option("--mu", type=float, default=0.0, show_default=True,
              help="Rate of detection and cleansing per compromised executor.")
@click.option("--rotate", type=float, help="Rotate one active executor out every T.")
@click.option("--dissent", type=float, default=0.0, show_default=True,
              help="Rate at which a compromised executor dissents (cleansed on dissent).")
@click.option("--quarantine-after", "quarantine_after", type=int, default=1, show_default=True,
              help="Dissents within --dissent-window before quarantine.")
@click.option("--dissent-window", "dissent_window", type=float, default=60.0,
              show_default=True)
@click.option("--rotate-min", "rotate_min", type=float,
              help="Threat-aware rotation (faithful engine): the mean wait under full threat; "
                   "dissent raises the level as in a gateway.")
@click.option("--threat-half-life", "threat_half_life", type=float, default=120.0,
              show_default=True, help="Seconds for threat evidence to lose half its weight.")
@click.option("--threat-scale", "threat_scale", type=float, default=10.0, show_default=True,
              help="Dissents at which the threat level reaches 0.63.")
@click.option("--no-isolation", "no_isolation", is_flag=True,
              help="Faithful engine: dissent never isolates a component (threat.isolate_at: "
                   "null).")
@_attack_options
@click.option("--rotation-policy", "rotation_policy",
              type=click.Path(dir_okay=False, path_type=Path),
              help="A learned rotation policy (from train-scheduler; faithful engine).")
@click.option("--engine", type=click.Choice(["vectorised", "faithful"]), default="vectorised",
              show_default=True)
@click.option("--trials", type=int, help="Trials (default 20000 vectorised, 2000 faithful).")
@click.option("--t", "t", type=float, help="Also give P(defeated by time t).")
@click.option("--seed", type=int, help="Random seed.")
@_sweep_options
def simulate(**o: Any) -> None:
    """Monte Carlo of an attacker against the deployment: MTTSF with its 95% interval."""
    faithful = o["engine"] == "faithful"
    attacker, config, shared = o["attacker"], o["config"], o["shared"]

    def compute(a: Params) -> Row:
        quorum = check_k(a["n"], a["k"])
        if config is not None:
            profiles = read_config(config).profiles
        elif attacker == "shared-component":
            holders = quorum - 1 if shared is None else shared
            profiles = synthetic_profiles(a["n"] + (1 if faithful else 0), holders)
        else:
            profiles = ()
        sc = Scenario(n=a["n"], k=quorum, lam=a["lam"], mu=a["mu"], rotate=a["rotate"],
                      attacker=attacker, profiles=profiles, policy=o["policy"],
                      dissent=a["dissent"], quarantine_after=o["quarantine_after"],
                      dissent_window=o["dissent_window"], rotate_min=a["rotate_min"],
                      threat_half_life=o["threat_half_life"], threat_scale=o["threat_scale"],
                      recon=o["recon"], rotation=_load_policy(o["rotation_policy"]),
                      **({"isolate_at": None} if o["no_isolation"] else {}))
        count = a["trials"] or (2_000 if faithful else 20_000)
        if count < 2:
            raise ParameterError(f"trials must be at least 2, got {count}")
        if a["t"] is not None and a["t"] < 0:
            raise ParameterError(f"t must be >= 0, got {a['t']}")
        with _progress_bar(count) as progress:
            run = simulate_faithful if faithful else simulate_vectorised
            return run(sc, trials=count, seed=o["seed"], t=a["t"], progress=progress).as_dict()

    _run({key: o[key] for key in ("n", "k", "lam", "mu", "rotate", "rotate_min", "dissent",
                                  "trials", "t")},
         compute,
         sweepable={"n": int, "k": int, "lam": float, "mu": float, "rotate": float,
                    "rotate_min": float, "dissent": float, "t": float},
         metrics=["mttsf", *(["p_defeat_by_t"] if o["t"] is not None else [])],
         title=f"Simulated attacks ({o['engine']} engine, {attacker} attacker, "
               f"{o['policy']} policy)",
         as_json=o["as_json"], sweep=o["sweep"], plot=o["plot"])


def _load_policy(path: Path | None) -> RotationPolicy | None:
    if path is None:
        return None
    try:
        return RotationPolicy.from_json(path.read_text())
    except OSError as exc:
        raise ParameterError(f"--rotation-policy: cannot read {path}: {exc.strerror}") from None
    except PolicyFileError as exc:
        raise ParameterError(f"--rotation-policy {path}: {exc}") from None


@quantify.command("train-scheduler")
@click.option("--n", "n", type=int, required=True, help="Executors voting.")
@click.option("--k", "k", type=int, help="Compromised executors that defeat the vote.")
@click.option("--lam", type=float, required=True, help="Attacker's compromise rate.")
@click.option("--rotate", type=float, required=True,
              help="The budget: one rotation per ROTATE seconds on average.")
@click.option("--t", "t", type=float, required=True, help="Horizon of each attack (seconds).")
@click.option("--rotate-min", "rotate_min", type=float,
              help="Also compare threat-aware rotation: the mean wait under full threat.")
@click.option("--dissent", type=float, default=0.0, show_default=True,
              help="Rate at which a compromised executor dissents (raising the threat).")
@click.option("--quarantine-after", "quarantine_after", type=int, default=1, show_default=True,
              help="Dissents within 60 s before quarantine.")
@_attack_options
@click.option("--episodes", type=int, default=3000, show_default=True,
              help="Attacks to learn from.")
@click.option("--trials", type=int, default=2000, show_default=True,
              help="Fresh attacks on which the learned and fixed-rate policies are compared.")
@click.option("--epoch", type=float, help="Mean seconds between decisions (default rotate/5).")
@click.option("--age-unit", "age_unit", type=float,
              help="Seconds per step of a voter's service time in the state (default recon/2).")
@click.option("--seed", type=int, help="Random seed.")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Where to write the policy (JSON), for --rotation-policy and "
                   "controller.rotation_policy.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def train_scheduler(**o: Any) -> None:
    """Learn when and whom to rotate (tabular Q-learning on the real controller), within the
    budget of fixed-rate rotation, and compare the two on fresh attacks."""
    try:
        quorum = check_k(o["n"], o["k"])
        profiles = read_config(o["config"]).profiles if o["config"] is not None else ()
        sc = Scenario(n=o["n"], k=quorum, lam=o["lam"], rotate=o["rotate"],
                      attacker=o["attacker"], profiles=profiles, policy=o["policy"],
                      recon=o["recon"], rotate_min=o["rotate_min"], dissent=o["dissent"],
                      quarantine_after=o["quarantine_after"])
        result = train_rotation_policy(sc, o["t"], episodes=o["episodes"], trials=o["trials"],
                                       seed=o["seed"], epoch=o["epoch"], age_unit=o["age_unit"])
    except ParameterError as exc:
        raise QuantifyError(str(exc)) from None
    o["out"].write_text(result.policy.to_json() + "\n")
    rows: dict[str, dict[str, Any]] = {
        name: {"p_defeat_by_t": h.p_defeat, "p_defeat_by_t_ci": list(h.ci),
               "rotations_per_hour": round(h.rotations_per_hour, 2)}
        for name, h in (("fixed-rate", result.fixed), ("threat-aware", result.threat_aware),
                        ("learned", result.learned)) if h is not None}
    summary = {"t": o["t"], "episodes": result.episodes, "trials": o["trials"],
               "policy_file": str(o["out"]), **rows}
    click.echo(to_json(summary) if o["as_json"] else "\n".join(
        [f"wrote {o['out']} after {result.episodes} episodes; P(defeat by {o['t']:g}) over "
         f"{o['trials']} fresh attacks:"]
        + [f"  {name:<12} {r['p_defeat_by_t']:.4f} [{r['p_defeat_by_t_ci'][0]:.4f}, "
           f"{r['p_defeat_by_t_ci'][1]:.4f}]  {r['rotations_per_hour']:.1f} rotations/hour"
           for name, r in rows.items()]))


if __name__ == "__main__":
    quantify()
