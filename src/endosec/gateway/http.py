"""The HTTP/1.1 protocol adapter: requests in, consensus responses out."""

from __future__ import annotations

from endosec.core.canonicalise import RuleSet
from endosec.core.model import ErrorKind, Output, Verdict
from endosec.gateway.adapter import Forward
from endosec.gateway.http_upstream import HttpUpstream
from endosec.protocols.http import (
    HttpLimits,
    Request,
    Response,
    encode_response,
    error_response,
    response_output,
    upstream_request_bytes,
)

__all__ = ["SAFE_METHODS", "HttpAdapter"]

# Methods that must not change executor state; everything else is serialised and journaled.
SAFE_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE"})


class HttpAdapter:
    __slots__ = ("limits", "rules")

    def __init__(self, rules: RuleSet, limits: HttpLimits) -> None:
        self.rules = rules
        self.limits = limits

    def upstream(self, address: tuple[str, int], *, connect_timeout: float,
                 read_timeout: float) -> HttpUpstream:
        return HttpUpstream(address, self.limits, connect_timeout=connect_timeout,
                            read_timeout=read_timeout)

    def forward(self, request: Request) -> Forward:
        return Forward(request=request, payload=upstream_request_bytes(request),
                       write=request.method not in SAFE_METHODS,
                       label=request.method.decode("latin-1"),
                       key=request.target.decode("latin-1").split("?", 1)[0])

    def output(self, executor: str, reply: Response, forward: Forward,
               latency: float) -> Output:
        return response_output(executor, reply, self.rules, forward.key, latency)

    def failure(self, executor: str, error: ErrorKind, forward: Forward,
                latency: float) -> Output:
        return Output.failure(executor, error, self.rules.for_response(forward.key, ""), latency)

    def reply(self, forward: Forward, verdict: Verdict, winner: Response, *,
              verdict_headers: bool) -> bytes:
        request: Request = forward.request
        extra: list[tuple[bytes, bytes]] = []
        if verdict_headers:
            extra = [
                (b"x-endosec-verdict", verdict.outcome.value.encode()),
                (b"x-endosec-agreed", ",".join(verdict.agreed).encode()),
                (b"x-endosec-dissented", ",".join(verdict.dissenters).encode()),
            ]
        return encode_response(winner, keep_alive=request.keep_alive,
                               head_only=request.method == b"HEAD", extra_headers=extra)

    def refuse(self, forward: Forward, reason: str) -> bytes:
        """A 502 naming the reason; never any executor's output."""
        request: Request = forward.request
        return error_response(502, {"error": "no quorum", "reason": reason},
                              keep_alive=request.keep_alive)
