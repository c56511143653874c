"""``endosec ledger verify`` and ``endosec ledger show``: check and read the signed ledger."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from endosec.cluster.member import Keys, anchor_of
from endosec.cluster.store import EMBEDDED, StoreError, open_store
from endosec.observe.anchor import Anchor, AnchorError
from endosec.observe.ledger_format import (
    PUBLIC_KEY_FILE,
    LedgerError,
    Record,
    fingerprint,
    load_public_key,
    raw_public,
)
from endosec.observe.ledger_verify import read_records
from endosec.observe.ledger_verify import verify as verify_ledger

__all__ = ["ledger"]


@click.group(name="ledger", context_settings={"help_option_names": ["-h", "--help"]})
def ledger() -> None:
    """Check and read the signed ledger of verdicts and controller actions."""


@ledger.command(name="verify")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--public-key", "public_key_path", default=None,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Expected signing key (PEM or 64 hex chars); default: the directory's "
                   "ledger.pub, else the first record's key.")
@click.option("--anchor", is_flag=True,
              help="Also require the ledger to reach the anchor kept in the control-state "
                   "store: a ledger whose last records were cut off fails.")
@click.option("--cluster", "store_url", default=None, metavar="URL",
              help="With --anchor: the store (etcd://HOST:PORT,...); default: the embedded "
                   "store of the state directory holding the ledger.")
@click.option("--boundary", default="endosec", show_default=True,
              help="With --anchor: the boundary the gateway belonged to (cluster.boundary).")
def verify_command(path: Path, public_key_path: Path | None, anchor: bool,
                   store_url: str | None, boundary: str) -> None:
    """Check the chain and every signature (exit status 0 only if all hold).

    PATH is a ledger directory or one of its files.
    """
    try:
        key = load_public_key(public_key_path) if public_key_path is not None else None
        kept = asyncio.run(_anchor(path, key, store_url, boundary)) if anchor else None
        report = verify_ledger(path, public_key=key, anchor=kept)
    except (LedgerError, StoreError, AnchorError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    if kept is not None:
        click.echo(f"anchor #{kept.seq} by {kept.gateway} at {_when(kept.ts)}")
    click.echo(report.summary())
    if report.key is not None:
        click.echo(f"key {report.key}; head #{report.last_seq} {report.last_hash}")
    if not report.ok:
        click.get_current_context().exit(1)


async def _anchor(path: Path, key: Ed25519PublicKey | None, store_url: str | None,
                  boundary: str) -> Anchor:
    """The anchor the store keeps for this ledger's key; an error when there is none."""
    if not path.is_dir():
        raise LedgerError(f"{path}: --anchor checks a whole ledger: give its directory")
    directory = path
    if key is None and (directory / PUBLIC_KEY_FILE).is_file():
        key = load_public_key(directory / PUBLIC_KEY_FILE)
    if key is not None:
        key_hex = raw_public(key).hex()
    else:
        first = next((e.record for e in read_records(path) if e.record is not None), None)
        if first is None:
            raise LedgerError(f"{path}: no record to tell whose ledger this is")
        key_hex = first.key
    store = open_store(store_url or EMBEDDED, directory.parent)
    try:
        kept = await anchor_of(store, Keys(boundary), key_hex)
    finally:
        await store.close()
    if kept is None:
        raise LedgerError(f"{store.url} keeps no anchor for the ledger signed by "
                          f"{fingerprint(key_hex)} in boundary {boundary!r}")
    return kept


def _since(_ctx: click.Context, _param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter("expected ISO 8601 or UNIX seconds") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _mentions(payload: Mapping[str, Any], executor: str) -> bool:
    """Whether a payload names the executor: as ``executor`` or in a top-level list."""
    if payload.get("executor") == executor:
        return True
    return any(isinstance(v, list) and executor in v for v in payload.values())


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _readable(record: Record) -> str:
    when = _when(record.ts)
    fields = " ".join(f"{k}={json.dumps(v, separators=(',', ':'), sort_keys=True)}"
                      for k, v in sorted(record.payload.items()))
    return f"#{record.seq} {when} {record.kind} {fields}".rstrip()


@ledger.command(name="show")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--since", callback=_since, default=None,
              help="Only records at or after this time (ISO 8601, UTC if no zone; or UNIX).")
@click.option("--executor", default=None, help="Only records that name this executor.")
@click.option("--kind", default=None, help="Only records of this kind (e.g. verdict).")
@click.option("--json", "as_json", is_flag=True, help="Print each record as its JSON line.")
def show_command(path: Path, since: float | None, executor: str | None, kind: str | None,
                 as_json: bool) -> None:
    """Print records readably (read only: `verify` checks them).

    PATH is a ledger directory or one of its files.
    """
    for entry in read_records(path):
        record = entry.record
        if record is None:
            click.echo(f"skipped {entry.file.name}:{entry.line}: {entry.problem}", err=True)
            continue
        if ((since is not None and record.ts < since) or (kind is not None and record.kind != kind)
                or (executor is not None and not _mentions(record.payload, executor))):
            continue
        click.echo(record.line().decode("ascii") if as_json else _readable(record))


if __name__ == "__main__":
    ledger()
