"""End-to-end: examples/web, nginx + Apache httpd + lighttpd behind a real gateway, on loopback."""

from __future__ import annotations

import copy
import hashlib
import http.client
import os
import re
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.gatewayctl import Gateway, server_pid

pytestmark = pytest.mark.slow

WEB = Path(__file__).resolve().parents[1] / "examples" / "web"
SITE = WEB / "site"
SERVERS = {"nginx": "nginx", "apache": "/usr/sbin/apache2", "lighttpd": "lighttpd"}
ALL = sorted(SERVERS)

_missing = [binary for binary in SERVERS.values() if shutil.which(binary) is None]
if _missing:
    _why = (f"web servers missing: {', '.join(_missing)} "
            "(install them with scripts/install-system-deps.sh)")
    if os.environ.get("CI") == "true":
        pytest.fail(_why, pytrace=False)
    pytest.skip(_why, allow_module_level=True)

LARGE = hashlib.shake_256(b"endosec web example large.bin v1").digest(20 << 20)


def web_config() -> dict[str, Any]:
    """The shipped config on ephemeral ports, with {here} pinned to examples/web."""
    data = yaml.safe_load((WEB / "endosec.yaml").read_text())
    data["listen"] = "127.0.0.1:0"
    data["admin"]["listen"] = "127.0.0.1:0"
    data["gateway"]["recent_verdicts"] = 500
    for e in data["executors"]:
        e["argv"] = [a.replace("{here}", str(WEB)) for a in e["argv"]]
        e["cwd"] = str(WEB)
    return copy.deepcopy(data)


@pytest.fixture(scope="module")
def gw() -> Iterator[Gateway]:
    # Run as root, the servers' workers are nobody: the state dir must be traversable.
    base = Path(tempfile.mkdtemp(prefix="endosec-web-"))
    base.chmod(0o755)
    gateway = Gateway(base, web_config())
    try:
        yield gateway
    finally:
        err = gateway.stop()
        shutil.rmtree(base, ignore_errors=True)
        assert "Traceback" not in err, err[-3000:]


def scratch(gw: Gateway, name: str) -> Path:
    return gw.events.parent / "state" / "executors" / name


def state(gw: Gateway, name: str) -> dict[str, Any]:
    return gw.executor(name)


def all_voting(gw: Gateway) -> dict[str, Any]:
    return gw.wait_for(lambda s: sorted(s["active"]) == ALL
                       and all(e["running"] for e in s["executors"]), timeout=30,
                       what="all three servers voting")


def verdicts_after(gw: Gateway, start: int, count: int) -> list[dict[str, Any]]:
    """The next ``count`` verdicts once all are final (stragglers are judged after replies)."""
    status = gw.wait_for(lambda s: len(s["recent_verdicts"]) >= start + count, timeout=30,
                         what=f"{count} verdicts")
    return status["recent_verdicts"][start:start + count]


def last_modified(path: Path) -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(path.stat().st_mtime))


