"""Abuse of the input agent: smuggling forms, malformed and oversized requests, slow clients,
header floods, a fuzz of request bytes, and a check that no client gets another's response.

While these run, every executor carries a ``record`` implant that logs any request containing
the case's marker, so "the ambiguous request never reached an executor" is observed at the
executors themselves, not inferred from the gateway's answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from endosec.config import LimitsConfig
from endosec.protocols.http import HttpLimits, NeedData, ProtocolError, ResponseReader
from endosec.redteam.cases import Case
from endosec.redteam.client import Client, Reply, raw_exchange
from endosec.redteam.drill import CaseResult, Drill
from endosec.redteam.workload import Tally, send

__all__ = ["INPUT_AGENT", "RawCase", "raw_cases", "run_input_agent"]

INPUT_AGENT = "input-agent"
_REFUSALS = frozenset({400, 408, 413, 414, 417, 431, 501, 505})
_LIMITS = HttpLimits(max_response_bytes=1 << 24)


@dataclass(frozen=True, slots=True)
class RawCase:
    """Bytes a hostile client sends; ``{m}`` in them is replaced by the case's marker."""

    name: str
    payload: bytes
    description: str


def raw_cases(limits: LimitsConfig) -> list[RawCase]:
    """Requests the input agent must refuse before anything is forwarded."""
    inner = b"GET /{m}/smuggled HTTP/1.1\r\nHost: h\r\n\r\n"
    chunked = b"0\r\n\r\n" + inner
    big_head = b"X-Big: " + b"a" * (limits.max_header_bytes + 100) + b"\r\n"
    flood = b"".join(b"X-F%d: v\r\n" % i for i in range(limits.max_headers + 10))

    def post(headers: bytes, body: bytes) -> bytes:
        return b"POST /{m}/outer HTTP/1.1\r\nHost: h\r\n" + headers + b"\r\n" + body

    cl = b"Content-Length: %d\r\n" % len(chunked)
    te = b"Transfer-Encoding: chunked\r\n"
    return [
        RawCase("smuggle-cl-te", post(cl + te, chunked), "Content-Length then chunked"),
        RawCase("smuggle-te-cl", post(te + cl, chunked), "chunked then Content-Length"),
        RawCase("smuggle-double-cl", post(b"Content-Length: 5\r\n" + cl, chunked),
                "two different Content-Length values"),
        RawCase("smuggle-te-obfuscated", post(b"Transfer-Encoding: xchunked\r\n", chunked),
                "an unknown transfer coding"),
        RawCase("smuggle-te-list", post(b"Transfer-Encoding: gzip, chunked\r\n", chunked),
                "a list of transfer codings"),
        RawCase("smuggle-te-space", post(b"Transfer-Encoding : chunked\r\n", chunked),
                "whitespace before the colon"),
        RawCase("smuggle-obs-fold", post(b"Content-Length: 0\r\nX: a\r\n b\r\n", inner),
                "obsolete line folding"),
        RawCase("smuggle-bare-lf", b"GET /{m}/outer HTTP/1.1\nHost: h\n\n" + inner,
                "bare LF line endings"),
        RawCase("smuggle-chunk-overflow",
                post(te, b"ffffffffffffffffff1\r\n" + inner + b"\r\n0\r\n\r\n"),
                "a chunk size beyond 64 bits"),
        RawCase("malformed-nul", b"GET /{m}/outer HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n",
                "a NUL byte in a header"),
        RawCase("malformed-version", b"GET /{m}/outer HTTP/1.7\r\nHost: h\r\n\r\n",
                "an unknown HTTP version"),
        RawCase("malformed-no-host", b"GET /{m}/outer HTTP/1.1\r\n\r\n", "no Host header"),
        RawCase("malformed-request-line", b"GET  /{m}/outer  HTTP/1.1\r\nHost: h\r\n\r\n",
                "extra spaces in the request line"),
        RawCase("oversized-head", b"GET /{m}/outer HTTP/1.1\r\nHost: h\r\n" + big_head
                + b"\r\n", "a head larger than limits.max_header_bytes"),
        RawCase("header-flood", b"GET /{m}/outer HTTP/1.1\r\nHost: h\r\n" + flood + b"\r\n",
                "more headers than limits.max_headers"),
        RawCase("oversized-body",
                b"POST /{m}/outer HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n"
                % (limits.max_request_body + 1), "a body over limits.max_request_body"),
        RawCase("oversized-target",
                b"GET /{m}/" + b"a" * (64 << 10) + b" HTTP/1.1\r\nHost: h\r\n\r\n",
                "a 64 KiB request target"),
    ]


