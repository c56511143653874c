"""The ``endosec`` command: a thin shell over the gateway, the quantifier and the tools."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from endosec.config import Config, ConfigError, config_from_mapping, load_config, parse_address

__all__ = ["main"]

DEMO_CONFIG = Path(__file__).resolve().parent / "demo" / "endosec.yaml"


def _read(path: Path, *, listen: str | None = None,
          admin: str | None = None) -> tuple[Config, tuple[str, ...]]:
    """The validated configuration (with the listeners given on the command line) and its
    warnings; a `ConfigError` listing every error otherwise."""
    from endosec.preflight import problems

    config = load_config(path)
    if listen is not None:
        config = config.model_copy(update={"listen": listen})
    if admin is not None:
        config = config.model_copy(update={"admin": config.admin.model_copy(
            update={"listen": admin})})
    found = problems(config)
    if found.errors:
        raise ConfigError("\n".join(f"{path}: {e}" for e in found.errors))
    return config, found.warnings


def _load(path: Path, *, listen: str | None = None,
          admin: str | None = None) -> tuple[Config, tuple[str, ...]]:
    try:
        return _read(path, listen=listen, admin=admin)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


def _address(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        try:
            parse_address(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from exc
    return value


def _store_url(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        from endosec.cluster.store import parse_store_url
        try:
            parse_store_url(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from exc
    return value


state_dir_option = click.option(
    "--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Directory for executor scratch space and records (default: a per-user state dir).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="endosec")
def main() -> None:
    """endosec: Dynamic Heterogeneous Redundancy in front of any request/response service."""


@main.command()
@click.option("--config", "config_path", required=True,
              type=click.Path(dir_okay=False, path_type=Path), help="YAML configuration file.")
def check(config_path: Path) -> None:
    """Validate a configuration file (schema, commands, ports, paths, rules) and exit."""
    config, warnings = _load(config_path)
    click.echo(f"{config_path}: ok ({len(config.executors)} executors, "
               f"{config.controller.active} active, arbiter {config.arbiter.strategy})")
    for warning in warnings:
        click.echo(f"{config_path}: warning: {warning}", err=True)


@main.command()
@click.option("--config", "config_path", required=True,
              type=click.Path(dir_okay=False, path_type=Path), help="YAML configuration file.")
@click.option("--listen", callback=_address, default=None, metavar="HOST:PORT",
              help="Client listener (overrides listen in the file).")
@click.option("--admin", callback=_address, default=None, metavar="HOST:PORT",
              help="Admin listener (overrides admin.listen in the file).")
@click.option("--cluster", "store_url", callback=_store_url, default=None, metavar="URL",
              help="The control-state store: etcd://HOST:PORT[,HOST:PORT...] or 'embedded' "
                   "(overrides cluster.store in the file).")
@state_dir_option
def run(config_path: Path, listen: str | None, admin: str | None, store_url: str | None,
        state_dir: Path | None) -> None:
    """Serve the mimic gateway described by a configuration file."""
    from endosec.gateway.app import default_state_dir

    config, warnings = _load(config_path, listen=listen, admin=admin)
    config = _with_store(config, store_url)
    for warning in warnings:
        click.echo(f"{config_path}: warning: {warning}", err=True)

    def ready(where: Any) -> None:
        click.echo(f"endosec: serving {where.serve_url}  admin {where.admin_url}  "
                   f"executors: {', '.join(where.executors)}")
        sys.stdout.flush()

    _serve(config, state_dir or default_state_dir(), ready,
           reload=lambda: _with_store(_read(config_path, listen=listen, admin=admin)[0],
                                      store_url))


def _with_store(config: Config, store_url: str | None) -> Config:
    """The configuration with the command line's store, if it named one."""
    if store_url is None:
        return config
    return config.model_copy(update={"cluster": config.cluster.model_copy(
        update={"store": store_url})})


