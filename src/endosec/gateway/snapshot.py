"""What the control plane publishes to the native data plane: one immutable snapshot.

A snapshot says who votes (with trust weights, and who lends no support), who shadows, who is
kept level with the write journal, where every executor listens, the protocol served, and every
rule and limit the request path applies (for DNS, the ``dns`` section too). The data plane
swaps it in between requests (each request uses one snapshot throughout). Building
it is pure: the gateway passes in the controller's sets and the runtimes' addresses.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from endosec.config import Config

__all__ = ["Placement", "build_snapshot"]


@dataclass(frozen=True, slots=True)
class Placement:
    """Where one executor listens now; ``epoch`` changes at every (re)start."""

    host: str
    port: int
    epoch: int


def build_snapshot(config: Config, *, voters: Sequence[str], shadows: Sequence[str],
                   keep_level: Sequence[str], placements: Mapping[str, Placement],
                   weights: Mapping[str, float] | None, discounted: Sequence[str] = (),
                   refused_clients: Sequence[str] = (),
                   writes_to: tuple[str, int] | None = None,
                   memories: Sequence[Mapping[str, Any]] = (),
                   detector: Mapping[str, Any] | None = None, keep_samples: bool = False) -> str:
    """The snapshot as the JSON the data plane reads (see rust/dataplane/src/snapshot.rs).

    Executors without a placement (never started) are left out; none of them may vote.
    ``discounted`` voters are heard without lending support (strict voting); ``refused_clients``
    are the addresses held responsible for repeated dissent (refused over TCP); ``writes_to``
    is the listener of the boundary's leader, where a follower sends its writes; ``memories``
    are the immune memories requests are matched against, ``detector`` the boundary's learned
    detector, ``keep_samples`` whether sampled self requests are kept for it to learn from.
    """
    limits = config.limits
    executors: list[dict[str, Any]] = []
    for e in config.executors:
        place = placements.get(e.name)
        if place is None:
            continue
        executors.append({
            "name": e.name, "host": place.host, "port": place.port, "epoch": place.epoch,
            "connect_timeout": e.connect_timeout or limits.connect_timeout,
            "read_timeout": e.read_timeout or limits.read_timeout,
            "stateless": e.stateless,
        })
    placed = set(placements)
    a = config.arbiter
    d = config.dns
    return json.dumps({
        "protocol": config.protocol,
        "dns": {"flags": list(d.flags), "ttl": d.ttl, "ttl_tolerance": d.ttl_tolerance,
                "additional": d.additional, "udp_payload": d.udp_payload,
                "max_udp_inflight": d.max_udp_inflight, "refuse_types": list(d.refuse_types)},
        "http": {"methods": None if config.http.methods is None else list(config.http.methods),
                 "targets": config.http.targets},
        "limits": {
            "max_header_bytes": limits.max_header_bytes, "max_headers": limits.max_headers,
            "max_request_body": limits.max_request_body,
            "max_response_body": limits.max_response_body,
            "client_header_timeout": limits.client_header_timeout,
            "client_idle_timeout": limits.client_idle_timeout,
            "max_connections": limits.max_connections,
            "upstream_max_requests": limits.upstream_max_requests,
            "upstream_max_age": limits.upstream_max_age,
            "upstream_max_connections": limits.upstream_max_connections,
        },
        "canonicalise": config.canonicalise,
        "arbiter": {"strategy": a.strategy, "k": a.k, "min_support": a.min_support},
        "journal": {"max_entries": config.journal.max_entries,
                    "max_bytes": config.journal.max_bytes,
                    "idempotency_window": config.journal.idempotency_window,
                    "idempotency_keys": config.journal.idempotency_keys},
        "floor": config.controller.effective_floor,
        "verdict_headers": config.gateway.verdict_headers,
        "verdict_names": config.gateway.verdict_names,
        "face": {"remove": list(config.gateway.face.remove),
                 "set": [[n, v] for n, v in config.gateway.face.set.items()],
                 "drop_unvoted": config.gateway.face.unvoted == "drop",
                 "json": config.gateway.face.json_bodies == "canonical"},
        "recent_verdicts": config.gateway.recent_verdicts,
        "executors": executors,
        "voters": [n for n in voters if n in placed],
        "weights": dict(weights) if weights is not None else None,
        "discounted": [n for n in discounted if n in voters],
        "refused_clients": list(refused_clients),
        "shadows": [n for n in shadows if n in placed],
        "keep_level": [n for n in keep_level if n in placed],
        "writes_to": None if writes_to is None else {
            "name": "leader", "host": writes_to[0], "port": writes_to[1], "epoch": 1,
            "connect_timeout": limits.connect_timeout,
            # the leader waits its turn to write, then for its own executors
            "read_timeout": 4 * limits.read_timeout},
        "access_log": (None if config.gateway.access_log is None
                       else str(config.gateway.access_log)),
        "evidence": {"bodies": config.evidence.bodies, "max_body": config.evidence.max_body},
        "reserved_paths": sorted({e.state.http for e in config.executors
                                  if e.state is not None and e.state.http is not None}),
        "memories": list(memories),
        "detector": None if detector is None else dict(detector),
        "keep_samples": keep_samples,
    })
