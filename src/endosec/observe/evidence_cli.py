"""``endosec evidence list`` and ``endosec evidence show ID``: what dissenters answered."""

from __future__ import annotations

import json
from pathlib import Path

import click

from endosec.observe.evidence import diff, find

__all__ = ["evidence"]


def _directory(state_dir: Path) -> Path:
    directory = state_dir / "evidence"
    if not directory.is_dir():
        raise click.ClickException(f"no evidence under {state_dir} (is it the gateway's "
                                   "--state-dir?)")
    return directory


state_dir_argument = click.option(
    "--state-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
    help="The gateway's state directory.")


@click.group(name="evidence", context_settings={"help_option_names": ["-h", "--help"]})
def evidence() -> None:
    """Read the replies kept when executors dissented (redacted as configured)."""


@evidence.command(name="list")
@state_dir_argument
def list_command(state_dir: Path) -> None:
    """One line per record, oldest first: id, request, who dissented or failed."""
    files = sorted(_directory(state_dir).glob("*.json"), key=lambda p: p.stat().st_mtime_ns)
    for path in files:
        v = json.loads(path.read_text())["verdict"]
        against = [*v.get("dissented", ()), *v.get("failed", ())]
        click.echo(f"{path.stem[:16]}  {v.get('method')} {v.get('path')}  {v.get('outcome')}"
                   f"  against: {', '.join(against) or '-'}")


@evidence.command(name="show")
@click.argument("evidence_id")
@state_dir_argument
def show_command(evidence_id: str, state_dir: Path) -> None:
    """The winner's reply against each dissenter's: status, headers, and a field-by-field diff
    of JSON bodies (a line diff of others). EVIDENCE_ID may be a unique prefix."""
    try:
        found, record = find(_directory(state_dir), evidence_id)
    except KeyError as exc:
        raise click.ClickException(str(exc.args[0])) from exc
    click.echo(diff(found, record))
