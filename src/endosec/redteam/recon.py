"""Reconnaissance: what a client, or a foothold on the host, learns of the boundary.

* ``fingerprint`` - benign requests, their replies searched for what tells the executors
  apart: a header naming a product (`Server`, `X-Powered-By`, `Via`) or an executor, verdict
  headers naming executors, one request answered with headers in different orders (each
  server orders its own), with different media types, or with one JSON value spelled in
  different ways (each stack formats JSON its own way). Suppressed: none found.
* ``admin-read`` - the admin listener's read endpoints asked without a token, as any process
  on the host (an executor included) could. Suppressed: every one refused; detected: each
  refusal logged as ``admin-denied``.
* ``scan`` - one client asks for paths that do not exist, ``threat.scan_errors`` and more
  within a second or two, as a scanner does. Suppressed: every one answered (404), nothing
  failed; detected: a ``scan`` event names the client and the threat level rose.
"""

from __future__ import annotations

import asyncio
import json
import time

from endosec.redteam.client import Call, Client, ClientError
from endosec.redteam.drill import CaseResult, Drill

__all__ = ["RECONNAISSANCE", "run_reconnaissance"]

RECONNAISSANCE = "reconnaissance"
PRODUCT_HEADERS = (b"server", b"x-powered-by", b"via", b"x-endosec-agreed",
                   b"x-endosec-dissented")
READS = ("/status", "/events", "/metrics", "/series", "/quantify")


async def _fingerprint(drill: Drill, requests: int) -> CaseResult:
    result = CaseResult("fingerprint", RECONNAISSANCE, "replies searched for what tells the "
                        "executors apart", [], True)
    clock = time.monotonic()
    host, port = drill.gw.serve
    client = Client(host, port, timeout=drill.client_timeout, source=drill.source)
    names = {n.encode() for n in drill.gw.names}
    leaks: set[str] = set()
    orders: dict[tuple[str, str], set[tuple[bytes, ...]]] = {}
    types: dict[tuple[str, str], set[bytes | None]] = {}
    spellings: dict[tuple[str, str, str], set[bytes]] = {}  # per request and JSON value
    try:
        for _ in range(requests):
            probe = drill.workload.next(drill.rng)
            try:
                reply = await client.request(probe.call)
            except ClientError as exc:
                result.attack.failure(str(exc))
                continue
            result.attack.judge(reply, probe.check(reply), b"")
            key = (probe.call.method, probe.call.target)
            orders.setdefault(key, set()).add(tuple(n for n, _ in reply.headers))
            types.setdefault(key, set()).add(reply.header(b"content-type"))
            value = _json_value(reply.body)
            if value is not None:
                spellings.setdefault((*key, value), set()).add(reply.body)
            leaks |= {n.decode() for n, v in reply.headers
                      if n in PRODUCT_HEADERS or any(x in v for x in names)}
    finally:
        client.close()
    varied = sorted(f"{m} {t}" for (m, t), seen in orders.items() if len(seen) > 1)
    typed = sorted(f"{m} {t}" for (m, t), seen in types.items() if len(seen) > 1)
    spelled = len({(m, t) for (m, t, _), seen in spellings.items() if len(seen) > 1})
    repeated = sum(1 for seen in orders.values() if seen)
    result.fired = requests
    result.suppressed = not leaks and not varied and not typed and not spelled
    result.detected = result.suppressed  # nothing to detect: what is not shown is not learnt
    result.notes.append(f"{len(leaks)} identifying headers ({', '.join(sorted(leaks)) or '-'})"
                        f"; {len(varied)} of {repeated} requests answered in more than one "
                        f"header order{' (' + ', '.join(varied[:3]) + ')' if varied else ''}, "
                        f"{len(typed)} with more than one media type, {spelled} with one JSON "
                        "value spelled in more than one way")
    result.seconds = time.monotonic() - clock
    return result


def _json_value(body: bytes) -> str | None:
    """``body``'s JSON value in one spelling (None: not JSON)."""
    try:
        return json.dumps(json.loads(body), sort_keys=True)
    except (ValueError, RecursionError):
        return None


async def _admin_read(drill: Drill) -> CaseResult:
    result = CaseResult("admin-read", RECONNAISSANCE, "the admin listener's reads without a "
                        "token", [], True)
    clock = time.monotonic()
    before = len([e for e in drill.gw.events() if e.get("event") == "admin-denied"])
    refused = 0
    for path in READS:
        client = Client(*drill.gw.admin, timeout=10)
        try:
            reply = await client.request(Call("GET", path))
            refused += reply.status == 401
            result.attack.judge(reply, None if reply.status == 401 else
                                f"GET {path}: {reply.status} without a token", b"")
        except ClientError as exc:
            result.attack.failure(str(exc))
        finally:
            client.close()
    deadline = time.monotonic() + 5.0  # the events file is written as the gateway goes
    while True:
        denied = len([e for e in drill.gw.events() if e.get("event") == "admin-denied"]) - before
        if denied >= len(READS) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    result.fired = len(READS)
    result.suppressed = refused == len(READS)
    result.detected = denied >= len(READS)
    result.notes.append(f"{refused} of {len(READS)} refused, {denied} logged as admin-denied")
    result.seconds = time.monotonic() - clock
    return result


async def _scan(drill: Drill, errors: int) -> CaseResult:
    result = CaseResult("scan", RECONNAISSANCE, "one client asks for paths that do not exist, "
                        "as a scanner does", [], True)
    clock, since = time.monotonic(), time.time()
    host, port = drill.gw.serve
    client = Client(host, port, timeout=drill.client_timeout, source=drill.source)
    try:
        for i in range(errors + 10):
            try:
                reply = await client.request(Call("GET", f"/scan-{i}/admin.php"))
            except ClientError as exc:
                result.attack.failure(str(exc))
                continue
            result.attack.judge(reply, None if reply.status == 404 else
                                f"a missing path answered {reply.status}", b"")
    finally:
        client.close()
    deadline = time.monotonic() + 5.0  # the pump looks four times a second
    while True:
        named = [e for e in drill.gw.events() if e.get("event") == "scan"
                 and e.get("client") == drill.source and e["ts"] >= since]
        level = (await drill.gw.status())["threat"]["level"]
        if (named and level > 0) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    result.fired = errors + 10
    result.suppressed = result.attack.correct == result.fired
    result.detected = bool(named) and level > 0
    result.notes.append(f"{len(named)} scan event(s) naming the client; threat level "
                        f"{level:.2f}")
    result.seconds = time.monotonic() - clock
    return result


async def run_reconnaissance(drill: Drill, *, quick: bool, scan_errors: int | None
                             ) -> list[CaseResult]:
    """Every case, on a settled pool; ``scan_errors``: the configuration's bar for a scan
    (None: not watched, so the scan case asks 200 and is not caught)."""
    await drill.settle()
    return [await _fingerprint(drill, 100 if quick else 400), await _admin_read(drill),
            await _scan(drill, scan_errors or 200)]
