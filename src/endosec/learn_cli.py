"""``endosec learn``: propose canonicalisation rules from the dissent a gateway observed."""

from __future__ import annotations

from pathlib import Path

import click
import yaml

from endosec.config import ConfigError, load_config

__all__ = ["learn"]


@click.command(name="learn")
@click.option("--config", "config_path", required=True,
              type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="The configuration the gateway ran (the patch is against it).")
@click.option("--events", "events_path", required=True,
              type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="The gateway's JSON-lines event log (gateway.events).")
@click.option("--state-dir", type=click.Path(file_okay=False, exists=True, path_type=Path),
              default=None, help="The gateway's state directory: its evidence/ holds the "
                                 "replies behind each dissent (needed for HTTP rules).")
@click.option("--min-count", type=click.IntRange(min=1), default=3, show_default=True,
              help="Verdicts with the same differences on one request class before a rule "
                   "is proposed (noise between twins needs one).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the patch to this file.")
def learn(config_path: Path, events_path: Path, state_dir: Path | None, min_count: int,
          out: Path | None) -> None:
    """Propose canonicalisation rules for repeated benign dissent, as a YAML patch with the
    evidence for each rule. Nothing is applied. See docs/learn.md."""
    from endosec.learn import learn as propose  # noqa: PLC0415 - keep `endosec --help` fast
    from endosec.learn import read_events, render  # noqa: PLC0415

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    data = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    evidence = None if state_dir is None else state_dir / "evidence"
    learned = propose(config, data, read_events(events_path), evidence, min_count=min_count)
    text = render(learned, source=str(config_path), events=str(events_path))
    if out is not None:
        out.write_text(text, encoding="utf-8")
    click.echo(text, nl=False)
