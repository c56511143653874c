"""The live dashboard: the figures it plots, its JSON endpoints, and the page itself in Debian's
headless chromium.

The endpoint and browser tests use a real `endosec run` in front of the three demo stacks, on
loopback. The browser is driven by
Playwright with ``executable_path`` pointed at the system chromium (no browser download). The
end-to-end run leaves a screenshot in ``artifacts/dashboard.png`` for CI to keep.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from endosec.config import load_config
from endosec.core.model import Profile
from endosec.observe.dashboard import SeriesSampler, asset, defeat_estimate
from endosec.observe.dashboard.risk import votes_to_defeat
from endosec.observe.metrics import GatewayMetrics
from endosec.quantify.components import ComponentSystem, analyse
from endosec.quantify.errors import ParameterError
from tests.gatewayctl import DEMO, ROOT, Gateway, demo_config, with_env

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # the browser test says so; the endpoint tests still run
    expect = sync_playwright = None

SECRET_FILE = ROOT / "src/endosec/demo/secret.txt"
ARTIFACT = ROOT / "artifacts" / "dashboard.png"
CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync"]
INSTALL = ("install it with scripts/install-system-deps.sh (as root) and "
           "pip install -e '.[test]'")
TOKEN = "test-token"  # what tests.gatewayctl puts in ENDOSEC_ADMIN_TOKEN


def missing(what: str) -> None:
    """Skip on a developer machine; on CI (CI=true) a missing browser is a failure."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what} is missing on CI: {INSTALL}")
    pytest.skip(f"{what} is missing: {INSTALL}")


def need_node() -> None:
    if shutil.which("node") is None:  # pragma: no cover - Node ships with the test machines
        pytest.skip("node is needed for the three-stack demo (scripts/install-system-deps.sh)")


# -- the figures, without a gateway -------------------------------------------------------------

class NativeFigures:
    """The native data plane's figures as `GatewayMetrics.serve_native` reads them, fed by
    hand: executor ``a``'s latencies and the outcome counts."""

    def __init__(self) -> None:
        self.latency: list[float] = []
        self.outcomes = {"accepted": 0, "no-quorum": 0, "all-failed": 0}

    def __call__(self) -> dict[str, Any]:
        def histogram(values: list[float]) -> dict[str, Any]:
            return {"buckets": [(float("inf"), len(values))], "count": len(values),
                    "sum": sum(values)}
        return {"outcomes": dict(self.outcomes), "rejected": {}, "latency": histogram([]),
                "arbiter": histogram([]), "replay": histogram([]), "events_dropped": 0,
                "connections": 0,
                "executors": {"a": {"latency": histogram(self.latency), "replays": 0}}}


def test_series_are_differences_of_the_cumulative_metrics() -> None:
    metrics = GatewayMetrics()
    request_path = NativeFigures()
    metrics.serve_native(request_path)
    sampler = SeriesSampler(metrics, interval=1.0)
    request_path.latency.append(0.5)
    sampler.sample(100.0)  # the baseline: what happened before it is not plotted
    assert sampler.as_dict()["latency"] == {} and sampler.as_dict()["verdicts"] == []
    request_path.latency += [0.002, 0.004]
    request_path.outcomes["accepted"] += 2
    metrics.dissents.labels("a").inc()
    sampler.sample(100.5)  # too soon: the interval stays open
    sampler.sample(101.25)
    series = sampler.as_dict()
    assert series["latency"]["a"] == [{"t": 101.25, "dt": 1.25, "n": 2, "mean_ms": 3.0}]
    verdicts = series["verdicts"]
    assert len(verdicts) == 1 and verdicts[0]["dt"] == 1.25 and verdicts[0]["dissents"] == 1
    assert verdicts[0]["outcomes"]["accepted"] == 2
    assert not any(n for outcome, n in verdicts[0]["outcomes"].items() if outcome != "accepted")
    sampler.sample(102.5)  # a quiet interval is a gap, not a zero latency
    assert sampler.as_dict()["latency"]["a"][-1]["mean_ms"] is None


def test_votes_to_defeat_follow_the_strategy() -> None:
    assert votes_to_defeat("majority", 3, None) == 2
    assert votes_to_defeat("trust-weighted", 4, None) == 3
    assert votes_to_defeat("plurality", 5, None) == 3
    assert votes_to_defeat("unanimity", 3, None) == 3
    assert votes_to_defeat("threshold", 5, 4) == 4
    assert votes_to_defeat("threshold", 2, 4) == 2  # fewer voters than k: all of them


