"""What `endosec check` and `endosec run` verify before serving: what a schema cannot see.

The schema (`endosec.config`) says whether a file is well formed; this says whether it can run
here: every executor's command resolvable and executable, ``{port}`` where the gateway must
choose the port, listeners and fixed ports that do not clash, the files it names readable, the
canonicalisation rules accepted by the data plane itself. `problems` returns errors (retrying
cannot fix them: `run` stops at once) and warnings (weak but workable configurations).
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from endosec import _native
from endosec.config import Config, ExecutorConfig, parse_address
from endosec.core.canonicalise import compile_rules
from endosec.runtime.drivers import segmented
from endosec.runtime.remote import credential_problems
from endosec.runtime.segment import segment_possible

__all__ = ["Problems", "problems"]

_WILDCARDS = {"0.0.0.0", "::", ""}


@dataclass(frozen=True, slots=True)
class Problems:
    errors: tuple[str, ...]
    warnings: tuple[str, ...]


def problems(config: Config) -> Problems:
    """Every error and warning of a schema-valid configuration, in the order of the file."""
    errors = [*_rules(config), *_listeners(config)]
    for i, e in enumerate(config.executors):
        errors.extend(f"executors[{i}] ({e.name}).{what}" for what in _executor(e))
    return Problems(tuple(errors), tuple(_warnings(config)))


def _rules(config: Config) -> list[str]:
    try:
        compile_rules(config.canonicalise)
        if config.protocol == "http":  # the data plane compiles them itself, on its engine
            _native.compile_rules(json.dumps(config.canonicalise))
    except ValueError as exc:
        return [f"canonicalise.{exc}"]
    return []


def _clash(a: tuple[str, int], b: tuple[str, int]) -> bool:
    """Two listeners that cannot both bind (port 0 is chosen by the system: never a clash)."""
    return a[1] == b[1] != 0 and (a[0] == b[0] or a[0] in _WILDCARDS or b[0] in _WILDCARDS)


def _listeners(config: Config) -> list[str]:
    named = [("listen", parse_address(config.listen)),
             ("admin.listen", parse_address(config.admin.listen))]
    named += [(f"executors[{i}].port", ("127.0.0.1", e.port))
              for i, e in enumerate(config.executors) if e.port is not None]
    out = []
    for j, (name, address) in enumerate(named):
        for other, earlier in named[:j]:
            if _clash(address, earlier):
                out.append(f"{name}: port {address[1]} is already taken by {other}")
    return out


def _executor(e: ExecutorConfig) -> list[str]:
    if e.agent is not None:
        readable = [] if os.access(e.agent.ca, os.R_OK) else [
            f"agent.ca: cannot read {e.agent.ca}"]
        return readable + credential_problems(e.agent)
    if e.argv is None:
        return []
    out = []
    program = e.argv[0]
    cwd = e.cwd or Path.cwd()
    if "{" not in program:  # a placeholder is only known at start
        if os.sep in program:
            path = cwd / program
            if not path.is_file() or not os.access(path, os.X_OK):
                out.append(f"argv[0]: {path} is not an executable file")
        else:
            search = e.env.get("PATH", os.environ.get("PATH", os.defpath))
            if shutil.which(program, path=search) is None:
                out.append(f"argv[0]: {program!r} is not found on PATH")
    placeholders = " ".join([*e.argv, *e.env.values()])
    if e.port is None and "{port}" not in placeholders:
        out.append("argv: no {port} and no fixed port: the executor cannot be told where "
                   "to listen")
    if e.template is not None and not e.template.is_dir():
        out.append(f"template: {e.template} is not a readable directory")
    if e.cwd is not None and not e.cwd.is_dir():
        out.append(f"cwd: {e.cwd} is not a directory")
    if e.sandbox and shutil.which("bwrap") is None:
        out.append("sandbox: bubblewrap (bwrap) is not installed")
    if e.network == "isolated" and e.argv is not None:
        missing = segment_possible()
        if missing is not None:
            out.append(f"network: isolated needs root, ip and nft: {missing}")
        if not e.host.startswith("127."):
            out.append(f"network: isolated needs an IPv4 loopback host, not {e.host}")
    return out


def _warnings(config: Config) -> list[str]:
    out = []
    stateful = [e.name for e in config.executors if not e.stateless and e.state is None]
    if stateful and config.protocol == "http":
        out.append(f"journal: {', '.join(stateful)} cannot export state (executors[].state), "
                   "so no checkpoint is taken and the whole write journal is kept; recovery "
                   "replays every write")
    active = config.controller.active
    majority = active // 2 + 1
    shared = Counter(c for e in config.executors for c in set(e.profile))
    common = [f"{c} ({n} of {len(config.executors)})" for c, n in sorted(shared.items())
              if n >= majority and n > 1]
    if common:
        out.append(f"profile: common mode: an active set of {active} can hold a majority built "
                   f"on one of these, and one flaw in it would defeat the vote: "
                   f"{', '.join(common)}")
    if config.scheduler.seed is not None:
        out.append("scheduler.seed: the schedule (who votes, when rotations come) can be "
                   "predicted by anyone who knows the seed: for tests and simulation only")
    if config.controller.rotate_every is None:
        out.append("controller.rotate_every: null: the active set moves only on dissent, so a "
                   "foothold that keeps its output right stays on duty")
    if config.gateway.verdict_names and config.gateway.verdict_headers:
        out.append("gateway.verdict_names: every client learns which executors agreed and "
                   "which dissented: for debugging only")
    shared_net = [e.name for e in config.executors if e.argv is not None
                  and e.network != "isolated" and not segmented(e)]
    if shared_net:
        why = segment_possible() or "network: host, or a host that is not IPv4 loopback"
        out.append(f"network: {', '.join(shared_net)} share the host's network ({why}): they "
                   "can reach the admin listener, each other and the outside")
    admin = config.admin
    if admin.public_read:
        out.append("admin.public_read: anyone who reaches the admin listener reads the active "
                   "set, the events and the metrics")
    elif admin.resolved_read_token() is None and admin.resolved_token() is None:
        out.append(f"admin: no token ({admin.token_env} / {admin.read_token_env} unset): every "
                   "read of the admin listener but /healthz and /readyz is refused")
    return out