def test_three_servers_agree_on_every_shipped_path_and_method(gw: Gateway) -> None:
    all_voting(gw)
    start = len(gw.status()["recent_verdicts"])
    index = (SITE / "index.html").read_bytes()
    not_found = (SITE / "errors/404.html").read_bytes()
    forbidden = (SITE / "errors/403.html").read_bytes()
    lm = last_modified(SITE / "index.html")
    host = gw.url.removeprefix("http://")
    # (method, path, request headers, expected status, expected body or None, header checks)
    cases: list[tuple[str, str, dict[str, str], int, bytes | None, dict[str, str]]] = [
        ("GET", "/", {}, 200, index, {"content-type": "text/html; charset=utf-8",
                                     "last-modified": lm}),
        ("GET", "/index.html", {}, 200, index, {}),
        ("GET", "/data.json", {}, 200, (SITE / "data.json").read_bytes(),
         {"content-type": "application/json"}),
        ("GET", "/logo.png", {}, 200, (SITE / "logo.png").read_bytes(),
         {"content-type": "image/png"}),
        ("GET", "/style.css", {}, 200, (SITE / "style.css").read_bytes(), {}),
        ("GET", "/robots.txt", {}, 200, (SITE / "robots.txt").read_bytes(),
         {"content-type": "text/plain; charset=utf-8"}),
        ("GET", "/files/readme.txt", {}, 200, (SITE / "files/readme.txt").read_bytes(), {}),
        ("GET", "/health.json", {}, 200, (SITE / "health.json").read_bytes(), {}),
        ("GET", "/large.bin", {}, 200, LARGE,
         {"last-modified": "Tue, 14 Nov 2023 22:13:20 GMT"}),
        ("HEAD", "/index.html", {}, 200, b"", {"content-length": str(len(index))}),
        ("HEAD", "/large.bin", {}, 200, b"", {"content-length": str(len(LARGE))}),
        ("GET", "/large.bin", {"Range": "bytes=1000-1999"}, 206, LARGE[1000:2000],
         {"content-range": f"bytes 1000-1999/{len(LARGE)}"}),
        ("GET", "/large.bin", {"Range": "bytes=-16"}, 206, LARGE[-16:], {}),
        ("GET", "/index.html", {"Range": "bytes=10-"}, 206, index[10:], {}),
        ("GET", "/index.html", {"Range": "bytes=0-1,5-6"}, 200, index, {}),  # one range only
        ("GET", "/index.html", {"Range": "bytes=99999999-"}, 416, None, {}),  # unsatisfiable
        # The 416 page keeps its own type whatever was asked for (nginx used to send the
        # JSON's charset-less "text/html" for it).
        ("GET", "/data.json", {"Range": "bytes=99999999-"}, 416, None,
         {"content-type": "text/html; charset=utf-8"}),
        ("GET", "/index.html", {"Range": "bytes=0-9", "If-Range": lm}, 206, index[:10], {}),
        ("GET", "/index.html", {"Range": "bytes=0-9",
                                "If-Range": "Mon, 01 Jan 2001 00:00:00 GMT"}, 200, index, {}),
        # Conditional GETs are answered in full by all three (see docs/heterogeneity.md).
        ("GET", "/index.html", {"If-Modified-Since": lm}, 200, index, {}),
        ("GET", "/index.html", {"If-None-Match": '"anything"'}, 200, index, {}),
        ("GET", "/files/", {}, 403, forbidden, {}),
        ("GET", "/files", {}, 301, b"", {"location": f"http://{host}/files/"}),
        # Directories without their slash: nginx alone sends Content-Length: 0 to HEAD, which
        # the 301 exemption covers (curl -I used to quarantine nginx every time).
        ("HEAD", "/files", {}, 301, b"", {"location": f"http://{host}/files/"}),
        ("GET", "/errors", {}, 301, b"", {"location": f"http://{host}/errors/"}),
        ("HEAD", "/errors", {}, 301, b"", {"location": f"http://{host}/errors/"}),
        ("HEAD", "/files?x=1", {}, 301, b"", {"location": f"http://{host}/files/?x=1"}),
        # Range is sent with GET only: with HEAD, nginx and Apache answered 206, lighttpd 200.
        ("HEAD", "/index.html", {"Range": "bytes=0-9"}, 200, b"",
         {"content-length": str(len(index))}),
        # Paths not in normal form reach the servers normalised (each read them its own way).
        ("GET", "//index.html", {}, 200, index, {}),
        ("GET", "/%69ndex.html", {}, 200, index, {}),
        ("GET", "/files/../index.html", {}, 200, index, {}),
        ("GET", "/../index.html", {}, 200, index, {}),
        ("GET", "/%2e%2e/missing.html", {}, 404, not_found, {}),
        ("GET", "/missing.html", {}, 404, not_found, {}),
        ("HEAD", "/missing.html", {}, 404, b"", {}),
        ("GET", "/files/missing.txt", {}, 404, not_found, {}),
        # A file followed by more path: lighttpd used to serve the file (path info).
        ("GET", "/data.json/", {}, 404, not_found, {}),
        ("GET", "/files/readme.txt/x", {}, 404, not_found, {}),
        ("GET", "/.moved", {}, 404, not_found, {}),  # the redirect body is not served
    ]
    for method, path, headers, code, body, expect in cases:
        status, got, data = gw.request(method, path, headers=headers, timeout=30)
        assert status == code, (method, path, headers, status, data[:200])
        if body is not None:
            assert data == body, (method, path, headers, len(data))
        for name, value in expect.items():
            assert got.get(name) == value, (method, path, name, got)
        assert "etag" not in got
    verdicts = verdicts_after(gw, start, len(cases))
    for (method, path, headers, *_), verdict in zip(cases, verdicts, strict=True):
        assert verdict["outcome"] == "accepted", (method, path, headers, verdict)
        assert sorted(verdict["agreed"]) == ALL, (method, path, headers, verdict)
        assert not verdict["dissented"] and not verdict["failed"], (method, path, verdict)


