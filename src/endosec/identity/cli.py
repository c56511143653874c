"""``endosec identity``: make and inspect the Ed25519 keys hosts admit each other by."""

from __future__ import annotations

from pathlib import Path

import click

from endosec.identity.keys import IdentityError, load_identity, new_key
from endosec.identity.schnorr import public_key

__all__ = ["identity"]


@click.group(name="identity")
def identity() -> None:
    """Identity keys for admission between a gateway and its agents (see docs/identity.md)."""


@identity.command(name="key")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the private key (PEM, mode 0600); never overwritten.")
def key(out: Path) -> None:
    """Make a new identity key and print its public key (hex), for the peers' `keys`."""
    try:
        made = new_key(out)
    except FileExistsError:
        raise click.ClickException(f"{out}: already exists; not overwritten") from None
    except OSError as exc:
        raise click.ClickException(f"{out}: cannot write: {exc.strerror or exc}") from exc
    click.echo(public_key(made).hex())


@identity.command(name="show")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def show(path: Path) -> None:
    """Print the public key (hex) of the identity key in PATH."""
    try:
        click.echo(load_identity(path, None).public.hex())
    except IdentityError as exc:
        raise click.ClickException(str(exc)) from exc
