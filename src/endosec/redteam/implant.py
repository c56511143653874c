"""The implant wrapper: run any HTTP executor behind a proxy that can be made to misbehave.

    python -m endosec.redteam.implant --listen-port {port} --scratch {scratch} \\
        -- <the executor's own argv, with {inner_port} where its port goes>

The wrapper starts the real executor as its child (same process group, so the runtime's stop
signals reach both) on a free loopback port, waits until it listens, then proxies HTTP/1.1 to it
on ``--listen-port``. Before each request it looks at ``{scratch}/implant.json`` (re-read when it
changes) and at the optional ``--image-implant`` file; when an implant is present and its
conditions match (see `endosec.redteam.spec`), the exchange is altered or faulted.

An attacker with write access to the executor's scratch directory plants an implant by writing
implant.json; cleansing wipes the scratch directory, so a cleanse removes it. An image implant
models a flaw in the pristine image itself: cleansing does not remove it.

Every time an implant acts, one JSON line goes to ``NAME.jsonl`` in ``--log-dir`` (if given; a
directory, which attestation does not measure, not the file, which changes), so a drill can tell
whether an attack fired. ``{inner_port}`` is also replaced in the child's environment.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from endosec.protocols.http import (
    ConnectionClosed,
    HttpLimits,
    NeedData,
    ProtocolError,
    Request,
    RequestReader,
    Response,
    ResponseReader,
    encode_response,
    upstream_request_bytes,
)
from endosec.redteam.client import ClientError, get_json
from endosec.redteam.spec import ALTERING, COVERT, Implant, alter_response, parse_implant
from endosec.tasks import spawn

__all__ = ["INNER_PORT", "ImplantFile", "main"]

INNER_PORT = "{inner_port}"
IMPLANT_NAME = "implant.json"
_LIMITS = HttpLimits(max_header_bytes=1 << 20, max_headers=10_000, max_body_bytes=1 << 30,
                     max_target_bytes=1 << 20, max_response_bytes=1 << 31)
_CHUNK = 1 << 16
_GARBAGE = 64
_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)
_HOARD_CHUNKS = 16


class ImplantFile:
    """One implant file, re-read whenever its identity (inode, size, mtime) changes.

    ``count`` is the number of counted requests since the current implant was planted.
    """

    __slots__ = ("count", "implant", "path", "stamp")

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.stamp: tuple[int, int, int] | None = None
        self.implant: Implant | None = None
        self.count = 0

    def current(self) -> Implant | None:
        if self.path is None:
            return None
        try:
            st = self.path.stat()
        except OSError:
            self.stamp, self.implant = None, None
            return None
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp != self.stamp:
            self.stamp, self.count = stamp, 0
            try:
                self.implant = parse_implant(json.loads(self.path.read_bytes()),
                                             source=str(self.path))
            except (OSError, ValueError) as exc:
                print(f"endosec implant: ignoring {self.path}: {exc}", file=sys.stderr)
                self.implant = None
        return self.implant


@dataclass(slots=True)
class Wrapper:
    """The proxy's shared state: where the executor is, which implants apply, where to log."""

    name: str
    inner: tuple[str, int]
    health_path: bytes
    files: tuple[ImplantFile, ...]
    log: Path | None
    child: asyncio.subprocess.Process | None = None
    shell: asyncio.subprocess.Process | None = None  # what spawn-shell started
    burner: asyncio.subprocess.Process | None = None  # what cpu-burn started
    hoard: list[bytes] = field(default_factory=list)  # what leak-memory keeps
    known: tuple[float, list[str] | None] | None = None  # when an informed implant last looked
    listen: tuple[str, int] | None = None  # where the wrapper listens
    server: asyncio.Server | None = None  # its listener, freed by hand-over-port
    squatter: asyncio.subprocess.Process | None = None  # what hand-over-port started

    async def choose(self, request: Request) -> tuple[Implant | None, dict[str, Any]]:
        """`pick`, then an informed implant's look at the active set (read at most once a
        second): the implant acting, and what to log of the look."""
        implant = self.pick(request)
        if implant is None or implant.informed is None:
            return implant, {}
        now = time.monotonic()
        if self.known is None or now - self.known[0] >= 1.0:
            self.known = (now, await _read_active(implant.informed[0]))
        active = self.known[1]
        return (implant if implant.strikes(active) else None), {"learned": active is not None}

    def pick(self, request: Request) -> Implant | None:
        """The implant acting on ``request``, if any (counting the request for each file)."""
        health = request.target.partition(b"?")[0] == self.health_path
        chosen = None
        for f in self.files:
            implant = f.current()
            if implant is None:
                continue
            if health:
                if implant.kind == "never-healthy":
                    chosen = chosen or implant
                continue
            f.count += 1
            if chosen is None and implant.kind != "never-healthy" \
                    and implant.matches(request, f.count):
                chosen = implant
        return chosen

    def record(self, implant: Implant, request: Request, **extra: Any) -> None:
        if self.log is None or implant.kind == "dormant":
            return
        entry = {"ts": time.time(), "executor": self.name, "kind": implant.kind,
                 "method": request.method.decode("latin-1"),
                 "target": request.target.decode("latin-1"), **extra}
        with self.log.open("a", encoding="utf-8") as out:
            out.write(json.dumps(entry) + "\n")