def test_what_the_servers_disagree_on_is_refused_before_any_of_them_sees_it(gw: Gateway,
                                                                           ) -> None:
    all_voting(gw)
    start = len(gw.status()["recent_verdicts"])
    # (method, path, status): methods the site does not serve (nginx redirected OPTIONS on a
    # directory, Apache echoed TRACE), a malformed escape (nginx and Apache 400, lighttpd
    # 404), an escaped slash or NUL (Apache 404, the others the file or 400), a fragment
    # (Apache 400, the others cut it off).
    cases = [("POST", "/index.html", 405), ("OPTIONS", "/files", 405), ("OPTIONS", "*", 405),
             ("PROPFIND", "/files", 405), ("TRACE", "/", 405), ("DELETE", "/files", 405),
             ("GET", "/%zz", 400), ("GET", "/files%2freadme.txt", 404),
             ("GET", "/index.html%00", 404), ("GET", "/index.html#top", 400)]
    for method, path, code in cases:
        status, headers, _ = gw.request(method, path)
        assert status == code, (method, path, status)
        if code == 405:
            assert headers["allow"] == "GET, HEAD", (method, path, headers)
    status = gw.status()
    assert len(status["recent_verdicts"]) == start, "a refused request reached the servers"
    assert sorted(status["active"]) == ALL
    assert all(e["counters"]["quarantines"] == 0 for e in status["executors"]), status
    assert not [e for e in gw.event_kinds() if e["event"] in ("dissent", "quarantine")]


def test_a_tampered_file_is_outvoted_quarantined_and_cleansed(gw: Gateway) -> None:
    all_voting(gw)
    served = scratch(gw, "lighttpd") / "site" / "data.json"
    pristine = (SITE / "data.json").read_bytes()
    assert served.read_bytes() == pristine
    old_pid = state(gw, "lighttpd")["pid"]
    # An attacker with write access to one server's files defaces the served copy.
    served.write_bytes(pristine.replace(b"endosec web example", b"pwned by attacker!!"))
    start = len(gw.status()["recent_verdicts"])
    status, _, body = gw.request("GET", "/data.json")
    assert status == 200 and body == pristine
    (verdict,) = verdicts_after(gw, start, 1)
    assert verdict["dissented"] == ["lighttpd"] and sorted(verdict["agreed"]) == [
        "apache", "nginx"]
    st = gw.wait_for(lambda s: "lighttpd" in s["active"] and next(
        e for e in s["executors"] if e["name"] == "lighttpd")["pid"] not in (None, old_pid),
        what="lighttpd cleansed and voting again")
    counters = next(e for e in st["executors"] if e["name"] == "lighttpd")["counters"]
    assert counters["quarantines"] >= 1 and counters["cleanses"] >= 1
    assert served.read_bytes() == pristine  # the cleanse restored the pristine copy
    start = len(gw.status()["recent_verdicts"])
    assert gw.request("GET", "/data.json")[2] == pristine
    (verdict,) = verdicts_after(gw, start, 1)
    assert sorted(verdict["agreed"]) == ALL and not verdict["dissented"]


