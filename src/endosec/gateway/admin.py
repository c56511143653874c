"""The admin listener: status, metrics, the live dashboard and authenticated controller actions.

Read-only, for anyone who can reach the listener (keep it on loopback or an admin network):

* ``GET /status`` (JSON) and ``GET /metrics`` (Prometheus text format);
* ``GET /events[?since=TS]``: recent events, those with ``ts >= TS`` when given;
* ``GET /series``: per-second latency per executor and verdict counts, for sparklines;
* ``GET /quantify[?p=P]``: the quantifier's P(defeat) for the live active set, every component
  exploited with probability P (default 0.01);
* ``GET /dashboard``: the live page, which reads the endpoints above;
* ``GET /evidence/ID`` (admin token): the replies kept when executors dissented, as a record
  and as the diff `endosec evidence show` prints;
* ``POST /threat`` (admin token) ``{"level": 0..1, "seconds": S, "components": [...]}``: the
  operator's word on the threat level, a floor under the measured one for S seconds, and on
  components under attack (isolated as long);
* ``GET /healthz`` (the gateway is alive) and ``GET /readyz`` (at least the floor can vote:
  200, else 503), for probes: unauthenticated and detail-free.

Reads (every ``GET`` above but the probes and the dashboard's own files) need ``Authorization:
Bearer <token>`` with the read token or the admin token, unless ``admin.public_read`` is set:
the listener may be reachable from places that must not learn the active set (executors share
the host's network). Actions: ``POST /executors/{name}/{quarantine|cleanse|activate}`` with the
admin token; ``GET /auth`` answers 200 for a good token (``{"admin": true}`` for the admin
token, false for the read token) so the page can check one before offering buttons. Without a
configured token every action is refused (403); a missing or wrong token is refused (401) and
logged as an ``admin-denied`` event with the client's address.
"""

from __future__ import annotations

import hmac
import json
import math
import time
from typing import Any
from urllib.parse import parse_qs

from endosec.gateway.engine import MimicGateway, NotLeading
from endosec.observe.dashboard import SeriesSampler, asset, defeat_estimate
from endosec.observe.evidence import diff, find
from endosec.protocols.http import Request, Response, encode_response
from endosec.quantify.errors import ParameterError

__all__ = ["AdminHandler"]

_ACTIONS = ("quarantine", "cleanse", "activate")
DEFAULT_EXPLOIT_P = 0.01
# The page is same-origin only: no external script, style, image or connection, no framing.
_PAGE_HEADERS = (
    (b"content-security-policy",
     b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
     b"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-store"),
)


def _reply(status: int, body: bytes, content_type: bytes, keep_alive: bool,
           extra: tuple[tuple[bytes, bytes], ...] = ()) -> bytes:
    response = Response(status=status, reason=b"",
                        headers=((b"content-type", content_type), *extra),
                        body=body, keep_alive=keep_alive)
    return encode_response(response, keep_alive=keep_alive, head_only=False)


def _json(status: int, payload: Any, keep_alive: bool) -> bytes:
    body = json.dumps(payload, indent=2, default=str).encode()
    return _reply(status, body, b"application/json", keep_alive, ((b"cache-control", b"no-store"),))


def _number(query: dict[str, list[str]], key: str) -> float | None:
    """A finite float query parameter, None when absent; ValueError when malformed."""
    if key not in query:
        return None
    value = float(query[key][-1])
    if not math.isfinite(value):
        raise ValueError(f"{key} must be a finite number")
    return value


