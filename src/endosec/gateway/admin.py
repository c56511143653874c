"""The admin listener: status, metrics and authenticated controller actions.

``GET /status`` (JSON), ``GET /metrics`` (Prometheus text format), ``GET /events`` (recent
events as JSON), and ``POST /executors/{name}/{quarantine|cleanse|activate}`` with
``Authorization: Bearer <token>``. Without a configured token every POST is refused (403).
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from endosec.gateway.engine import MimicGateway
from endosec.protocols.http import Request, Response, encode_response

__all__ = ["AdminHandler"]

_ACTIONS = ("quarantine", "cleanse", "activate")


def _reply(status: int, body: bytes, content_type: bytes, keep_alive: bool) -> bytes:
    response = Response(status=status, reason=b"", headers=((b"content-type", content_type),),
                        body=body, keep_alive=keep_alive)
    return encode_response(response, keep_alive=keep_alive, head_only=False)


def _json(status: int, payload: Any, keep_alive: bool) -> bytes:
    body = json.dumps(payload, indent=2, default=str).encode()
    return _reply(status, body, b"application/json", keep_alive)


class AdminHandler:
    __slots__ = ("gateway", "token")

    def __init__(self, gateway: MimicGateway, token: str | None) -> None:
        self.gateway = gateway
        self.token = token

    def _authorised(self, request: Request) -> bool:
        if self.token is None:
            return False
        for name, value in request.headers:
            if name == b"authorization":
                scheme, _, given = value.decode("latin-1").partition(" ")
                return scheme.lower() == "bearer" and hmac.compare_digest(
                    given.strip().encode(), self.token.encode())
        return False

    async def __call__(self, request: Request) -> bytes:
        ka = request.keep_alive
        path = request.target.decode("latin-1").split("?", 1)[0]
        if request.method == b"GET":
            if path == "/status":
                return _json(200, self.gateway.status(), ka)
            if path == "/metrics":
                return _reply(200, self.gateway.metrics.render(),
                              b"text/plain; version=0.0.4; charset=utf-8", ka)
            if path == "/events":
                return _json(200, list(self.gateway.events.recent), ka)
            return _json(404, {"error": "not found"}, ka)
        parts = path.strip("/").split("/")
        if len(parts) != 3 or parts[0] != "executors" or parts[2] not in _ACTIONS:
            return _json(404, {"error": "not found"}, ka)
        if request.method != b"POST":
            return _json(405, {"error": "method not allowed"}, ka)
        if self.token is None:
            return _json(403, {"error": "admin actions are disabled: no token configured"}, ka)
        if not self._authorised(request):
            return _json(401, {"error": "missing or wrong bearer token"}, ka)
        try:
            actions = self.gateway.admin(parts[2], parts[1])
        except KeyError:
            return _json(404, {"error": f"no executor named {parts[1]!r}"}, ka)
        return _json(202, {"accepted": parts[2], "executor": parts[1],
                           "actions": [repr(a) for a in actions]}, ka)
