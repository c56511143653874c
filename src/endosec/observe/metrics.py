"""Prometheus metrics for one gateway, in a registry of its own (no process-global state).

The control plane's own series (dissents and controller actions per executor, active
executors, trust) live here. The request path's series (requests by outcome, refusals, latency
histograms, journal replays) are counted by the native data plane itself and read at scrape
time through `serve_native`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

__all__ = ["GatewayMetrics"]

_HELP = {
    "endosec_requests": "Client requests by verdict outcome",
    "endosec_rejected_requests": "Requests refused by the input agent, by status",
    "endosec_request_seconds": "End-to-end time from request parsed to reply ready",
    "endosec_executor_seconds": "Per-executor response time",
    "endosec_arbiter_seconds": "Time spent in the arbiter per request",
    "endosec_journal_replayed_writes": "Journal entries replayed into executors",
    "endosec_journal_replay_seconds": "Duration of one journal catch-up",
}


TrustFigures = Mapping[str, tuple[float, int, float]]
"""Per executor: credibility in [0, 1] (`TrustBook.score`), Proof-of-Trust level 0-3, points."""


class _TrustCollector(Collector):
    def __init__(self, trust: Callable[[], TrustFigures]) -> None:
        self._trust = trust

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, ...]:
        return (
            GaugeMetricFamily("endosec_executor_trust", "Executor trust score in [0,1]",
                              labels=["executor"]),
            GaugeMetricFamily("endosec_executor_trust_level",
                              "Executor Proof-of-Trust level (0 to 3)", labels=["executor"]),
            GaugeMetricFamily("endosec_executor_trust_points",
                              "Executor Proof-of-Trust points", labels=["executor"]))

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """The families without values: registering reads this, not the gateway's state."""
        yield from self._families()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = self._families()
        for name, figures in self._trust().items():
            for family, value in zip(families, figures, strict=True):
                family.add_metric([name], float(value))
        yield from families


def _histogram(family: HistogramMetricFamily, labels: list[str], h: Mapping[str, Any]) -> None:
    buckets = [("+Inf" if bound == float("inf") else repr(float(bound)), float(count))
               for bound, count in h["buckets"]]
    family.add_metric(labels, buckets, float(h["sum"]))


class _NativeCollector(Collector):
    """The native data plane's figures, read when Prometheus scrapes."""

    def __init__(self, figures: Callable[[], Mapping[str, Any]]) -> None:
        self._figures = figures

    def collect(self) -> Iterator[Metric]:
        f = self._figures()
        requests = CounterMetricFamily("endosec_requests", _HELP["endosec_requests"],
                                       labels=["outcome"])
        for outcome, n in f["outcomes"].items():
            requests.add_metric([outcome], n)
        yield requests
        rejected = CounterMetricFamily("endosec_rejected_requests",
                                       _HELP["endosec_rejected_requests"], labels=["status"])
        for status, n in f["rejected"].items():
            rejected.add_metric([status], n)
        yield rejected
        for name, key in (("endosec_request_seconds", "latency"),
                          ("endosec_arbiter_seconds", "arbiter"),
                          ("endosec_journal_replay_seconds", "replay")):
            family = HistogramMetricFamily(name, _HELP[name])
            _histogram(family, [], f[key])
            yield family
        per_executor = HistogramMetricFamily("endosec_executor_seconds",
                                             _HELP["endosec_executor_seconds"],
                                             labels=["executor"])
        replays = CounterMetricFamily("endosec_journal_replayed_writes",
                                      _HELP["endosec_journal_replayed_writes"],
                                      labels=["executor"])
        for executor, e in f["executors"].items():
            _histogram(per_executor, [executor], e["latency"])
            replays.add_metric([executor], e["replays"])
        yield per_executor
        yield replays
        yield CounterMetricFamily("endosec_events_dropped",
                                  "Data-plane events dropped because the queue was full",
                                  value=f["events_dropped"])
        yield GaugeMetricFamily("endosec_client_connections", "Client connections open",
                                value=f["connections"])


class GatewayMetrics:
    """Every series the gateway exports; `render()` gives the text exposition format."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.dissents = Counter("endosec_dissents", "Dissenting or failed votes per executor",
                                ["executor"], registry=r)
        self._actions = Counter("endosec_controller_actions",
                                "Controller actions carried out, per executor and kind",
                                ["executor", "action"], registry=r)
        self.voters = Gauge("endosec_active_executors", "Executors voting now", registry=r)
        self.reports = Counter("endosec_cluster_reports",
                               "Verdicts and reports this gateway sent to its boundary's leader "
                               "(sent), received from its followers (received), or dropped "
                               "while the store was out of reach (dropped)", ["way"],
                               registry=r)

    def action(self, executor: str, action: str) -> None:
        self._actions.labels(executor, action).inc()

    def watch(self, *, voters: Callable[[], int],
              trust: Callable[[], TrustFigures]) -> None:
        """Read the current state at scrape time instead of on every change."""
        self.voters.set_function(lambda: float(voters()))
        self.registry.register(_TrustCollector(trust))

    def serve_native(self, figures: Callable[[], Mapping[str, Any]]) -> None:
        """Export the native data plane's figures (read at every scrape)."""
        self.registry.register(_NativeCollector(figures))

    def totals(self, family: str, sample: str, label: str) -> dict[str, float]:
        """``{label value: value}`` of one cumulative sample of a labelled family."""
        return {s.labels[label]: s.value for metric in self.registry.collect()
                if metric.name == family for s in metric.samples if s.name == sample}

    def render(self) -> bytes:
        return generate_latest(self.registry)
