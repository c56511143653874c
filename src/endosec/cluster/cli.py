"""``endosec cluster status``: the store's health, the boundary's members and its leader."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from endosec.cluster.control import ControlError, ControlView
from endosec.cluster.member import Keys
from endosec.cluster.store import EMBEDDED, StoreError, open_store
from endosec.config import ConfigError, load_config
from endosec.gateway.app import default_state_dir
from endosec.observe.anchor import Anchor, AnchorError
from endosec.observe.chain import ChainError, Link, check_chain
from endosec.observe.ledger_format import (
    PUBLIC_KEY_FILE,
    fingerprint,
    load_public_key,
    raw_public,
)
from endosec.observe.ledger_verify import verify_since

__all__ = ["cluster"]


@click.group(name="cluster", context_settings={"help_option_names": ["-h", "--help"]})
def cluster() -> None:
    """The gateways of a boundary and the control-state store they share."""


async def _status(url: str, state_dir: Path, boundary: str, timeout: float) -> dict[str, Any]:
    store = open_store(url, state_dir, timeout=timeout)
    try:
        health = await store.health()
        keys = Keys(boundary)
        cards = [json.loads(item.value) for item in await store.prefix(keys.members)]
        leading = await store.get(keys.leader)
        published = await store.get(keys.control)
        anchors: dict[str, Anchor] = {}
        for item in await store.prefix(keys.anchors):
            try:
                anchor = Anchor.decode(item.value)
            except AnchorError:
                continue
            anchors[anchor.key] = anchor
    finally:
        await store.close()
    view = _view(None if published is None else published.value)
    now = time.time()
    members = []
    for card in sorted(cards, key=lambda c: str(c.get("gateway"))):
        kept = anchors.get(str(card.get("ledger_key")))
        members.append({**card, "seen_ago": round(now - float(card.get("at", now)), 3),
                        "anchored": None if kept is None else kept.seq,
                        "control_lag": _lag(view, card.get("control"))})
    return {"store": {"url": store.url, "kind": health.kind, "ok": health.ok,
                      "leader": health.leader, "index": health.index,
                      "members": [{"name": n, "endpoint": e, "answering": a}
                                  for n, e, a in health.members]},
            "boundary": boundary,
            "leader": None if leading is None else leading.value.decode(errors="replace"),
            "members": members,
            "control": None if view is None else {
                "leader": view.leader, "term": view.term, "seq": view.seq, "serve": view.serve,
                "voters": list(view.voters),
                "states": {n: s.value for n, s in view.states.items()}},
            "anchors": [{"gateway": a.gateway, "seq": a.seq, "ts": a.ts,
                         "key": fingerprint(a.key)} for a in anchors.values()]}


def _print(report: dict[str, Any]) -> None:
    store = report["store"]
    state = "healthy" if store["ok"] else "NO LEADER"
    click.echo(f"store {store['url']}: {state} (leader {store['leader']}, index {store['index']})")
    for m in store["members"]:
        click.echo(f"  {m['name']:<12} {m['endpoint']:<28} "
                   f"{'answering' if m['answering'] else 'NOT ANSWERING'}")
    if store["kind"] == EMBEDDED:
        click.echo("  (members and leader live in the gateway's own process: its /status "
                   "shows them; the file keeps the anchors)")
    click.echo(f"boundary {report['boundary']}: {len(report['members'])} gateway(s), "
               f"leader {report['leader'] or 'none'}")
    control = report["control"]
    if control is not None:
        click.echo(f"control: published by {control['leader']} (term {control['term']}, "
                   f"#{control['seq']}); voters {', '.join(control['voters']) or 'none'}; "
                   f"writes to {control['serve'] or '-'}")
    for m in report["members"]:
        anchored = "-" if m["anchored"] is None else f"#{m['anchored']}"
        lag = "-" if m["control_lag"] is None else str(m["control_lag"])
        click.echo(f"  {m.get('gateway', '?'):<24} {m.get('role', '?'):<9} ledger "
                   f"#{m.get('ledger_seq', 0)} anchored {anchored}  control lag {lag}  "
                   f"seen {m['seen_ago']:.1f} s "
                   f"ago  serve {m.get('serve', '-')}  admin {m.get('admin', '-')}")
    for a in report["anchors"]:
        click.echo(f"  anchor of ledger {a['key']}: #{a['seq']} by {a['gateway']} at "
                   f"{a['ts']:.0f}")


def _view(raw: bytes | None) -> ControlView | None:
    try:
        return None if raw is None else ControlView.decode(raw)
    except ControlError:
        return None


def _lag(view: ControlView | None, applied: Any) -> int | None:
    """How many views behind the published one a member's card says it is (None: unknown,
    or it applied another leader's)."""
    if view is None or not isinstance(applied, dict) or applied.get("term") != view.term:
        return None
    seq = applied.get("seq")
    return view.seq - seq if isinstance(seq, int) else None