class AdminHandler:
    __slots__ = ("gateway", "public_read", "read_token", "series", "token")

    def __init__(self, gateway: MimicGateway, token: str | None, *,
                 read_token: str | None = None, public_read: bool = False) -> None:
        self.gateway = gateway
        self.token = token
        self.read_token = read_token
        self.public_read = public_read
        self.series = SeriesSampler(gateway.metrics)

    def _authorised(self, request: Request, token: str | None = None) -> bool:
        """Whether the request carries ``token`` (default: the admin token)."""
        token = self.token if token is None else token
        if token is None:
            return False
        for name, value in request.headers:
            if name == b"authorization":
                scheme, _, given = value.decode("latin-1").partition(" ")
                return scheme.lower() == "bearer" and hmac.compare_digest(
                    given.strip().encode(), token.encode())
        return False

    def _read_refusal(self, request: Request, peer: str, ka: bool) -> bytes | None:
        """None when the request may read; else the 401 (logged as ``admin-denied``)."""
        if self.public_read or self._authorised(request) or (
                self.read_token is not None and self._authorised(request, self.read_token)):
            return None
        self.gateway.events.emit("admin-denied", client=peer,
                                 method=request.method.decode("latin-1"),
                                 path=request.target.decode("latin-1").partition("?")[0])
        return _json(401, {"error": "reads need the read or admin token (Authorization: Bearer "
                                    "TOKEN), or admin.public_read: true"}, ka)

    async def __call__(self, request: Request, peer: str) -> bytes:
        ka = request.keep_alive
        path, _, raw_query = request.target.decode("latin-1").partition("?")
        if request.method == b"GET":
            try:
                return self._get(request, peer, path, parse_qs(raw_query), ka)
            except (ValueError, ParameterError) as exc:
                return _json(400, {"error": str(exc)}, ka)
        if path == "/threat":
            if request.method != b"POST":
                return _json(405, {"error": "method not allowed"}, ka)
            return self._refusal(request, peer, ka) or self._threat(request.body, ka)
        parts = path.strip("/").split("/")
        if len(parts) != 3 or parts[0] != "executors" or parts[2] not in _ACTIONS:
            return _json(404, {"error": "not found"}, ka)
        if request.method != b"POST":
            return _json(405, {"error": "method not allowed"}, ka)
        refused = self._refusal(request, peer, ka)
        if refused is not None:
            return refused
        try:
            actions = self.gateway.admin(parts[2], parts[1])
        except KeyError:
            return _json(404, {"error": f"no executor named {parts[1]!r}"}, ka)
        except NotLeading as exc:
            return _json(409, {"error": f"this gateway follows {exc.args[0]}: only the "
                                        "boundary's leader takes orders", "leader": exc.args[0]},
                         ka)
        return _json(202, {"accepted": parts[2], "executor": parts[1],
                           "actions": [repr(a) for a in actions]}, ka)

    def _threat(self, body: bytes, ka: bool) -> bytes:
        """``{"level": 0..1, "seconds": S, "components": [...]}``: the threat is at least
        ``level`` for S seconds (rotations come faster, the active set may grow), and the
        components named are under attack as long (isolated)."""
        try:
            data = json.loads(body)
            level, seconds = float(data["level"]), float(data.get("seconds", 600))
            if not (math.isfinite(seconds) and seconds > 0):
                raise ValueError("seconds must be a positive number")
            components = data.get("components", [])
            if not (isinstance(components, list)
                    and all(isinstance(c, str) and c for c in components)):
                raise ValueError("components must be a list of component names")
            self.gateway.declare_threat(level, seconds, frozenset(components))
        except (ValueError, KeyError, TypeError) as exc:
            return _json(400, {"error": f"expected {{\"level\": 0..1, \"seconds\": S, "
                                        f"\"components\": [...]}}: {exc}"}, ka)
        return _json(202, {"level": level, "seconds": seconds,
                           "rotate_mean": self.gateway.controller.rotation_mean(),
                           "isolated": sorted(self.gateway.controller.isolated)}, ka)

    def _refusal(self, request: Request, peer: str, ka: bool) -> bytes | None:
        if self.token is None:
            return _json(403, {"error": "admin actions are disabled: no token configured"}, ka)
        if not self._authorised(request):
            self.gateway.events.emit("admin-denied", client=peer,
                                     method=request.method.decode("latin-1"),
                                     path=request.target.decode("latin-1").partition("?")[0])
            return _json(401, {"error": "missing or wrong bearer token"}, ka)
        return None

    def _get(self, request: Request, peer: str, path: str, query: dict[str, list[str]],
             ka: bool) -> bytes:
        gw = self.gateway
        if path == "/healthz":
            return _reply(200, b"ok\n", b"text/plain", ka, ((b"cache-control", b"no-store"),))
        if path == "/readyz":
            ready = len(gw.voters) >= gw.floor
            return _reply(200 if ready else 503, b"ready\n" if ready else b"not ready\n",
                          b"text/plain", ka, ((b"cache-control", b"no-store"),))
        if path == "/auth":
            if self._authorised(request):
                return _json(200, {"admin": True}, ka)
            if self.read_token is not None and self._authorised(request, self.read_token):
                return _json(200, {"admin": False}, ka)
            return self._refusal(request, peer, ka) or _json(401, {"error": "wrong token"}, ka)
        if path in ("/", "/dashboard/"):
            return _reply(302, b"", b"text/plain", ka, ((b"location", b"/dashboard"),))
        if path.startswith("/dashboard"):
            name = "index.html" if path == "/dashboard" else path.removeprefix("/dashboard/")
            found = asset(name)
            if found is None:
                return _json(404, {"error": "not found"}, ka)
            return _reply(200, found[0], found[1], ka, _PAGE_HEADERS)
        refused = self._read_refusal(request, peer, ka)
        if refused is not None:
            return refused
        if path == "/status":
            return _json(200, gw.status(), ka)
        if path == "/metrics":
            return _reply(200, gw.metrics.render(),
                          b"text/plain; version=0.0.4; charset=utf-8", ka)
        if path == "/events":
            since = _number(query, "since")
            events = [e for e in gw.events.recent if since is None or e["ts"] >= since]
            return _json(200, events, ka)
        if path == "/series":
            self.series.sample(time.time())
            return _json(200, self.series.as_dict(), ka)
        if path == "/quantify":
            p = _number(query, "p")
            voters = set(gw.voters)
            profiles = [e.as_profile() for e in gw.config.executors if e.name in voters]
            a = gw.config.arbiter
            return _json(200, defeat_estimate(
                profiles, strategy=a.strategy, k=a.k,
                p=DEFAULT_EXPLOIT_P if p is None else p), ka)
        if path.startswith("/evidence/") and gw.evidence is not None:
            refused = self._refusal(request, peer, ka)
            if refused is not None:
                return refused
            try:
                evidence_id, record = find(gw.evidence.directory,
                                           path.removeprefix("/evidence/"))
            except KeyError as exc:
                return _json(404, {"error": str(exc.args[0])}, ka)
            return _json(200, {"id": evidence_id, "diff": diff(evidence_id, record),
                               "record": record}, ka)
        return _json(404, {"error": "not found"}, ka)