def _first_status(data: bytes) -> int | None:
    if not data.startswith(b"HTTP/1.1 ") or len(data) < 12 or not data[9:12].isdigit():
        return None
    return int(data[9:12])


async def _next_reply(reader: asyncio.StreamReader, buf: bytes,
                      timeout: float) -> tuple[Reply | None, bytes]:
    """Split one Content-Length-framed response off a pipelined stream."""
    while True:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            head = buf[:end].split(b"\r\n")
            headers = tuple((n.strip().lower(), v.strip()) for n, _, v in
                            (line.partition(b":") for line in head[1:]))
            length = int(next((v for n, v in headers if n == b"content-length"), b"0"))
            if len(buf) >= end + 4 + length:
                status = _first_status(buf) or 0
                body = buf[end + 4:end + 4 + length]
                return Reply(status, headers, body), buf[end + 4 + length:]
        try:
            data = await asyncio.wait_for(reader.read(1 << 16), timeout)
        except (TimeoutError, OSError):
            return None, buf
        if not data:
            return None, buf
        buf += data


def _parses(data: bytes) -> bool:
    """Whether ``data`` is nothing, or one or more well-formed responses."""
    while data:
        reader = ResponseReader(_LIMITS, b"GET")
        reader.receive_data(data)
        reader.receive_data(b"")
        try:
            if isinstance(reader.next_event(), NeedData):
                return False
        except ProtocolError:
            return False
        return True
    return True


class _Recorder:
    """The record implants on every executor for one marker, and what they logged."""

    def __init__(self, drill: Drill, names: list[str]) -> None:
        self.drill, self.names = drill, names

    def plant(self, marker: str) -> None:
        case = Case("record", INPUT_AGENT, {"kind": "record", "match": marker}, "")
        for name in self.names:
            self.drill.plant(case, name)

    def seen(self, marker: str, since: float) -> int:
        count = 0
        for name in self.names:
            log = self.drill.gw.dep.logs / f"{name}.jsonl"
            if log.exists():
                for line in log.read_text().splitlines():
                    entry = json.loads(line)
                    count += (entry["kind"] == "record" and entry["ts"] >= since
                              and marker in entry["target"])
        return count


async def _raw_case(drill: Drill, rec: _Recorder, case: RawCase) -> CaseResult:
    host, port = drill.gw.serve
    marker = f"rtm-{secrets.token_hex(6)}"
    result = CaseResult(case.name, INPUT_AGENT, case.description, [], True)
    rec.plant(marker)
    started = time.time()
    answer = await raw_exchange(host, port, case.payload.replace(b"{m}", marker.encode()),
                                timeout=5.0)
    await asyncio.sleep(0.2)  # let a forwarded request, if any, reach the logs
    status = _first_status(answer)
    forwarded = rec.seen(marker, started)
    drill.check_alive()
    result.fired = 1
    result.detected = status in _REFUSALS
    result.suppressed = forwarded == 0
    result.notes.append(f"gateway answered {status}; executors saw it {forwarded} times")
    return result


