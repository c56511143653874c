"""``endosec attest manifest``: measure each executor endosec runs once and sign what was
measured."""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

import click

from endosec.attest.manifest import sign_manifest, write_manifest
from endosec.attest.measure import Measurement
from endosec.config import Config, ConfigError, ExecutorConfig, load_config
from endosec.gateway.dns import dns_health_probe
from endosec.observe.ledger_format import LedgerError, fingerprint, load_or_create_key
from endosec.runtime.base import RuntimeDriver, RuntimeDriverError
from endosec.runtime.drivers import local_spec, segmented
from endosec.runtime.process import ProcessExecutor
from endosec.runtime.remote import AgentExecutor

__all__ = ["attest"]


@click.group(name="attest", context_settings={"help_option_names": ["-h", "--help"]})
def attest() -> None:
    """Measure executors and sign the manifest they are checked against at launch."""


@attest.command(name="manifest")
@click.option("--config", "config_path", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The gateway's YAML configuration file.")
@click.option("--key", "key_path", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="The operator's Ed25519 private key (PEM), made (mode 0600) if missing; "
                   "default: operator.key beside the configuration.")
@click.option("--out", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the manifest; default: attest.json beside the configuration.")
def manifest_command(config_path: Path, key_path: Path | None, out: Path | None) -> None:
    """Start each local executor in a scratch directory of its own, measure it, stop it, and
    write the manifest signed with the operator's key."""
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    here = config_path.resolve().parent
    key_path = key_path or here / "operator.key"
    out = out or here / "attest.json"
    made = not key_path.exists()
    try:
        key = load_or_create_key(key_path)
    except (LedgerError, OSError) as exc:
        raise click.ClickException(f"{key_path}: {exc}") from exc
    measurements = asyncio.run(_measure_all(config))
    if not measurements:
        raise click.ClickException(f"{config_path}: no local executor to measure")
    manifest = sign_manifest(measurements, key)
    try:
        write_manifest(out, manifest)
    except OSError as exc:
        raise click.ClickException(f"{out}: {exc}") from exc
    click.echo(f"{out}: {len(measurements)} measured, signed by {fingerprint(manifest.key)}")
    click.echo(f"public key {manifest.key}"
               + (f" (new private key {key_path}, mode 0600)" if made else f" ({key_path})"))


async def _measure_all(config: Config) -> list[Measurement]:
    """One measurement per executor endosec runs: each local one started alone in a fresh
    scratch root, each of an agent started, measured and stopped by its agent."""
    measurements = []
    for e in config.executors:
        if e.agent is not None:
            measurement = await _measure_remote(e)
            click.echo(f"{e.name}: {measurement.files} files measured by its agent")
            measurements.append(measurement)
        elif e.url is not None:
            click.echo(f"{e.name}: skipped: a service endosec does not run ({e.url})")
        else:
            measurement = await _measure_one(config, e)
            click.echo(f"{e.name}: {measurement.files} files measured")
            measurements.append(measurement)
    return measurements


async def _measure_remote(e: ExecutorConfig) -> Measurement:
    assert e.agent is not None
    return await _measured(AgentExecutor(e.name, e.agent, start_timeout=e.health.start_timeout,
                                         health_timeout=e.health.timeout),
                           f"{e.name}: its agent sent no measurement")


async def _measure_one(config: Config, e: ExecutorConfig) -> Measurement:
    probe = dns_health_probe(e.health.dns_query or "") if config.protocol == "dns" else None
    with tempfile.TemporaryDirectory(prefix="endosec-attest-") as root:
        os.chmod(root, 0o711)  # workers that drop privileges must reach their scratch directory
        return await _measured(
            ProcessExecutor(local_spec(e, scratch_root=Path(root), health_probe=probe,
                                       segmented=segmented(e))),
            f"{e.name}: it stopped before it was measured")


async def _measured(executor: RuntimeDriver, missing: str) -> Measurement:
    """Start ``executor``, measure it, stop it; `click.ClickException` when that fails."""
    try:
        await executor.start()
        measurement = await executor.measure()
    except RuntimeDriverError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        await executor.stop()
    if measurement is None:
        raise click.ClickException(missing)
    return measurement
