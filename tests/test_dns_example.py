"""The mimic DNS example end to end: BIND 9, NSD and Knot DNS behind a real gateway process.

Needs the servers from scripts/install-system-deps.sh; without them the module is skipped
(a failure when CI=true).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
import yaml

from tests.gatewayctl import Gateway, server_pid

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "dns"
ZONE = EXAMPLE / "zones" / "example.test.zone"
SERVERS = {"named": "bind9", "nsd": "nsd", "knotd": "knot"}
SBIN = os.pathsep.join((os.environ.get("PATH", ""), "/usr/sbin", "/sbin"))
_missing = [f"{binary} (package {pkg})" for binary, pkg in SERVERS.items()
            if shutil.which(binary, path=SBIN) is None]
if _missing:
    _why = (f"DNS servers not installed: {', '.join(_missing)}; run "
            "scripts/install-system-deps.sh as root")
    if os.environ.get("CI") == "true":
        pytest.fail(_why, pytrace=False)
    pytest.skip(_why, allow_module_level=True)

WWW = {"192.0.2.10", "192.0.2.11"}


class DnsGateway(Gateway):
    """A running ``endosec run`` for the DNS example, with helpers for DNS queries."""

    def __init__(self, tmp: Path) -> None:
        data = yaml.safe_load((EXAMPLE / "endosec.yaml").read_text().replace("{here}",
                                                                              str(EXAMPLE)))
        data["listen"] = "127.0.0.1:0"
        data["admin"]["listen"] = "127.0.0.1:0"
        for e in data["executors"]:
            e["health"]["interval"] = 0.5
        super().__init__(tmp, data, base=EXAMPLE)

    def ask(self, name: str, rdtype: str, *, tcp: bool = False, **kw: Any) -> dns.message.Message:
        kw.setdefault("use_edns", 0)
        query = dns.message.make_query(name, rdtype, **kw)
        send = dns.query.tcp if tcp else dns.query.udp
        host, port = self.address
        return send(query, host, port=port, timeout=5)

    def raw_udp(self, data: bytes, timeout: float = 1.0) -> bytes | None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(timeout)
            sock.sendto(data, self.address)
            try:
                return sock.recv(65535)
            except TimeoutError:
                return None

    def all_active(self) -> dict[str, Any]:
        return self.wait_for(lambda s: len(s["active"]) == 3 and all(
            e["state"] == "active" and e["running"] for e in s["executors"]), what="all active")


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsGateway]:
    gateway = DnsGateway(tmp_path_factory.mktemp("dns"))
    try:
        gateway.all_active()
        yield gateway
    finally:
        gateway.stop()


def addresses(m: dns.message.Message) -> set[str]:
    return {rd.to_text() for rrset in m.answer if rrset.rdtype in (1, 28) for rd in rrset}


def texts(m: dns.message.Message) -> list[str]:
    return [rd.to_text() for rrset in m.answer for rd in rrset]


EXPECTED: list[tuple[str, str, int, Callable[[dns.message.Message], bool]]] = [
    ("example.test.", "SOA", 0, lambda m: "2024010101" in texts(m)[0]),
    ("example.test.", "NS", 0, lambda m: set(texts(m)) == {"ns1.example.test.",
                                                          "ns2.example.test."}),
    ("example.test.", "MX", 0, lambda m: set(texts(m)) == {"10 mail.example.test.",
                                                          "20 mail2.example.test."}),
    ("example.test.", "TXT", 0, lambda m: texts(m) == ['"v=spf1 mx -all"']),
    ("www.example.test.", "A", 0, lambda m: addresses(m) == WWW),
    ("WwW.Example.TEST.", "A", 0, lambda m: addresses(m) == WWW),
    ("www.example.test.", "AAAA", 0, lambda m: addresses(m) == {"2001:db8::10"}),
    ("alias.example.test.", "A", 0,
     lambda m: addresses(m) == WWW and len(m.answer) == 3),  # alias -> alias2 -> www
    ("ext.example.test.", "A", 0, lambda m: texts(m) == ["www.example.net."]),
    ("x.wild.example.test.", "A", 0, lambda m: addresses(m) == {"192.0.2.99"}),
    ("a.b.wild.example.test.", "TXT", 0, lambda m: texts(m) == ['"wildcard"']),
    ("host.sub.example.test.", "A", 0,  # a referral: no AA, NS and glue
     lambda m: not m.answer and not m.flags & dns.flags.AA
     and {rd.to_text() for r in m.authority for rd in r} == {"ns1.sub.example.test.",
                                                             "ns.elsewhere.net."}
     and {rd.to_text() for r in m.additional for rd in r} == {"192.0.2.153"}),
    ("nope.example.test.", "A", dns.rcode.NXDOMAIN,
     lambda m: not m.answer and m.authority[0].rdtype == dns.rdatatype.SOA),
    ("www.example.test.", "MX", 0, lambda m: not m.answer and len(m.authority) == 1),
    ("example.com.", "A", dns.rcode.REFUSED, lambda m: not m.answer),
]


def test_all_servers_agree_on_the_zone_over_udp_and_tcp(gw: DnsGateway) -> None:
    for tcp in (False, True):
        for name, rdtype, rcode, check in EXPECTED:
            m = gw.ask(name, rdtype, tcp=tcp)
            assert m.rcode() == rcode, (name, rdtype, tcp, m)
            assert check(m), (name, rdtype, tcp, m.to_text())
            assert m.question[0].name.to_text() == name
            assert m.options == ()  # no executor's cookie or NSID reaches the client
    # The reply goes out on the first two agreeing answers; the third is judged just after.
    gw.wait_for(lambda s: all(
        v["outcome"] == "accepted" and sorted(v["agreed"]) == ["bind", "knot", "nsd"]
        for v in s["recent_verdicts"][-2 * len(EXPECTED):]), "unanimous verdicts", timeout=5)
    assert not [e for e in gw.event_kinds() if e["event"] == "dissent"]


def test_large_answer_truncates_over_udp_and_is_whole_over_tcp(gw: DnsGateway) -> None:
    for edns in (0, False):
        m = gw.ask("big.example.test.", "TXT", use_edns=edns, payload=1232)
        assert m.flags & dns.flags.TC and not m.answer
    m = gw.ask("big.example.test.", "TXT", tcp=True)
    assert not m.flags & dns.flags.TC and len(m.answer[0]) == 40
    # Each executor truncated its UDP answer and was asked again over TCP: all three were
    # judged on the whole answer, and agreed.
    gw.wait_for(lambda s: [(v["path"], sorted(v["agreed"])) for v in s["recent_verdicts"][-3:]]
                == [("big.example.test.", ["bind", "knot", "nsd"])] * 3,
                "unanimous verdicts on the whole answer", timeout=5)


def test_malformed_queries_are_answered_by_the_gateway_or_dropped(gw: DnsGateway) -> None:
    before = len(gw.status()["recent_verdicts"])
    notify = dns.message.make_query("example.test.", "SOA")
    notify.set_opcode(dns.opcode.NOTIFY)
    answer = gw.raw_udp(notify.to_wire())
    assert answer is not None and dns.message.from_wire(answer).rcode() == dns.rcode.NOTIMP
    any_query = gw.ask("example.test.", "ANY")
    assert any_query.rcode() == dns.rcode.REFUSED
    response = dns.message.make_response(dns.message.make_query("example.test.", "A"))
    assert gw.raw_udp(response.to_wire(), timeout=0.5) is None
    garbage = gw.raw_udp(b"\x12\x34" + b"\x00\x00\x00\x02" + b"\xff" * 20)
    assert garbage is not None and dns.message.from_wire(garbage).rcode() == dns.rcode.FORMERR
    assert gw.raw_udp(b"\x00", timeout=0.5) is None
    assert len(gw.status()["recent_verdicts"]) == before  # nothing reached an executor


def test_questions_the_servers_answer_differently_are_refused_by_the_gateway(gw: DnsGateway,
                                                                            ) -> None:
    gw.all_active()
    before = len(gw.status()["recent_verdicts"])
    nul = dns.name.Name([b"www\x00", b"example", b"test", b""])
    questions: list[tuple[dns.name.Name | str, str]] = [
        ("www.example.test.", "TYPE0"),  # Knot NOTIMP, BIND and NSD NOERROR
        ("www.example.test.", "TYPE200"),  # BIND FORMERR, NSD and Knot NOERROR
        (nul, "A"),  # a fourth server (PowerDNS) answers SERVFAIL
        (dns.name.Name([b"\x00", b"wild", b"example", b"test", b""]), "A"),
    ]
    for tcp in (False, True):
        for name, rdtype in questions:
            query = dns.message.make_query(name, rdtype, use_edns=0)
            host, port = gw.address
            send = dns.query.tcp if tcp else dns.query.udp
            answer = send(query, host, port=port, timeout=5)
            assert answer.rcode() == dns.rcode.REFUSED, (name, rdtype, tcp, answer)
            assert answer.question == query.question and not answer.answer
    status = gw.status()
    assert len(status["recent_verdicts"]) == before, "a refused query reached the servers"
    assert all(e["counters"]["quarantines"] == 0 and e["state"] == "active"
               for e in status["executors"]), status["executors"]
    assert not [e for e in gw.event_kinds() if e["event"] in ("dissent", "quarantine")]


def test_divergent_questions_from_many_udp_sources_are_no_lever(gw: DnsGateway) -> None:
    """The benign-divergence questions at a high rate over UDP, each from another address in
    127.0.0.0/8 (as spoofed sources would be), with a benign client alongside: it is answered
    every time and nobody is quarantined."""
    gw.all_active()
    host, port = gw.address
    nul = dns.name.Name([b"www\x00", b"example", b"test", b""])
    divergent = [("www.example.test.", "TYPE0"), ("www.example.test.", "TYPE200"),
                 (nul, "A"), ("www.example.test.", "ANY")]
    asked = answered = 0
    for i in range(1200):
        name, rdtype = divergent[i % len(divergent)]
        source = f"127.{1 + i // 250 % 200}.{i % 250 + 1}.{1 + i % 7}"
        with contextlib.suppress(dns.exception.Timeout):
            dns.query.udp(dns.message.make_query(name, rdtype, use_edns=0), host, port=port,
                          timeout=0.5, source=source)
        if i % 4 == 0:
            asked += 1
            with contextlib.suppress(dns.exception.Timeout):
                answered += addresses(gw.ask("www.example.test.", "A")) == WWW
    assert answered / asked >= 0.999, (answered, asked)
    status = gw.status()
    assert all(e["counters"]["quarantines"] == 0 and e["state"] == "active"
               for e in status["executors"]), status["executors"]
    assert len(status["active"]) == 3


def _tamper(gw: DnsGateway, name: str) -> None:
    zone = gw.state / "executors" / name / "zones" / "example.test.zone"
    text = zone.read_text()
    assert "192.0.2.10\n" in text
    zone.write_text(text.replace("192.0.2.10\n", "203.0.113.66\n"))
    os.kill(server_pid(gw, name), signal.SIGHUP)  # reload, as the attacker would


def test_tampered_record_is_outvoted_and_the_server_cleansed(gw: DnsGateway) -> None:
    gw.all_active()
    pid = gw.executor("nsd")["pid"]
    _tamper(gw, "nsd")
    deadline = time.monotonic() + 10
    while not [e for e in gw.event_kinds() if e["event"] == "dissent"]:
        assert time.monotonic() < deadline, "the tampered record never reached the vote"
        m = gw.ask("www.example.test.", "A")
        assert addresses(m) == WWW  # the client never sees the forged address
        time.sleep(0.1)
    dissent = next(e for e in gw.event_kinds() if e["event"] == "dissent")
    assert dissent["dissented"] == ["nsd"] and sorted(dissent["agreed"]) == ["bind", "knot"]
    kinds = [e["event"] for e in gw.event_kinds() if e.get("executor") == "nsd"]
    assert "quarantine" in kinds
    gw.wait_for(lambda s: any(e["name"] == "nsd" and e["counters"]["cleanses"] >= 1
                              and e["state"] == "active" for e in s["executors"]),
                "nsd cleansed and active again")
    assert gw.executor("nsd")["pid"] != pid
    scratch = gw.state / "executors" / "nsd" / "zones" / "example.test.zone"
    assert scratch.read_text() == ZONE.read_text()  # the pristine copy is back
    assert addresses(gw.ask("www.example.test.", "A", tcp=True)) == WWW
    gw.wait_for(lambda s: "nsd" in s["recent_verdicts"][-1]["agreed"], "nsd agreeing",
                timeout=5)


def test_killed_server_is_restarted_and_votes_again(gw: DnsGateway) -> None:
    gw.all_active()
    pid = gw.executor("knot")["pid"]
    os.kill(server_pid(gw, "knot"), signal.SIGKILL)
    assert addresses(gw.ask("www.example.test.", "A")) == WWW  # two of three still agree
    gw.wait_for(lambda s: any(e["name"] == "knot" and e["pid"] != pid and e["running"]
                              and e["state"] == "active" for e in s["executors"]),
                "knot restarted and active")
    assert addresses(gw.ask("www.example.test.", "A", tcp=True)) == WWW
    gw.wait_for(lambda s: "knot" in s["recent_verdicts"][-1]["agreed"], "knot agreeing",
                timeout=5)


def test_without_a_quorum_clients_get_servfail(gw: DnsGateway) -> None:
    gw.all_active()
    for name in ("bind", "knot"):
        os.kill(server_pid(gw, name), signal.SIGKILL)
    m = gw.ask("www.example.test.", "A")
    assert m.rcode() == dns.rcode.SERVFAIL and not m.answer
    deadline = time.monotonic() + 5  # the data plane reports verdicts after answering
    while not any(e["event"] in ("no-quorum", "all-failed") for e in gw.event_kinds()):
        assert time.monotonic() < deadline, "no no-quorum event"
        time.sleep(0.05)
    status = gw.all_active()  # both are cleansed and restarted
    assert len(status["active"]) == 3
    assert addresses(gw.ask("www.example.test.", "A")) == WWW


def test_tcp_messages_can_be_pipelined_on_one_connection(gw: DnsGateway) -> None:
    gw.all_active()
    queries = [dns.message.make_query(n, "A", use_edns=0)
               for n in ("www.example.test.", "mail.example.test.")]
    with socket.create_connection(gw.address, timeout=5) as sock:
        sock.sendall(b"".join(struct.pack("!H", len(w)) + w
                              for w in (q.to_wire() for q in queries)))
        replies = []
        for _ in queries:
            size = struct.unpack("!H", _read(sock, 2))[0]
            replies.append(dns.message.from_wire(_read(sock, size)))
    assert [r.id for r in replies] == [q.id for q in queries]
    assert addresses(replies[1]) == {"192.0.2.25"}


def _read(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, "connection closed early"
        data += chunk
    return data
