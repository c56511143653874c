"""Prometheus metrics for one gateway, in a registry of its own (no process-global state).

Per-executor series are resolved once (`executor()`), not looked up per request; gauges that
describe current state (active executors, trust) are read at scrape time from callbacks, so the
request path never updates them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["ExecutorSeries", "GatewayMetrics"]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                    5.0, 10.0)


@dataclass(frozen=True, slots=True)
class ExecutorSeries:
    """The labelled children of one executor, resolved once."""

    latency: Histogram
    dissents: Counter
    replays: Counter


class _TrustCollector(Collector):
    def __init__(self, trust: Callable[[], Mapping[str, float]]) -> None:
        self._trust = trust

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("endosec_executor_trust", "Executor trust score in [0,1]",
                                   labels=["executor"])
        for name, score in self._trust().items():
            family.add_metric([name], score)
        yield family


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
        self._actions = Counter("endosec_controller_actions",
                                "Controller actions carried out, per executor and kind",
                                ["executor", "action"], registry=r)
        self.latency = Histogram("endosec_request_seconds",
                                 "End-to-end time from request parsed to reply ready",
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.executor_latency = Histogram("endosec_executor_seconds",
                                           "Per-executor response time", ["executor"],
                                           buckets=_LATENCY_BUCKETS, registry=r)
        self.arbiter_seconds = Histogram("endosec_arbiter_seconds",
                                         "Time spent in the arbiter per request",
                                         buckets=(1e-6, 5e-6, 1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 1e-2),
                                         registry=r)
        self.voters = Gauge("endosec_active_executors", "Executors voting now", registry=r)
        self._replays = Counter("endosec_journal_replayed_writes",
                                "Journal entries replayed into executors", ["executor"],
                                registry=r)
        self.replay_seconds = Histogram("endosec_journal_replay_seconds",
                                        "Duration of one journal catch-up", registry=r)
        self.outcomes = {o: self.requests.labels(o)
                         for o in ("accepted", "no-quorum", "all-failed")}

    def executor(self, name: str) -> ExecutorSeries:
        return ExecutorSeries(self.executor_latency.labels(name), self.dissents.labels(name),
                              self._replays.labels(name))

    def action(self, executor: str, action: str) -> None:
        self._actions.labels(executor, action).inc()

    def watch(self, *, voters: Callable[[], int],
              trust: Callable[[], Mapping[str, float]]) -> None:
        """Read the current state at scrape time instead of on every change."""
        self.voters.set_function(lambda: float(voters()))
        self.registry.register(_TrustCollector(trust))

    def render(self) -> bytes:
        return generate_latest(self.registry)