def test_an_injected_header_is_outvoted_and_the_config_restored(gw: Gateway) -> None:
    all_voting(gw)
    conf = scratch(gw, "nginx") / "nginx.conf"
    text = conf.read_text()
    assert re.search(r"listen 127\.0\.0\.1:(\d+);", text), text
    host, port = state(gw, "nginx")["address"].rsplit(":", 1)  # its segment's, as root
    old_pid = state(gw, "nginx")["pid"]
    # A compromised nginx configuration plants a session cookie on every response; reload.
    conf.write_text(text.replace("autoindex off;",
                                 'autoindex off;\n        add_header Set-Cookie '
                                 '"session=attacker; Path=/" always;'))
    os.kill(server_pid(gw, "nginx"), signal.SIGHUP)
    deadline = time.monotonic() + 10
    while True:
        conn = http.client.HTTPConnection(host, int(port), timeout=5)
        conn.request("GET", "/index.html")
        resp = conn.getresponse()
        resp.read()
        conn.close()
        if resp.getheader("set-cookie"):
            break
        assert time.monotonic() < deadline, "nginx did not reload the planted configuration"
        time.sleep(0.1)
    start = len(gw.status()["recent_verdicts"])
    status, headers, body = gw.request("GET", "/index.html")
    assert status == 200 and "set-cookie" not in headers
    assert body == (SITE / "index.html").read_bytes()
    (verdict,) = verdicts_after(gw, start, 1)
    assert verdict["dissented"] == ["nginx"], verdict
    gw.wait_for(lambda s: "nginx" in s["active"] and next(
        e for e in s["executors"] if e["name"] == "nginx")["pid"] not in (None, old_pid),
        what="nginx cleansed and voting again")
    assert "Set-Cookie" not in conf.read_text()
    start = len(gw.status()["recent_verdicts"])
    status, headers, _ = gw.request("GET", "/index.html")
    assert status == 200 and "set-cookie" not in headers
    (verdict,) = verdicts_after(gw, start, 1)
    assert sorted(verdict["agreed"]) == ALL and not verdict["dissented"]


def test_a_killed_server_is_restarted_and_votes_again(gw: Gateway) -> None:
    all_voting(gw)
    victim = state(gw, "apache")["pid"]
    os.kill(victim, signal.SIGKILL)
    # Two servers still make the floor: clients keep getting answers meanwhile.
    status, _, body = gw.request("GET", "/index.html")
    assert status == 200 and body == (SITE / "index.html").read_bytes()
    gw.wait_for(lambda s: "apache" in s["active"] and next(
        e for e in s["executors"] if e["name"] == "apache")["pid"] not in (None, victim)
        and next(e for e in s["executors"] if e["name"] == "apache")["running"],
        what="apache restarted and voting")
    start = len(gw.status()["recent_verdicts"])
    assert gw.request("GET", "/large.bin", timeout=30)[2] == LARGE
    (verdict,) = verdicts_after(gw, start, 1)
    assert sorted(verdict["agreed"]) == ALL and not verdict["dissented"]


def test_identical_requests_get_identical_bytes_whoever_answers(gw: Gateway) -> None:
    """Each pair of servers in turn answers alone (the third held by the operator): the same
    request gets the same bytes, but for the Date line, and nothing names a server."""
    requests = {
        "page": b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        "missing": b"GET /no-such-page HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        "range": b"GET /index.html HTTP/1.1\r\nHost: t\r\nRange: bytes=10-\r\n"
                 b"Connection: close\r\n\r\n",
        "unsatisfiable": b"GET /index.html HTTP/1.1\r\nHost: t\r\nRange: bytes=99999999-\r\n"
                         b"Connection: close\r\n\r\n",
        "head": b"HEAD /index.html HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    }
    seen: dict[str, set[bytes]] = {name: set() for name in requests}
    answered = 0
    for held in ALL:
        all_voting(gw)
        assert gw.request("POST", f"/executors/{held}/quarantine", admin=True)[0] == 202
        gw.wait_for(lambda s, h=held: h not in s["active"], what=f"{held} held")
        for _ in range(17):
            for name, raw in requests.items():
                reply = gw.raw(raw)
                assert reply.startswith(b"HTTP/1.1 "), reply[:200]
                seen[name].add(re.sub(rb"\r\ndate: [^\r]*", b"", reply))
                answered += 1
        assert gw.request("POST", f"/executors/{held}/cleanse", admin=True)[0] == 202
    all_voting(gw)
    assert answered >= 250
    for name, replies in seen.items():
        assert len(replies) == 1, (name, [r.split(b"\r\n\r\n")[0] for r in replies])
        head = next(iter(replies)).split(b"\r\n\r\n")[0].lower()
        for product in (b"\r\nserver:", b"\r\nx-powered-by:", b"\r\nvia:", b"\r\netag:"):
            assert product not in head, (name, head)