class _Inner:
    """One keep-alive connection to the real executor, opened on demand."""

    __slots__ = ("address", "reader", "writer")

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def exchange(self, request: Request) -> tuple[Response | None, bytes]:
        """Send ``request``; return the response (None if unreadable) and the raw bytes read.

        A kept-alive connection the executor closed while idle fails before any byte comes
        back; the request is then sent once more on a new connection, as the gateway would.
        """
        payload = upstream_request_bytes(request)
        if self.writer is not None and not self.writer.is_closing():
            response, raw = await self._send(payload, request.method)
            if response is not None or raw:
                return response, raw
        self.reader, self.writer = await asyncio.open_connection(*self.address)
        return await self._send(payload, request.method)

    async def _send(self, payload: bytes, method: bytes) -> tuple[Response | None, bytes]:
        assert self.reader is not None and self.writer is not None
        parser = ResponseReader(_LIMITS, method)
        raw: list[bytes] = []
        try:
            self.writer.write(payload)
            while True:
                self._quick_ack()
                data = await self.reader.read(_CHUNK)
                raw.append(data)
                parser.receive_data(data)
                event = parser.next_event()
                if not isinstance(event, NeedData):
                    if not event.keep_alive:
                        self.close()
                    return event, b"".join(raw)
                if not data:
                    break
        except (ProtocolError, OSError):
            pass
        self.close()
        return None, b"".join(raw)

    def _quick_ack(self) -> None:
        """Acknowledge at once (Linux): an executor that writes head and body separately
        without TCP_NODELAY would otherwise stall on every response for the delayed ACK."""
        sock = self.writer.get_extra_info("socket") if self.writer is not None else None
        if sock is not None and _QUICKACK is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def _abort_with_reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _covert(w: Wrapper, implant: Implant) -> None:
    """Do something else while the reply stays right: call out (in the background, so the
    reply does not wait), leave a shell running, burn a core (in a process of the wrapper's
    own program, so no new program shows), keep 32 MiB more per request (to 512 MiB), read
    a file that is not the executor's, work a few hundred microseconds (the whole wrapper
    waits, as a process busy with something else would), or free the listening port for a
    squatter outside the process group that relays to the executor (`endosec.redteam.squat`;
    the wrapper keeps running, so the executor looks alive)."""
    match implant.kind:
        case "connect-out":
            spawn(_connect_out(implant.params["host"], implant.params["port"]),
                  name="endosec-implant-connect-out")
        case "spawn-shell" if w.shell is None or w.shell.returncode is not None:
            w.shell = await asyncio.create_subprocess_exec(
                "sh", "-c", "sleep 300", stdin=asyncio.subprocess.DEVNULL)
        case "cpu-burn" if w.burner is None or w.burner.returncode is not None:
            w.burner = await asyncio.create_subprocess_exec(
                sys.executable, "-c", "while True: pass", stdin=asyncio.subprocess.DEVNULL)
        case "leak-memory" if len(w.hoard) < _HOARD_CHUNKS:
            w.hoard.append(b"x" * (32 << 20))  # touched, so resident
        case "read-outside-scratch":
            with contextlib.suppress(OSError):
                Path(implant.params["path"]).read_bytes()
        case "micro-delay":
            time.sleep(implant.params["us"] / 1e6)
        case "hand-over-port" if w.squatter is None and w.server is not None \
                and w.log is not None:
            assert w.listen is not None
            pidfile = w.log.with_name(f"{w.name}.squat.pid")
            w.squatter = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "endosec.redteam.squat",
                "--listen", "{}:{}".format(*w.listen), "--to", "{}:{}".format(*w.inner),
                "--seconds", "120", "--pidfile", str(pidfile),
                stdin=asyncio.subprocess.DEVNULL, start_new_session=True)
            for _ in range(100):  # both listen a moment (SO_REUSEPORT): no client is refused
                if pidfile.exists():
                    break
                await asyncio.sleep(0.05)
            w.server.close()  # connections open now go on; new ones reach the squatter


