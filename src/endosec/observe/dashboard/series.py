"""Short per-interval series (latency per executor, verdicts) for the dashboard's sparklines.

The gateway's Prometheus series are cumulative. Sampling them at most once per ``interval`` and
keeping the differences in small rings gives recent means and rates without the engine keeping
anything extra on its request path. Samples are taken when the page asks, so an idle dashboard
costs nothing; a point's ``dt`` says how long it covers.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from endosec.observe.metrics import GatewayMetrics

__all__ = ["SeriesSampler"]


class SeriesSampler:
    """Rings of per-interval figures computed from a `GatewayMetrics`' cumulative counters."""

    __slots__ = ("_keep", "_last", "_metrics", "_prev", "interval", "latency", "verdicts")

    def __init__(self, metrics: GatewayMetrics, *, interval: float = 1.0, keep: int = 90) -> None:
        self._metrics = metrics
        self._keep = keep
        self.interval = interval
        self._last: float | None = None
        self._prev: dict[str, dict[str, float]] = {}
        self.latency: dict[str, deque[dict[str, Any]]] = {}
        self.verdicts: deque[dict[str, Any]] = deque(maxlen=keep)

    def _read(self) -> dict[str, dict[str, float]]:
        t = self._metrics.totals
        return {
            "count": t("endosec_executor_seconds", "endosec_executor_seconds_count", "executor"),
            "sum": t("endosec_executor_seconds", "endosec_executor_seconds_sum", "executor"),
            "outcomes": t("endosec_requests", "endosec_requests_total", "outcome"),
            "dissents": t("endosec_dissents", "endosec_dissents_total", "executor"),
        }

    def sample(self, now: float) -> None:
        """Close the current interval if it is at least ``interval`` long; the first call only
        takes the baseline."""
        if self._last is not None and now - self._last < self.interval:
            return
        current = self._read()
        if self._last is not None:
            self._record(now, now - self._last, current)
        self._last, self._prev = now, current

    def _record(self, now: float, dt: float, current: dict[str, dict[str, float]]) -> None:
        t, dt = round(now, 3), round(dt, 3)
        for name, count in current["count"].items():
            n = int(count - self._prev["count"].get(name, 0.0))
            spent = current["sum"][name] - self._prev["sum"].get(name, 0.0)
            ring = self.latency.setdefault(name, deque(maxlen=self._keep))
            ring.append({"t": t, "dt": dt, "n": n,
                         "mean_ms": round(spent / n * 1000, 3) if n else None})
        outcomes = {k: int(v - self._prev["outcomes"].get(k, 0.0))
                    for k, v in current["outcomes"].items()}
        dissents = sum(current["dissents"].values()) - sum(self._prev["dissents"].values())
        self.verdicts.append({"t": t, "dt": dt, "outcomes": outcomes, "dissents": int(dissents)})

    def as_dict(self) -> dict[str, Any]:
        return {"interval": self.interval,
                "latency": {name: list(ring) for name, ring in self.latency.items()},
                "verdicts": list(self.verdicts)}
