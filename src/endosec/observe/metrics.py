"""Prometheus metrics for one gateway, in a registry of its own (no process-global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["GatewayMetrics"]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                    5.0, 10.0)


class GatewayMetrics:
    """Every series the gateway exports; `render()` gives the text exposition format."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("endosec_requests", "Client requests by verdict outcome",
                                ["outcome"], registry=r)
        self.rejected = Counter("endosec_rejected_requests",
                                "Requests refused by the input agent, by status", ["status"],
                                registry=r)
        self.dissents = Counter("endosec_dissents", "Dissenting or failed votes per executor",
                                ["executor"], registry=r)
        self.actions = Counter("endosec_controller_actions",
                               "Controller actions carried out, per executor and kind",
                               ["executor", "action"], registry=r)
        self.latency = Histogram("endosec_request_seconds",
                                 "End-to-end time from request parsed to reply sent",
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.executor_latency = Histogram("endosec_executor_seconds",
                                          "Per-executor response time", ["executor"],
                                          buckets=_LATENCY_BUCKETS, registry=r)
        self.arbiter_seconds = Histogram("endosec_arbiter_seconds",
                                         "Time spent in the arbiter per request",
                                         buckets=(1e-6, 5e-6, 1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 1e-2),
                                         registry=r)
        self.voters = Gauge("endosec_active_executors", "Executors voting now", registry=r)
        self.trust = Gauge("endosec_executor_trust", "Executor trust score in [0,1]",
                           ["executor"], registry=r)
        self.replays = Counter("endosec_journal_replayed_writes",
                               "Journal entries replayed into executors", ["executor"],
                               registry=r)
        self.replay_seconds = Histogram("endosec_journal_replay_seconds",
                                        "Duration of one journal catch-up", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