async def _connect_out(host: str, port: int) -> None:
    """A covert connection out, as an implant calling home would open one."""
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(2):
            _, writer = await asyncio.open_connection(host, port)
            writer.close()


async def _serve_one(w: Wrapper, inner: _Inner, request: Request,
                     reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Answer one request; False when the connection must end here."""
    implant, extra = await w.choose(request)
    kind = implant.kind if implant is not None else None
    if implant is not None and kind not in ALTERING and kind != "record":
        w.record(implant, request, **extra)
    match kind:
        case "never-healthy":
            writer.write(encode_response(
                Response(503, b"", ((b"content-type", b"application/json"),),
                         b'{"status": "unhealthy"}'), keep_alive=False, head_only=False))
            return False
        case "exfiltrate-secret":
            assert implant is not None
            body = implant.params["secret"].encode()
            writer.write(encode_response(
                Response(200, b"", ((b"content-type", b"text/plain"),), body),
                keep_alive=request.keep_alive, head_only=request.method == b"HEAD"))
            return request.keep_alive
        case "crash":
            if w.child is not None and w.child.returncode is None:
                w.child.kill()
            os._exit(3)
        case "hang":
            return await _hang(reader)
        case "garbage":
            writer.write(b"\x00" + os.urandom(_GARBAGE - 1))
            return False
        case "reset":
            _abort_with_reset(writer)
            return False
        case "delay":
            assert implant is not None
            await asyncio.sleep(implant.params["ms"] / 1000)
        case covert if covert in COVERT:
            assert implant is not None
            await _covert(w, implant)
        case "record":
            assert implant is not None
            raw = upstream_request_bytes(request)
            if implant.params["match"].encode("latin-1") in raw:
                w.record(implant, request, size=len(raw))
    try:
        response, raw = await inner.exchange(request)
    except OSError:
        return False
    if response is None:
        writer.write(raw)  # the executor's own broken answer, passed on as it was
        return False
    keep = request.keep_alive and response.keep_alive
    head_only = request.method == b"HEAD"
    if implant is not None and kind in ALTERING and response.status >= 200:
        altered = alter_response(implant, response)
        w.record(implant, request, changed=altered != response, **extra)
        writer.write(encode_response(altered, keep_alive=keep, head_only=head_only))
    elif kind == "truncate" and response.status >= 200:
        full = encode_response(response, keep_alive=keep, head_only=head_only)
        cut = len(full) - max(1, len(response.body) // 2) if response.body else len(full) // 2
        writer.write(full[:cut])
        return False
    else:
        writer.write(raw)
    return keep


async def _read_active(admin: tuple[str, int]) -> list[str] | None:
    """``active`` from ``GET /status`` on the admin listener, without a token (None: refused,
    unreachable or unreadable)."""
    try:
        active = (await get_json(*admin, "/status", timeout=1.0))["active"]
    except (ClientError, ValueError, KeyError, TypeError):
        return None
    return [a for a in active if isinstance(a, str)] if isinstance(active, list) else None


async def _hang(reader: asyncio.StreamReader) -> bool:
    """Never answer; hold the connection until the peer gives up."""
    while await reader.read(_CHUNK):
        pass
    return False


async def _client(w: Wrapper, reader: asyncio.StreamReader,
                  writer: asyncio.StreamWriter) -> None:
    parser = RequestReader(_LIMITS)
    inner = _Inner(w.inner)
    try:
        while True:
            event = parser.next_event()
            if isinstance(event, NeedData):
                data = await reader.read(_CHUNK)
                parser.receive_data(data)
                continue
            if isinstance(event, ConnectionClosed) or not await _serve_one(
                    w, inner, event, reader, writer):
                break
            await writer.drain()
    except (ProtocolError, OSError):
        pass
    finally:
        inner.close()
        if not writer.transport.is_closing():
            with contextlib.suppress(OSError):
                await writer.drain()
            writer.close()


async def _wait_listening(address: tuple[str, int], child: asyncio.subprocess.Process) -> None:
    while child.returncode is None:
        try:
            _, writer = await asyncio.open_connection(*address)
        except OSError:
            await asyncio.sleep(0.02)
            continue
        writer.close()
        return


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


async def _main(args: argparse.Namespace) -> int:
    host = args.host
    inner_port = _free_port(host)
    argv = [a.replace(INNER_PORT, str(inner_port)) for a in args.argv]
    env = {k: v.replace(INNER_PORT, str(inner_port)) for k, v in os.environ.items()}
    scratch = args.scratch.resolve()
    files = (ImplantFile(scratch / IMPLANT_NAME), ImplantFile(args.image_implant))
    child = await asyncio.create_subprocess_exec(*argv, env=env)
    name = args.name or scratch.name
    wrapper = Wrapper(name=name, inner=(host, inner_port), health_path=args.health_path.encode(),
                      files=files, child=child,
                      log=None if args.log_dir is None else args.log_dir / f"{name}.jsonl")
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await _wait_listening(wrapper.inner, child)
    if child.returncode is not None:
        return child.returncode

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.CancelledError):  # cancelled at shutdown
            await _client(wrapper, reader, writer)

    server = await asyncio.start_server(handle, host, args.listen_port, reuse_address=True,
                                        reuse_port=True)
    wrapper.listen, wrapper.server = (host, args.listen_port), server
    print(f"endosec implant wrapper for {wrapper.name} listening on http://{host}:"
          f"{args.listen_port} (executor on port {inner_port})", flush=True)
    exited = asyncio.ensure_future(child.wait())
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait([exited, stopped], return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    server.close()
    if child.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            child.terminate()
        await child.wait()
        return 0
    return child.returncode


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m endosec.redteam.implant",
        description="Run an HTTP executor behind a proxy that applies planted implants.")
    parser.add_argument("--listen-port", type=int, required=True,
                        help="port the gateway connects to (use {port})")
    parser.add_argument("--scratch", type=Path, required=True,
                        help="the executor's scratch directory (use {scratch})")
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to use")
    parser.add_argument("--name", default=None, help="executor name for the log")
    parser.add_argument("--health-path", default="/health",
                        help="never counted; only never-healthy acts on it")
    parser.add_argument("--image-implant", type=Path, default=None,
                        help="an implant file outside the scratch dir (survives cleansing)")
    parser.add_argument("--log-dir", type=Path, default=None,
                        help="append one JSON line per implant action to NAME.jsonl here")
    parser.add_argument("argv", nargs=argparse.REMAINDER,
                        help="-- then the executor's command line, {inner_port} for its port")
    args = parser.parse_args(argv)
    if args.argv[:1] == ["--"]:
        args.argv = args.argv[1:]
    if not args.argv:
        parser.error("give the executor's command line after --")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        import uvloop  # noqa: PLC0415 - optional speed-up

        code = uvloop.run(_main(args))
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        code = asyncio.run(_main(args))
    sys.exit(code)


if __name__ == "__main__":
    main()
