"""Prometheus metrics on the admin listener: they parse, and they move as traffic says they must.

A real `endosec run` in front of the three demo stacks, on loopback.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.gatewayctl import Gateway, demo_config, with_env

pytestmark = pytest.mark.slow

if shutil.which("node") is None:  # pragma: no cover - Node ships with the test machines
    pytest.skip("node is needed for the three-stack demo (scripts/install-system-deps.sh)",
                allow_module_level=True)

SECRET_FILE = Path(__file__).resolve().parents[1] / "src/endosec/demo/secret.txt"
STACKS = ("stdlib", "aiohttp", "node")
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(gw: Gateway) -> tuple[Samples, dict[str, str]]:
    """Every sample on /metrics, and each family's type, through Prometheus' own parser."""
    code, headers, body = gw.request("GET", "/metrics", admin=True)
    assert code == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(body.decode()):
        types[family.name] = family.type
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples, types


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def settle(gw: Gateway, done: Callable[[Samples], bool], what: str,
           timeout: float = 15.0) -> Samples:
    """Scrape until ``done`` holds: stragglers are judged after the client has its reply."""
    deadline = time.monotonic() + timeout
    samples, _ = scrape(gw)
    while not done(samples):
        if time.monotonic() > deadline:
            interesting = {k: v for k, v in samples.items() if "bucket" not in k[0]}
            raise AssertionError(f"timed out waiting for {what}: {interesting}")
        time.sleep(0.05)
        samples, _ = scrape(gw)
    return samples


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    gw = Gateway(tmp_path, demo_config())
    yield gw
    gw.stop()


def test_exposition_parses_with_the_expected_families_and_types(gateway: Gateway) -> None:
    samples, types = scrape(gateway)
    assert types["endosec_requests"] == "counter"
    assert types["endosec_dissents"] == "counter"
    assert types["endosec_controller_actions"] == "counter"
    assert types["endosec_executor_seconds"] == "histogram"
    assert types["endosec_request_seconds"] == "histogram"
    assert types["endosec_active_executors"] == "gauge"
    assert types["endosec_executor_trust"] == "gauge"
    assert value(samples, "endosec_active_executors") == 3
    for name in STACKS:
        assert 0.0 < value(samples, "endosec_executor_trust", executor=name) <= 1.0
        assert value(samples, "endosec_executor_trust_level", executor=name) == 2  # votes
        assert value(samples, "endosec_executor_trust_points", executor=name) >= 100


def test_fifty_requests_move_the_request_and_latency_series_by_fifty(gateway: Gateway) -> None:
    code, _, _ = gateway.request("POST", "/notes", {"text": "seed"})
    assert code == 201
    before = settle(gateway, lambda s: value(s, "endosec_requests_total", outcome="accepted") == 1,
                    "the seed write's verdict")
    hist = "endosec_executor_seconds_count"
    for i in range(50):
        code, _, _ = gateway.request("GET", "/notes/1" if i % 2 else "/notes")
        assert code == 200
    after = settle(
        gateway, lambda s: all(value(s, hist, executor=n) - value(before, hist, executor=n) == 50
                               for n in STACKS), "every executor's latency count to move by 50")
    accepted = "endosec_requests_total"
    assert value(after, accepted, outcome="accepted") - value(
        before, accepted, outcome="accepted") == 50
    assert value(after, "endosec_request_seconds_count") - value(
        before, "endosec_request_seconds_count") == 50
    for name in STACKS:
        spent = value(after, "endosec_executor_seconds_sum", executor=name) - value(
            before, "endosec_executor_seconds_sum", executor=name)
        assert spent > 0
        # Cumulative buckets: +Inf holds every observation.
        assert value(after, "endosec_executor_seconds_bucket", executor=name, le="+Inf") == value(
            after, hist, executor=name)
        assert value(after, "endosec_dissents_total", executor=name) == 0
    assert value(after, "endosec_active_executors") == 3
    assert value(after, "endosec_requests_total", outcome="no-quorum") == 0


def test_refused_requests_are_counted_by_status(gateway: Gateway) -> None:
    before, _ = scrape(gateway)
    reply = gateway.raw(b"GET / HTTP/1.1\r\nHost: x\r\n"
                        b"Content-Length: 1\r\nContent-Length: 2\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400")
    after = settle(gateway, lambda s: value(s, "endosec_rejected_requests_total", status="400")
                   == value(before, "endosec_rejected_requests_total", status="400") + 1,
                   "the 400 to be counted")
    assert value(after, "endosec_requests_total", outcome="accepted") == value(
        before, "endosec_requests_total", outcome="accepted")


def test_backdoor_moves_dissent_and_quarantine_counters_of_that_executor(tmp_path: Path) -> None:
    gw = Gateway(tmp_path, with_env(demo_config(), "stdlib",
                                    NOTES_BACKDOOR_SECRET=str(SECRET_FILE)))
    try:
        code, _, _ = gw.request("POST", "/notes", {"text": "before"})
        assert code == 201
        before = settle(gw, lambda s: value(s, "endosec_requests_total", outcome="accepted") == 1,
                        "the write's verdict")
        code, _, body = gw.request("GET", "/notes/1", headers={"X-Debug": "letmein"})
        assert code == 200 and b"before" in body

        def action(s: Samples, name: str, kind: str) -> float:
            return value(s, "endosec_controller_actions_total", executor=name, action=kind)

        after = settle(gw, lambda s: action(s, "stdlib", "activate") > action(
            before, "stdlib", "activate") and value(s, "endosec_active_executors") == 3,
            "stdlib quarantined, cleansed and voting again")
        assert value(after, "endosec_dissents_total", executor="stdlib") == 1
        assert action(after, "stdlib", "quarantine") == 1
        assert action(after, "stdlib", "cleanse") == 1
        for name in ("aiohttp", "node"):
            assert value(after, "endosec_dissents_total", executor=name) == 0
            assert action(after, name, "quarantine") == 0
        # The backdoored request was still answered by the honest majority.
        assert value(after, "endosec_requests_total", outcome="accepted") == 2
        assert value(after, "endosec_executor_trust", executor="stdlib") < value(
            after, "endosec_executor_trust", executor="node")
        assert value(after, "endosec_executor_trust_points", executor="stdlib") < value(
            after, "endosec_executor_trust_points", executor="node")
    finally:
        gw.stop()