def test_defeat_estimate_without_voters_and_with_a_bad_probability() -> None:
    assert defeat_estimate([], strategy="majority", k=None, p=0.01)["p_defeat"] is None
    one = [Profile("a", frozenset({"os:x"}))]
    assert defeat_estimate(one, strategy="majority", k=None, p=0.25)["p_defeat"] == 0.25
    with pytest.raises(ParameterError):
        defeat_estimate(one, strategy="majority", k=None, p=1.5)


def test_only_the_listed_assets_are_served() -> None:
    assert asset("index.html") is not None
    for name in ("../__init__.py", "risk.py", "/etc/passwd", "", "dashboard.js/"):
        assert asset(name) is None, name


# -- the endpoints the page reads -------------------------------------------------------------

@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    need_node()
    gw = Gateway(tmp_path_factory.mktemp("dashboard-api"), demo_config())
    yield gw
    gw.stop()


def get_json(gw: Gateway, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    code, _, body = gw.request("GET", path, headers=headers, admin=True)
    return code, json.loads(body)


# -- the endpoints the page reads -------------------------------------------------------------

@pytest.mark.slow
def test_page_and_assets_are_served_with_a_same_origin_policy(gateway: Gateway) -> None:
    code, headers, body = gateway.request("GET", "/dashboard", admin=True)
    assert code == 200 and headers["content-type"].startswith("text/html")
    csp = headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert b'src="/dashboard/dashboard.js"' in body
    for name, kind in (("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")):
        code, headers, asset = gateway.request("GET", f"/dashboard/{name}", admin=True)
        assert code == 200 and headers["content-type"].startswith(kind), name
        # No fetch may leave the admin listener: the only absolute URL is the SVG namespace.
        urls = set(re.findall(rb"https?://[^\s\"')]+", asset)) - {b"http://www.w3.org/2000/svg"}
        assert not urls, (name, urls)
    for path in ("/dashboard/../secret.txt", "/dashboard/endosec.yaml", "/dashboard/risk.py",
                 "/dashboard/__init__.py"):
        assert gateway.request("GET", path, admin=True)[0] == 404, path
    code, headers, _ = gateway.request("GET", "/", admin=True)
    assert code == 302 and headers["location"] == "/dashboard"


@pytest.mark.slow
def test_quantify_is_the_components_model_over_the_active_set(gateway: Gateway) -> None:
    code, body = get_json(gateway, "/quantify")
    assert code == 200
    assert sorted(body["executors"]) == ["aiohttp", "node", "stdlib"]
    assert body["k"] == 2 and body["p"] == 0.01
    profiles = [e.as_profile() for e in load_config(DEMO).executors]
    expected = analyse(ComponentSystem(profiles, default_p=0.01), k=2)
    assert body["p_defeat"] == pytest.approx(expected.p_defeat)
    # os:linux is in every stack: defeat is likelier than independent failures would make it.
    assert body["contributions"] and all(c["contribution"] > 0 for c in body["contributions"])
    code, higher = get_json(gateway, "/quantify?p=0.05")
    assert code == 200 and higher["p_defeat"] > body["p_defeat"]
    for bad in ("1.5", "nan", "x"):
        code, err = get_json(gateway, f"/quantify?p={bad}")
        assert code == 400 and "error" in err, bad


@pytest.mark.slow
def test_events_since_returns_only_newer_events(gateway: Gateway) -> None:
    code, everything = get_json(gateway, "/events")
    assert code == 200 and len(everything) >= 2
    cut = everything[len(everything) // 2]["ts"]
    code, newer = get_json(gateway, f"/events?since={cut}")
    assert code == 200 and newer == [e for e in everything if e["ts"] >= cut]
    assert get_json(gateway, "/events?since=later")[0] == 400


@pytest.mark.slow
def test_reads_need_a_token_unless_public(tmp_path: Path) -> None:
    """Status, events, metrics and the rest tell who votes: without admin.public_read only a
    bearer of the read or the admin token gets them; probes and the page's files stay open."""
    need_node()
    admin = {"listen": "127.0.0.1:0", "read_token": "reader", "public_read": False}
    gw = Gateway(tmp_path, demo_config(admin=admin))
    try:
        none = {"Authorization": ""}
        for path in ("/status", "/events", "/metrics", "/series", "/quantify"):
            code, _, body = gw.request("GET", path, admin=True, headers=none)
            assert code == 401 and b"read" in body, (path, code)
            for token in ("reader", TOKEN):
                code, _, _ = gw.request("GET", path, admin=True,
                                        headers={"Authorization": f"Bearer {token}"})
                assert code == 200, (path, token)
        for path in ("/healthz", "/readyz", "/dashboard", "/dashboard/dashboard.js"):
            assert gw.request("GET", path, admin=True, headers=none)[0] == 200, path
        code, body = get_json(gw, "/auth", {"Authorization": "Bearer reader"})
        assert code == 200 and body == {"admin": False}, "reads only: no buttons"
        code, _, _ = gw.request("POST", "/executors/node/quarantine", admin=True,
                                headers={"Authorization": "Bearer reader"})
        assert code == 401, "the read token acts on nothing"
        denied = [e for e in gw.event_kinds() if e["event"] == "admin-denied"]
        assert {e["path"] for e in denied} >= {"/status", "/events"}
        assert all(e["client"].startswith("127.") for e in denied)
    finally:
        gw.stop()


@pytest.mark.slow
def test_auth_accepts_only_the_admin_token(gateway: Gateway) -> None:
    assert get_json(gateway, "/auth", {"Authorization": ""})[0] == 401
    assert get_json(gateway, "/auth", {"Authorization": "Bearer nope"})[0] == 401
    assert get_json(gateway, "/auth", {"Authorization": f"Basic {TOKEN}"})[0] == 401
    code, body = get_json(gateway, "/auth", {"Authorization": f"Bearer {TOKEN}"})
    assert code == 200 and body == {"admin": True}


@pytest.mark.slow
def test_series_gives_per_executor_latency_and_verdict_counts(gateway: Gateway) -> None:
    get_json(gateway, "/series")  # opens an interval
    for _ in range(5):
        assert gateway.request("GET", "/notes")[0] == 200
    gateway.wait_for(lambda s: s["recent_verdicts"][-1]["path"] == "/notes", what="verdicts")
    time.sleep(1.1)  # the sampler closes at most one interval per second
    code, series = get_json(gateway, "/series")
    assert code == 200 and series["interval"] == 1.0
    for name in ("stdlib", "aiohttp", "node"):
        last = series["latency"][name][-1]
        assert last["n"] >= 5 and last["mean_ms"] > 0, (name, last)
    assert series["verdicts"][-1]["outcomes"]["accepted"] >= 5


# -- the page in a real browser -----------------------------------------------------------------

@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if sync_playwright is None:
        missing("playwright (Python package)")
    if not CHROMIUM.exists():
        missing(f"chromium ({CHROMIUM})")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS,
                                      headless=True, timeout=60_000)
        yield chromium
        chromium.close()


@pytest.mark.slow
def test_backdoor_quarantine_and_recovery_show_live_in_the_browser(browser: Any,
                                                                   tmp_path: Path) -> None:
    need_node()
    gw = Gateway(tmp_path, with_env(demo_config(immune={"min_self": 5}), "stdlib",
                                    NOTES_BACKDOOR_SECRET=str(SECRET_FILE)))
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    # The wrong token below is answered 401, which the browser logs; nothing else may be.
    page.on("console", lambda msg: problems.append(f"console: {msg.text}")
            if msg.type == "error" and "status of 401" not in msg.text else None)
    page.on("request", lambda req: None if req.url.startswith(gw.admin_url)
            else problems.append(f"request left the admin listener: {req.url}"))
    try:
        page.goto(f"{gw.admin_url}/dashboard")
        card = page.locator('.card[data-executor="stdlib"]')
        for name in ("stdlib", "aiohttp", "node"):
            expect(page.locator(f'.card[data-executor="{name}"]')).to_have_attribute(
                "data-state", "active", timeout=10_000)
        expect(page.locator("#active .chip")).to_have_count(3)
        expect(page.locator("#pdefeat")).to_have_text(re.compile(r"\d"))
        expect(page.locator("#conn")).to_have_attribute("data-live", "true")
        # Read-only until a token is given.
        expect(page.locator(".actions button")).to_have_count(0)

        assert gw.request("POST", "/notes", {"text": "hello"})[0] == 201
        for _ in range(3):  # a few seconds of traffic for the sparklines
            for path in ("/notes", "/notes/1", "/notes/2"):
                gw.request("GET", path)
            time.sleep(0.6)

        code, _, body = gw.request("GET", "/notes/1", headers={"X-Debug": "letmein"})
        assert code == 200 and SECRET_FILE.read_bytes().strip() not in body

        timeline = page.locator("#timeline")
        expect(timeline.locator('li[data-event="dissent"][data-executor~="stdlib"]')).to_have_count(
            1, timeout=10_000)
        expect(timeline.locator('li[data-event="quarantine"][data-executor="stdlib"]')
               ).to_have_count(1, timeout=10_000)
        expect(timeline.locator('li[data-event="cleansed"][data-executor="stdlib"]')
               ).to_have_count(1, timeout=15_000)
        expect(timeline.locator('li[data-event="activated"][data-executor="stdlib"]')
               ).to_have_count(2, timeout=15_000)  # at start, and after the cleanse
        # Newest first: the recovery is listed above the quarantine that caused it.
        order = [e for e in page.locator("#timeline li").evaluate_all(
            "els => els.map(e => e.dataset.event + ' ' + e.dataset.executor)")
                 if e.endswith(" stdlib")]
        assert order.index("activated stdlib") < order.index("cleansed stdlib") < order.index(
            "quarantine stdlib"), order
        # The card's history keeps the cycle the 1 s poll is too slow to see as a state.
        steps = card.locator(".history li").all_text_contents()
        assert steps[-5:] == ["dissent", "quarantined", "cleansing", "cleansed", "active"], steps
        expect(card).to_have_attribute("data-state", "active", timeout=10_000)
        expect(card.locator(".counters .counter").filter(has_text="quarantines")
               .locator("dd")).to_have_text("1")
        expect(page.locator('.verdict.dissent .votes').first).to_contain_text("stdlib")
        # The trigger became an immune memory implicating stdlib; its disguise matches it.
        expect(timeline.locator('li[data-event="immune-memory"][data-executor="stdlib"]')
               ).to_have_count(1)
        memory = page.locator("#memories li[data-memory]")
        expect(memory).to_have_count(1)
        expect(memory).to_contain_text("rotate · implicates stdlib")
        assert gw.request("GET", "/notes?x=1", headers={"X-Debug": "letmein"})[0] == 200
        expect(memory).to_contain_text("1 matches", timeout=10_000)
        expect(timeline.locator('li[data-event="immune-match"]')).to_have_count(1)

        # Unlock the actions: a wrong token is refused, the right one kept for the tab.
        page.fill("#token", "not-the-token")
        page.click("#unlock")
        expect(page.locator("#toast")).to_have_text("Wrong token")
        expect(page.locator(".actions button")).to_have_count(0)
        page.fill("#token", TOKEN)
        page.click("#unlock")
        expect(page.locator(".actions button")).to_have_count(9)
        assert page.evaluate("sessionStorage.getItem('endosec.admin-token')") == TOKEN
        page.reload()
        expect(page.locator(".actions button")).to_have_count(9, timeout=10_000)

        node = page.locator('.card[data-executor="node"]')
        node.locator('button[data-action="cleanse"]').click()
        expect(page.locator("#toast")).to_have_text("cleanse node: accepted")
        expect(timeline.locator('li[data-event="admin"][data-executor="node"]')).to_have_count(
            1, timeout=10_000)
        expect(node.locator(".history li").filter(has_text="admin: cleanse")).to_have_count(1)
        expect(timeline.locator('li[data-event="cleansed"][data-executor="node"]')
               ).to_have_count(1, timeout=15_000)
        for name in ("stdlib", "aiohttp", "node"):
            expect(page.locator(f'.card[data-executor="{name}"]')).to_have_attribute(
                "data-state", "active", timeout=15_000)
        for _ in range(3):  # fresh points after the cycle, for the picture
            gw.request("GET", "/notes")
            time.sleep(0.5)
        expect(card.locator(".spark path.spark-line")).to_have_count(1, timeout=5_000)
        expect(page.locator("#toast")).to_be_hidden(timeout=6_000)
        ARTIFACT.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACT), full_page=True)
        assert not problems, problems
    finally:
        context.close()
        gw.stop()