_F = TypeVar("_F", bound=Callable[..., Any])


def _where(command: _F) -> _F:
    """The options naming a store and a boundary."""
    for option in reversed((
            click.option("--cluster", "store_url", default=None, metavar="URL",
                         help="The store: etcd://HOST:PORT[,HOST:PORT...] or 'embedded' "
                              "(default: the configuration's cluster.store, else embedded)."),
            click.option("--config", "config_path", default=None,
                         type=click.Path(exists=True, dir_okay=False, path_type=Path),
                         help="Take the store, boundary and timeout from this configuration."),
            click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path),
                         default=None, help="Where the embedded store is (default: the "
                                            "per-user state directory)."),
            click.option("--boundary", default=None,
                         help="The boundary (default: the configuration's, else 'endosec')."),
            click.option("--json", "as_json", is_flag=True,
                         help="Print the report as one JSON object."))):
        command = option(command)
    return command


def _resolve(store_url: str | None, config_path: Path | None, state_dir: Path | None,
             boundary: str | None) -> tuple[str, Path, str, float]:
    """The store's URL, the state directory, the boundary and the store's timeout."""
    url, name, timeout = EMBEDDED, "endosec", 2.0
    if config_path is not None:
        try:
            c = load_config(config_path).cluster
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from exc
        url, name, timeout = c.store, c.boundary, c.timeout
    return store_url or url, state_dir or default_state_dir(), boundary or name, timeout


@cluster.command(name="status")
@_where
def status_command(store_url: str | None, config_path: Path | None, state_dir: Path | None,
                   boundary: str | None, as_json: bool) -> None:
    """Show the store's members and health, the boundary's gateways, its leader, and how far
    each gateway's ledger is anchored (exit status 1 when the store does not answer)."""
    try:
        report = asyncio.run(_status(*_resolve(store_url, config_path, state_dir, boundary)))
    except (StoreError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True))
    else:
        _print(report)
    if not report["store"]["ok"]:
        click.get_current_context().exit(1)


@cluster.command(name="chain")
@_where
@click.option("--ledger", "ledgers", multiple=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A gateway's ledger directory (repeatable): it must still hold what its "
                   "newest link says.")
def chain_command(store_url: str | None, config_path: Path | None, state_dir: Path | None,
                  boundary: str | None, as_json: bool, ledgers: tuple[Path, ...]) -> None:
    """Check the boundary's chain: every kept link signed by its gateway's ledger key and
    bound to the one before; and each --ledger against its newest link (exit status 1 on any
    problem)."""
    url, state, name, timeout = _resolve(store_url, config_path, state_dir, boundary)
    try:
        links = asyncio.run(_links(url, state, name, timeout))
    except (StoreError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    problems = check_chain(links)
    newest = {link.key: link for link in links}
    checked: dict[str, dict[str, Any]] = {}
    for directory in ledgers:
        try:
            key = load_public_key(directory / PUBLIC_KEY_FILE)
        except (OSError, ValueError) as exc:
            raise click.ClickException(f"{directory}: no readable {PUBLIC_KEY_FILE}: "
                                       f"{exc}") from exc
        link = newest.get(raw_public(key).hex())
        if link is None:
            problems.append(f"{directory}: no kept link names this ledger")
            continue
        held = verify_since(directory, link.anchor(), public_key=key)
        checked[str(directory)] = {"link": link.n, "seq": link.seq, "ok": held.ok,
                                   "summary": held.summary()}
        if not held.ok:
            problems.append(f"{directory} (link {link.n}): {held.summary()}")
    gateways = sorted({link.gateway for link in links})
    report = {"boundary": name, "links": len(links),
              "first": links[0].n if links else None, "last": links[-1].n if links else None,
              "gateways": gateways, "ledgers": checked, "problems": problems}
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True))
    else:
        span = f"links {report['first']}..{report['last']}" if links else "no links"
        click.echo(f"boundary {name}: {span} by {', '.join(gateways) or 'nobody'}")
        for where, found in checked.items():
            click.echo(f"  {where}: link {found['link']} (#{found['seq']}): "
                       f"{found['summary']}")
        for problem in problems:
            click.echo(f"  PROBLEM: {problem}")
        if not problems:
            click.echo("  intact")
    if problems:
        click.get_current_context().exit(1)


async def _links(url: str, state_dir: Path, boundary: str, timeout: float) -> list[Link]:
    store = open_store(url, state_dir, timeout=timeout)
    try:
        items = await store.prefix(Keys(boundary).links)
    finally:
        await store.close()
    try:
        return [Link.decode(item.value) for item in items]
    except ChainError as exc:
        raise click.ClickException(str(exc)) from exc
