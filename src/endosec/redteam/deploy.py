"""The deployment under drill: the user's configuration rewritten, and its gateway process.

`drill_config` wraps every executor in the implant wrapper (same profile, nothing else added),
moves both listeners to ephemeral loopback ports, sends events to a file and sets an admin
token known only to the drill. `GatewayProcess` runs ``endosec run`` on it as a subprocess, so a
gateway crash shows as process death, and talks to its admin listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from endosec.cluster.store import EMBEDDED
from endosec.config import Config
from endosec.redteam.client import Call, Client, get_json
from endosec.redteam.implant import INNER_PORT

__all__ = ["DRILL_BOUNDARY", "Deployment", "GatewayProcess", "drill_config", "implant_path",
           "wrap"]

DRILL_BOUNDARY = "redteam"
"""The boundary of every gateway the drill starts, each on the embedded store of its own state
directory: never a member of a real boundary."""

_BANNER = re.compile(r"serving http://(\S+):(\d+)\s+admin http://(\S+):(\d+)")


@dataclass(frozen=True, slots=True)
class Deployment:
    """Where the drill keeps the rewritten config, scratch dirs, image implants and logs."""

    root: Path
    token: str

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def events(self) -> Path:
        return self.root / "events.jsonl"

    @property
    def images(self) -> Path:
        return self.root / "image-implants"

    @property
    def logs(self) -> Path:
        return self.root / "implant-logs"

    def scratch(self, name: str) -> Path:
        return self.state / "executors" / name


def implant_path(dep: Deployment, name: str) -> Path:
    """Where an attacker with write access to ``name``'s scratch directory plants an implant."""
    return dep.scratch(name) / "implant.json"


def wrap(e: dict[str, Any], dep: Deployment) -> dict[str, Any]:
    """Executor ``e`` (as configuration data) behind the implant wrapper."""
    argv = [str(a).replace("{port}", INNER_PORT) for a in e["argv"]]
    health = (e.get("health") or {}).get("path", "/health")
    wrapped = [sys.executable, "-m", "endosec.redteam.implant", "--listen-port", "{port}",
               "--scratch", "{scratch}", "--name", "{name}", "--health-path", health,
               "--image-implant", str(dep.images / "{name}.json"),
               "--log-dir", str(dep.logs), "--", *argv]
    env = {k: str(v).replace("{port}", INNER_PORT) for k, v in (e.get("env") or {}).items()}
    return {**e, "argv": wrapped, "env": env}


def drill_config(config: Config, dep: Deployment, *, overrides: dict[str, Any] | None = None,
                 duplicate: bool = False) -> dict[str, Any]:
    """The configuration the drill runs, as plain data (paths already resolved).

    ``duplicate`` declares a second instance (``NAME-b``) of every executor, so rotation has
    spares to rotate in.
    """
    data = config.model_dump(mode="json", exclude_none=True)
    data.pop("state_dir", None)
    data["listen"] = "127.0.0.1:0"
    data["admin"] = {"listen": "127.0.0.1:0", "token": dep.token}
    # Cases judge the victim they planted: the set moves only where a class sets rotation.
    data.setdefault("controller", {})["rotate_every"] = None
    data.setdefault("gateway", {})["events"] = str(dep.events)
    # The drill's control state stays in its own state directory, out of any real boundary.
    data["cluster"] = {"store": EMBEDDED, "boundary": DRILL_BOUNDARY}
    executors = data["executors"]
    if duplicate:
        executors = executors + [{**e, "name": f"{e['name']}-b"} for e in executors]
    data["executors"] = [wrap(e, dep) for e in executors]
    for key, value in (overrides or {}).items():
        data[key] = {**data.get(key, {}), **value}
    return data


class GatewayProcess:
    """``endosec run`` on a drill configuration, with its admin API at hand."""

    def __init__(self, dep: Deployment, data: dict[str, Any]) -> None:
        self.dep = dep
        self.data = data
        self.proc: subprocess.Popen[str] | None = None
        self.serve: tuple[str, int] = ("127.0.0.1", 0)
        self.admin: tuple[str, int] = ("127.0.0.1", 0)
        self.names = [e["name"] for e in data["executors"]]

    async def start(self, timeout: float = 120.0) -> None:
        for d in (self.dep.root, self.dep.images, self.dep.logs):
            d.mkdir(parents=True, exist_ok=True)
        cfg = self.dep.root / "endosec.yaml"
        cfg.write_text(yaml.safe_dump(self.data, sort_keys=False))
        err = (self.dep.root / "gateway.log").open("a")  # a restart keeps the earlier log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "endosec.cli", "run", "--config", str(cfg),
             "--state-dir", str(self.dep.state)],
            stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True,
            env={k: v for k, v in os.environ.items() if k != "ENDOSEC_ADMIN_TOKEN"})
        err.close()
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), timeout)
        match = _BANNER.search(line)
        if match is None:
            self.stop()
            tail = (self.dep.root / "gateway.log").read_text()[-3000:]
            raise RuntimeError(f"the gateway did not start: {line!r}\n{tail}")
        self.serve = (match.group(1), int(match.group(2)))
        self.admin = (match.group(3), int(match.group(4)))

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def status(self) -> dict[str, Any]:
        data: dict[str, Any] = await get_json(*self.admin, "/status", token=self.dep.token)
        return data

    async def executors(self) -> dict[str, dict[str, Any]]:
        return {e["name"]: e for e in (await self.status())["executors"]}

    async def order(self, action: str, name: str) -> int:
        """An operator action through the admin API; returns the status code."""
        client = Client(*self.admin, timeout=10)
        try:
            reply = await client.request(Call(
                "POST", f"/executors/{name}/{action}",
                headers=(("Authorization", f"Bearer {self.dep.token}"),)))
        finally:
            client.close()
        return reply.status

    def events(self) -> list[dict[str, Any]]:
        if not self.dep.events.exists():
            return []
        out = []
        for line in self.dep.events.read_text().splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def kill(self) -> None:
        """SIGKILL the gateway alone, as a crash would; its executors' supervisors stop them
        when they see it gone."""
        proc = self.proc
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL the group; returns the exit status."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()
        return proc.returncode


def new_deployment(root: Path) -> Deployment:
    return Deployment(root, secrets.token_hex(16))