async def _slowloris(drill: Drill, connections: int, seconds: float) -> CaseResult:
    """Many clients trickling one header byte at a time while benign traffic must go on."""
    host, port = drill.gw.serve
    result = CaseResult("slowloris", INPUT_AGENT,
                        f"{connections} clients sending a request head one byte at a time",
                        [], True)
    writers = []
    for _ in range(connections):
        with contextlib.suppress(OSError):
            _, w = await asyncio.open_connection(host, port)
            w.write(b"GET / HTTP/1.1\r\nHost: h\r\nX-Slow: ")
            writers.append(w)
    probe = Tally()
    end = time.monotonic() + seconds
    client = Client(host, port, timeout=drill.client_timeout)
    try:
        while time.monotonic() < end:
            for w in writers:
                with contextlib.suppress(OSError):
                    w.write(b"a")
            await send(client, drill.workload.next(drill.rng), probe, b"")
            await asyncio.sleep(0.05)
    finally:
        client.close()
        for w in writers:
            w.close()
    drill.check_alive()
    result.attack = probe
    result.fired = 1
    result.suppressed = True
    result.detected = probe.total > 0 and probe.correct == probe.total
    result.notes.append(f"{len(writers)} slow connections held; {probe.correct}/{probe.total} "
                        "requests on a normal connection answered correctly meanwhile")
    return result


async def _isolation(drill: Drill, clients: int, depth: int) -> CaseResult:
    """Pipelined clients each asking for their own resource, next to smuggling attempts."""
    host, port = drill.gw.serve
    result = CaseResult("response-isolation", INPUT_AGENT,
                        f"{clients} pipelining clients x {depth} requests beside smuggling "
                        "attempts: every reply must answer its own request", [], True)
    probes = drill.workload.distinct(clients)

    async def one(i: int) -> None:
        probe = probes[i % len(probes)]
        reader, writer = await asyncio.open_connection(host, port)
        buf = b""
        try:
            writer.write(probe.call.encode(f"{host}:{port}") * depth)
            for _ in range(depth):
                reply, buf = await _next_reply(reader, buf, drill.client_timeout)
                if reply is None:
                    result.attack.failure("pipelined reply missing")
                    continue
                result.attack.judge(reply, probe.check(reply), b"")
        finally:
            writer.close()

    smuggle = raw_cases(LimitsConfig())[0].payload.replace(b"{m}", b"rtm-isolation")
    await asyncio.gather(*(one(i) for i in range(clients)),
                         *(raw_exchange(host, port, smuggle) for _ in range(clients)))
    drill.check_alive()
    result.fired = 1
    result.suppressed = result.attack.wrong == 0
    result.detected = result.attack.correct == result.attack.total
    result.notes.append(f"{result.attack.correct}/{result.attack.total} pipelined replies "
                        "matched their own request")
    return result


