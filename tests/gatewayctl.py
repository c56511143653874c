"""Start a real gateway process on loopback for integration tests, and talk to it."""

from __future__ import annotations

import copy
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "src" / "endosec" / "demo" / "endosec.yaml"
BANNER = re.compile(r"serving (\w+://\S+)\s+admin (http://\S+)\s+executors: (.+)$")


TOKEN = "test-token"  # the admin token every gateway started here gets


def demo_config(**overrides: Any) -> dict[str, Any]:
    """The shipped demo config with loopback-ephemeral ports and the given top-level overrides."""
    data = yaml.safe_load(DEMO.read_text())
    data["listen"] = "127.0.0.1:0"
    data["admin"]["listen"] = "127.0.0.1:0"
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return data


def with_env(data: dict[str, Any], executor: str, **env: str) -> dict[str, Any]:
    data = copy.deepcopy(data)
    for e in data["executors"]:
        if e["name"] == executor:
            e.setdefault("env", {}).update(env)
    return data


class Gateway:
    """A running ``endosec run`` process with helpers for HTTP on both listeners."""

    def __init__(self, tmp: Path, data: dict[str, Any], *, args: tuple[str, ...] = (),
                 env: dict[str, str] | None = None, base: Path = DEMO.parent,
                 prefix: tuple[str, ...] = (), rotating: bool = False) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        cfg = tmp / "endosec.yaml"
        # Executor paths in the shipped examples are relative to the example's directory.
        data = copy.deepcopy(data)
        if not rotating:  # the shipped configs rotate at random times; a test pins its set
            data.setdefault("controller", {})["rotate_every"] = None
        for e in data["executors"]:
            if "argv" in e:
                e.setdefault("cwd", str(base))
        cfg.write_text(yaml.safe_dump(data))
        self.events = tmp / "events.jsonl"
        data.setdefault("gateway", {})["events"] = str(self.events)
        cfg.write_text(yaml.safe_dump(data))
        self.marker = f"ENDOSEC_TEST_RUN={uuid.uuid4().hex}"
        # stderr to a file: a failed wait can show it while the gateway still runs
        self.stderr = tmp / "gateway.stderr"
        with self.stderr.open("w") as err_file:  # the child keeps its own copy
            self.proc = subprocess.Popen(
                [*prefix, sys.executable, "-m", "endosec.cli", "run", "--config", str(cfg),
                 "--state-dir", str(tmp / "state"), *args],
                stdout=subprocess.PIPE, stderr=err_file, text=True,
                env={**os.environ, "ENDOSEC_ADMIN_TOKEN": TOKEN,
                     "ENDOSEC_TEST_RUN": self.marker.split("=", 1)[1], **(env or {})},
                start_new_session=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        match = BANNER.search(line)
        if not match:
            self.proc.kill()
            self.proc.communicate(timeout=10)
            err = self.stderr.read_text()
            raise RuntimeError(f"gateway did not start: {line!r}\n{err[-3000:]}")
        self.url, self.admin_url = match.group(1), match.group(2)
        self.state = tmp / "state"
        self.names = [n.strip() for n in match.group(3).split(",")]

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.url.split("://", 1)[1].rsplit(":", 1)
        return host, int(port)

    def request(self, method: str, path: str, body: Any = None,
                headers: dict[str, str] | None = None, *, admin: bool = False,
                timeout: float = 15.0, source: str | None = None,
                ) -> tuple[int, dict[str, str], bytes]:
        """One request on a fresh connection (from the loopback address ``source``)."""
        url = self.admin_url if admin else self.url
        host, port = url.removeprefix("http://").rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=timeout,
                                          source_address=None if source is None else (source, 0))
        payload = json.dumps(body).encode() if body is not None else None
        hdrs = {"content-type": "application/json"} if payload is not None else {}
        if admin and not any(h.lower() == "authorization" for h in headers or {}):
            hdrs["authorization"] = f"Bearer {TOKEN}"  # the admin token reads too
        hdrs.update({k: v for k, v in (headers or {}).items() if v})  # "": send none
        try:  # closed however it ends: a gateway killed mid-request leaves no socket open
            conn.request(method, path, body=payload, headers=hdrs)
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data

    def status(self) -> dict[str, Any]:
        code, _, body = self.request("GET", "/status", admin=True)
        assert code == 200
        return json.loads(body)

    def executor(self, name: str) -> dict[str, Any]:
        return next(e for e in self.status()["executors"] if e["name"] == name)

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], what: str = "condition",
                 timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        status = self.status()
        while not predicate(status):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}: {json.dumps(status)[:2000]}"
                                     f"\ngateway stderr (tail):\n{self.stderr.read_text()[-3000:]}")
            time.sleep(0.1)
            status = self.status()
        return status

    def raw(self, data: bytes, *, timeout: float = 5.0) -> bytes:
        """Send raw bytes on a fresh connection and read until the server closes or times out."""
        with socket.create_connection(self.address, timeout=timeout) as sock:
            sock.sendall(data)
            chunks = []
            try:
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
            except (TimeoutError, ConnectionResetError):
                pass
            return b"".join(chunks)

    def event_kinds(self) -> list[dict[str, Any]]:
        if not self.events.exists():
            return []
        return [json.loads(line) for line in self.events.read_text().splitlines() if line]

    def stop(self) -> str:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self.proc.communicate()
        err = self.stderr.read_text()
        deadline = time.monotonic() + 5
        while (left := self.leftovers()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not left, f"processes outlived the gateway: {left}"
        return err

    def leftovers(self) -> list[int]:
        """Live processes started under this gateway (they inherit its marker variable)."""
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                environ = (proc / "environ").read_bytes()
            except OSError:
                continue
            if self.marker.encode() in environ.split(b"\0") and pid_alive(int(proc.name)):
                found.append(int(proc.name))
        return found


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def server_pid(gw: Gateway, name: str) -> int:
    """The server process itself: the one child of the supervisor the gateway reports."""
    supervisor = gw.executor(name)["pid"]
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])
