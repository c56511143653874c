"""``endosec redteam``: run the red-team and fault-injection suite against a configuration."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from endosec.config import ConfigError, load_config

__all__ = ["redteam"]

try:  # the drill's clients on the gateway's own loop: more requests per CPU second
    from uvloop import run as _run_loop
except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
    from asyncio import run as _run_loop  # type: ignore[assignment]


@click.command("redteam")
@click.option("--config", "config_path", required=True,
              type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="The deployment's YAML configuration (its executors are started here).")
@click.option("--report", "report_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("redteam-report"), show_default=True,
              help="Directory for report.md, report.json and the drill's working files.")
@click.option("--quick", is_flag=True, help="Smaller counts (at most 2000 benign requests).")
@click.option("--benign-requests", type=click.IntRange(min=1), default=10_000,
              show_default=True, help="Requests in the benign-only phase (false alarms).")
@click.option("--episodes", type=click.IntRange(min=1), default=None,
              help="Incremental-penetration episodes (default 10, quick 4).")
@click.option("--no-incremental", is_flag=True, help="Skip the incremental-penetration phase.")
@click.option("--workload", type=click.Choice(["auto", "notes", "static"]), default="auto",
              show_default=True,
              help="Benign traffic: the demo's notes API, or the files of a docroot.")
@click.option("--docroot", type=click.Path(file_okay=False, exists=True, path_type=Path),
              default=None, help="Docroot for the static workload (default: from --docroot "
                                 "in an executor's argv).")
@click.option("--seed", type=int, default=1, show_default=True, help="Seed for traffic.")
@click.option("--only", multiple=True, metavar="NAME",
              help="Run only this case or class (repeatable); the report then fails.")
@click.option("--soak", type=click.IntRange(min=1), default=None, metavar="N",
              help="Instead of the catalogue: N benign requests while single-executor faults "
                   "(kill, stop, slow, wrong answer) come and go.")
@click.option("--soak-availability", type=click.FloatRange(0, 1), default=0.9999,
              show_default=True, help="The soak's availability target.")
@click.option("--fault-every", type=click.FloatRange(min=0.1), default=3.0, show_default=True,
              help="Seconds between the soak's faults, at least (and the pool whole again).")
def redteam(*, config_path: Path, report_dir: Path, quick: bool, benign_requests: int,
            episodes: int | None, no_incremental: bool, workload: str, docroot: Path | None,
            seed: int, only: tuple[str, ...], soak: int | None, soak_availability: float,
            fault_every: float) -> None:
    """Attack a deployment with planted implants, faults and hostile clients; report.

    Every executor runs under the implant wrapper; the gateway and executors are started on
    loopback by this command and stopped at the end. Exits 1 when a required figure is missed.
    """
    from endosec.redteam.report import soak_table, summary_table, write_report  # noqa: PLC0415
    from endosec.redteam.runner import SuiteOptions, run_suite  # noqa: PLC0415
    from endosec.redteam.soak import SoakOptions  # noqa: PLC0415

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    if config.protocol != "http":
        raise click.ClickException(
            f"{config_path}: protocol {config.protocol}: the red team drills HTTP gateways "
            "only (its implant wrapper and clients speak HTTP)")
    opts = SuiteOptions(quick=quick, benign_requests=benign_requests, seed=seed,
                        workload=workload, docroot=docroot, episodes=episodes,
                        incremental=not no_incremental, only=only,
                        soak=None if soak is None else SoakOptions(
                            soak, availability=soak_availability, fault_every=fault_every))

    def log(line: str) -> None:
        click.echo(f"endosec redteam: {line}", err=True)

    try:
        report = _run_loop(run_suite(config, str(config_path), report_dir.resolve(), opts,
                                     log=log))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    js, md = write_report(report, report_dir)
    click.echo(soak_table(report) if report["mode"] == "soak" else summary_table(report))
    click.echo(f"\nreport: {md}  {js}")
    if not report["verdict"]["passed"]:
        for failure in report["verdict"]["failures"]:
            click.echo(f"FAILED: {failure}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    redteam()