def _fuzz_payloads(count: int, seed: int) -> tuple[list[bytes], str]:
    """Request byte strings from hypothesis when installed, else from a seeded generator."""
    lines = [b"GET / HTTP/1.1\r\n", b"POST /notes HTTP/1.1\r\n", b"GET / HTTP/1.0\r\n",
             b"OPTIONS * HTTP/1.1\r\n", b"GET http://h/x HTTP/1.1\r\n", b"PRI * HTTP/2.0\r\n",
             b"GET /\x00 HTTP/1.1\r\n", b"GET / HTTP/1.1\n", b"\r\n"]
    fields = [b"Host: h\r\n"] * 4 + [
        b"Content-Length: 3\r\n", b"Content-Length: 0\r\n", b"Content-Length: -1\r\n",
        b"Transfer-Encoding: chunked\r\n", b"Transfer-Encoding: gzip\r\n",
        b"Connection: close\r\n", b"Expect: 100-continue\r\n", b" folded\r\n", b"X : y\r\n",
        b"X: a\rb\r\n", b"Upgrade: h2c\r\n", b"Content-Length: 1\r\nContent-Length: 2\r\n"]
    bodies = [b"", b"abc", b"3\r\nabc\r\n0\r\n\r\n", b"0\r\n\r\n", b"ffffffffffffffffff\r\n",
              b"3\nabc\n", b"\x00", b"\xff\xfe"]
    out: list[bytes] = []
    try:
        from hypothesis import HealthCheck, Phase, given, settings  # noqa: PLC0415
        from hypothesis import strategies as st  # noqa: PLC0415
    except ImportError:
        rng = random.Random(seed)
        for _ in range(count):
            parts = [rng.choice(lines), *rng.choices(fields, k=rng.randint(0, 5)), b"\r\n",
                     *rng.choices(bodies, k=rng.randint(0, 2))]
            out.append(b"".join(parts) + rng.randbytes(rng.randint(0, 8)))
        return out, "seeded random (hypothesis is not installed)"
    strategy = st.tuples(
        st.sampled_from(lines), st.lists(st.sampled_from(fields), max_size=5),
        st.lists(st.sampled_from(bodies), max_size=2), st.binary(max_size=8))

    @settings(max_examples=count, deadline=None, database=None, derandomize=True,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(parts: tuple[bytes, list[bytes], list[bytes], bytes]) -> None:
        line, hdrs, body, noise = parts
        out.append(line + b"".join(hdrs) + b"\r\n" + b"".join(body) + noise)

    collect()
    return out, "hypothesis"


def _send_closing(host: str, port: int, payload: bytes, timeout: float) -> bytes:
    """Send, half-close, read until the gateway closes (plain sockets, for a thread)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        try:
            while chunk := sock.recv(1 << 16):
                chunks.append(chunk)
        except OSError:
            pass
        return b"".join(chunks)


async def _fuzz(drill: Drill, count: int, seed: int) -> CaseResult:
    host, port = drill.gw.serve
    payloads, engine = _fuzz_payloads(count, seed)
    result = CaseResult("fuzz-request-bytes", INPUT_AGENT,
                        f"{len(payloads)} generated request byte strings ({engine})", [], True)
    bad: list[bytes] = []
    sem = asyncio.Semaphore(8)

    async def one(payload: bytes) -> None:
        async with sem:
            try:
                answer = await asyncio.to_thread(_send_closing, host, port, payload, 10.0)
            except OSError as exc:
                result.attack.failure(f"connect failed: {exc}")
                return
        if _parses(answer):
            result.attack.correct += 1
            result.attack.total += 1
        else:
            bad.append(payload)
            result.attack.wrong += 1
            result.attack.total += 1

    await asyncio.gather(*(one(p) for p in payloads))
    drill.check_alive()
    result.fired = len(payloads)
    result.suppressed = not bad
    result.detected = drill.gw.alive
    result.notes.append(f"{result.attack.correct}/{len(payloads)} answered with well-formed "
                        "HTTP or a clean close" + (f"; first bad input {bad[0]!r}" if bad else ""))
    return result


async def run_input_agent(drill: Drill, limits: LimitsConfig, *, quick: bool,
                          seed: int, log: Callable[[str], None]) -> list[CaseResult]:
    """Every input-agent case, with benign traffic running in the background."""
    await drill.settle()
    names = [e["name"] for e in (await drill.gw.status())["executors"]]
    rec = _Recorder(drill, names)
    results: list[CaseResult] = []
    stop = asyncio.Event()
    bg = drill.background(stop)
    try:
        for case in raw_cases(limits):
            results.append(await _raw_case(drill, rec, case))
            log(f"  {case.name}: {results[-1].notes[-1]}")
        drill.clear(names)
        results.append(await _slowloris(drill, 50 if quick else 200, 2.0 if quick else 4.0))
        results.append(await _isolation(drill, 8, 10 if quick else 25))
        results.append(await _fuzz(drill, 100 if quick else 400, seed))
        for r in results[-3:]:
            log(f"  {r.name}: {r.notes[-1]}")
    finally:
        stop.set()
        tally = await bg
        drill.clear(names)
    if results:  # the background traffic ran across the whole class
        results[0].benign = tally
    return results
