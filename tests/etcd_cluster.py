"""A real etcd cluster on loopback for tests: members on free ports, each its own process."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest


def need_etcd() -> str:
    """The etcd binary; skip where it is missing, fail in CI (which installs it)."""
    found = shutil.which("etcd")
    if found is None:
        why = "etcd is missing (Debian package etcd-server)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{why}: CI installs it")
        pytest.skip(why)
    return found


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class EtcdCluster:
    """``members`` etcd processes forming one cluster; `url` is the endosec store URL."""

    def __init__(self, root: Path, members: int = 3, *, also: tuple[str, ...] = ()) -> None:
        """``also``: more host addresses every member listens on (a namespace's way in)."""
        binary = need_etcd()
        root.mkdir(parents=True, exist_ok=True)
        ports = _free_ports(2 * members)
        self.clients = ports[:members]
        peers = ports[members:]
        names = [f"m{i + 1}" for i in range(members)]
        initial = ",".join(f"{n}=http://127.0.0.1:{p}" for n, p in zip(names, peers, strict=True))
        self.root = root
        self.argvs: list[list[str]] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        for name, client, peer in zip(names, self.clients, peers, strict=True):
            self.argvs.append(
                [binary, "--name", name, "--data-dir", str(root / name),
                 "--listen-client-urls", ",".join(f"http://{h}:{client}"
                                                  for h in ("127.0.0.1", *also)),
                 "--advertise-client-urls", f"http://127.0.0.1:{client}",
                 "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                 "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                 "--initial-cluster", initial, "--initial-cluster-state", "new",
                 "--initial-cluster-token", root.name])
            self.procs.append(self._spawn(len(self.argvs) - 1))
        self.url = self.url_on("127.0.0.1")
        self._wait_healthy(root)

    def _wait_healthy(self, root: Path) -> None:
        deadline = time.monotonic() + 30
        endpoints = ",".join(f"127.0.0.1:{p}" for p in self.clients)
        while time.monotonic() < deadline:
            done = subprocess.run(["etcdctl", "--endpoints", endpoints, "endpoint", "health"],
                                  capture_output=True, text=True, check=False,
                                  env={**os.environ, "ETCDCTL_API": "3"})
            if done.returncode == 0:
                return
            time.sleep(0.2)
        logs = "\n".join((root / f"m{i + 1}.log").read_text()[-1500:]
                         for i in range(len(self.procs)))
        self.stop()
        raise RuntimeError(f"etcd cluster did not become healthy:\n{logs}")

    def _spawn(self, index: int) -> subprocess.Popen[bytes]:
        with (self.root / f"m{index + 1}.log").open("ab") as log:
            return subprocess.Popen(self.argvs[index], stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)

    def restart(self, index: int) -> None:
        """Start a killed member again, on its data directory."""
        self.procs[index] = self._spawn(index)

    def url_on(self, host: str) -> str:
        """The store URL with every member reached at ``host``."""
        return "etcd://" + ",".join(f"{host}:{p}" for p in self.clients)

    def kill(self, index: int) -> None:
        """kill -9 one member."""
        self.procs[index].send_signal(signal.SIGKILL)
        self.procs[index].wait(timeout=10)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