def _serve(config: Config, state_dir: Path, ready: Any,
           reload: Callable[[], Config] | None = None) -> None:
    from endosec.gateway.app import run_forever
    from endosec.gateway.engine import StartupError
    from endosec.observe.ledger_format import LedgerError

    try:
        run_forever(config, state_dir=state_dir, on_ready=ready, reload=reload)
    except (StartupError, LedgerError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc


def demo_config(listen: str | None, admin: str | None, backdoor: str | None) -> Config:
    """The shipped demo configuration, adjusted by the demo's options."""
    import yaml

    data = yaml.safe_load(DEMO_CONFIG.read_text(encoding="utf-8"))
    if listen:
        data["listen"] = listen
    if admin:
        data.setdefault("admin", {})["listen"] = admin
    executors = data["executors"]
    if shutil.which("node") is None:
        kept = [e for e in executors if "node" not in e["argv"][0]]
        click.echo("endosec demo: Node.js not found; running the Python executors only "
                   f"({', '.join(e['name'] for e in kept)})", err=True)
        executors[:] = kept
        controller = data.setdefault("controller", {})
        controller["active"] = min(controller.get("active", 3), len(kept))
        controller["floor"] = min(controller.get("floor", 2), controller["active"])
    if backdoor is not None:
        names = [e["name"] for e in executors]
        if backdoor not in names:
            raise click.BadParameter(f"no executor named {backdoor!r}; choose from "
                                     f"{', '.join(names)}", param_hint="--backdoor")
        for e in executors:
            if e["name"] == backdoor:
                e.setdefault("env", {})["NOTES_BACKDOOR_SECRET"] = str(
                    DEMO_CONFIG.parent / "secret.txt")
    try:
        return config_from_mapping(data, source=str(DEMO_CONFIG), here=DEMO_CONFIG.parent)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


@main.command()
@click.option("--listen", callback=_address, default=None, metavar="HOST:PORT",
              help="Client listener (default from the demo config: 127.0.0.1:8080).")
@click.option("--admin", callback=_address, default=None, metavar="HOST:PORT",
              help="Admin listener (default 127.0.0.1:8081).")
@click.option("--backdoor", default=None, metavar="NAME",
              help="Plant a backdoor in this executor: 'X-Debug: letmein' leaks a secret file.")
@state_dir_option
def demo(listen: str | None, admin: str | None, backdoor: str | None,
         state_dir: Path | None) -> None:
    """Run the gateway in front of the bundled heterogeneous demo executors."""
    from endosec.gateway.app import default_state_dir

    config = demo_config(listen, admin, backdoor)

    def ready(where: Any) -> None:
        click.echo(f"endosec demo: serving {where.serve_url}  admin {where.admin_url}  "
                   f"executors: {', '.join(where.executors)}")
        sys.stdout.flush()

    _serve(config, state_dir or default_state_dir() / "demo", ready)


@main.command()
@click.option("--config", "config_path", required=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="The agent's YAML file (listen, tls, identity, keys, executors).")
@state_dir_option
def agent(config_path: Path, state_dir: Path | None) -> None:
    """Run executors on this host for a gateway elsewhere (HTTPS API, pinned certificate,
    mutual admission by identity keys)."""
    import asyncio
    import signal

    from endosec.gateway.app import default_state_dir
    from endosec.runtime.agent import load_agent_config, serve_agent

    try:
        config = load_agent_config(config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc

    def ready(url: str) -> None:
        click.echo(f"endosec agent: serving {url}  executors: "
                   f"{', '.join(e.name for e in config.executors)}")
        sys.stdout.flush()

    async def main_loop() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve_agent(config, state_dir or default_state_dir() / "agent", stop=stop,
                          on_ready=ready)

    try:
        asyncio.run(main_loop())
    except OSError as exc:
        raise click.ClickException(str(exc)) from exc


@main.command()
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory for cert.pem and key.pem.")
@click.option("--address", "addresses", multiple=True, required=True, metavar="HOST",
              help="An address or name the certificate is for (repeatable).")
@click.option("--days", default=825, show_default=True, help="Validity.")
def cert(out: Path, addresses: tuple[str, ...], days: int) -> None:
    """Make a self-signed certificate and key (for an agent, or the client listener's TLS)."""
    from endosec.runtime.certs import self_signed

    fingerprint = self_signed(out, addresses, days)
    click.echo(f"{out / 'cert.pem'}  {out / 'key.pem'}  sha256 {fingerprint}")


def _register_components() -> None:
    """Each component declares its own commands; the shell only collects them."""
    from endosec.attest.cli import attest
    from endosec.cluster.cli import cluster
    from endosec.identity.cli import identity
    from endosec.immune.cli import immune
    from endosec.learn_cli import learn
    from endosec.observe.evidence_cli import evidence
    from endosec.observe.ledger_cli import ledger
    from endosec.quantify.cli import quantify
    from endosec.redteam.cli import redteam

    main.add_command(quantify)
    main.add_command(ledger)
    main.add_command(evidence)
    main.add_command(redteam)
    main.add_command(learn)
    main.add_command(attest)
    main.add_command(identity)
    main.add_command(cluster)
    main.add_command(immune)


_register_components()


if __name__ == "__main__":
    main()
