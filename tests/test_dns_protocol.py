"""The DNS boundary without servers: query validation, canonical replies, client encoding.

These cases specify the native data plane's DNS module (rust/dataplane/src/dns), reached
through `endosec._native`; executors' replies are played by dnspython.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import struct
from collections.abc import AsyncIterator, Sequence
from typing import cast

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.tsigkeyring
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from endosec import _native
from endosec._native import (
    DnsOutput,
    DnsQuery,
    DnsRefusal,
    DnsReplyError,
    DnsSettings,
    dns_encode_reply,
    dns_parse_query,
    dns_parse_reply,
    dns_servfail,
)
from endosec.config import Config, DnsConfig
from endosec.gateway.snapshot import Placement, build_snapshot

SETTINGS = DnsSettings()
REFERRALS = DnsSettings(additional="referrals")
ERROR_RCODES = {dns.rcode.FORMERR, dns.rcode.NOTIMP, dns.rcode.REFUSED, dns.rcode.BADVERS}


def wire_query(name: str = "www.example.test.", rdtype: str = "A", **kw: object) -> bytes:
    kw.setdefault("use_edns", 0)
    return dns.message.make_query(name, rdtype, **kw).to_wire()  # type: ignore[arg-type]


def query(name: str = "www.example.test.", rdtype: str = "A", **kw: object) -> DnsQuery:
    parsed = dns_parse_query(wire_query(name, rdtype, **kw), SETTINGS)
    assert isinstance(parsed, DnsQuery), parsed.reason
    return parsed


def reply(q: DnsQuery, answer: Sequence[str] = (), *, authority: Sequence[str] = (),
          additional: Sequence[str] = (), aa: bool = True, rcode: int = dns.rcode.NOERROR,
          options: list[dns.edns.Option] | None = None, qid: int | None = None,
          ) -> dns.message.Message:
    """What an executor would send for ``q`` (via its upstream wire)."""
    m = dns.message.make_response(dns.message.from_wire(q.upstream_wire(SETTINGS)))
    if qid is not None:
        m.id = qid
    if aa:
        m.flags |= dns.flags.AA
    m.set_rcode(dns.rcode.Rcode.make(rcode))
    if options:
        m.use_edns(0, 0, 1232, options=options)
    for section, lines in ((m.answer, answer), (m.authority, authority),
                           (m.additional, additional)):
        for line in lines:
            owner, ttl, rdtype, rdata = line.split(None, 3)
            section.append(dns.rrset.from_text(owner, int(ttl), "IN", rdtype, rdata))
    return m


def rr(owner: str, ttl: int, rdtype: str, rdata: str) -> str:
    return f"{owner} {ttl} {rdtype} {rdata}"


def output(name: str, q: DnsQuery, message: dns.message.Message,
           settings: DnsSettings = SETTINGS) -> DnsOutput:
    return dns_parse_reply(message.to_wire(), q).output(name, settings)


def encode(q: DnsQuery, winner: dns.message.Message, settings: DnsSettings = SETTINGS, *,
           max_size: int) -> dns.message.Message:
    wire = dns_encode_reply(q, dns_parse_reply(winner.to_wire(), q), settings, max_size)
    assert len(wire) <= max_size
    return dns.message.from_wire(wire)


WWW = [rr("www.example.test.", 3600, "A", "192.0.2.10"),
       rr("www.example.test.", 3600, "A", "192.0.2.11")]


# -- query validation -----------------------------------------------------------------------

def test_a_plain_query_is_forwarded_normalised() -> None:
    cookie = dns.edns.CookieOption(b"clientck", b"")
    nsid = dns.edns.GenericOption(dns.edns.OptionType.NSID, b"")
    raw = wire_query("WwW.Example.TEST.", "AAAA", id=4242, payload=4096, want_dnssec=True,
                     options=[cookie, nsid])
    q = dns_parse_query(raw, SETTINGS)
    assert isinstance(q, DnsQuery)
    assert (q.id, q.qtype, q.edns, q.payload, q.dnssec_ok) == (4242, 28, True, 4096, True)
    assert q.qname == "WwW.Example.TEST."
    assert (q.label, q.key) == ("AAAA", "www.example.test.")
    up = dns.message.from_wire(q.upstream_wire(SETTINGS))
    assert up.id == 4242 and up.options == () and up.flags & dns.flags.RD
    assert up.ednsflags & dns.flags.DO and up.payload == SETTINGS.udp_payload
    assert up.question[0].name.to_text() == "WwW.Example.TEST."


def test_query_without_edns_stays_without() -> None:
    q = query(use_edns=False)
    assert not q.edns and q.payload == 512 and q.udp_limit(SETTINGS) == 512
    assert dns.message.from_wire(q.upstream_wire(SETTINGS)).edns == -1


def test_udp_limit_is_the_smaller_of_client_and_gateway() -> None:
    assert query(payload=4096).udp_limit(SETTINGS) == 1232
    assert query(payload=800).udp_limit(SETTINGS) == 800
    assert query(payload=100).udp_limit(SETTINGS) == 512


def refused(raw: bytes, settings: DnsSettings = SETTINGS,
            ) -> tuple[DnsRefusal, dns.message.Message | None]:
    refusal = dns_parse_query(raw, settings)
    assert isinstance(refusal, DnsRefusal)
    out = refusal.reply(SETTINGS)
    assert (out is None) == (refusal.rcode is None)
    answer = None if out is None else dns.message.from_wire(out)
    assert refusal.label == ("dropped" if answer is None else dns.rcode.to_text(answer.rcode()))
    return refusal, answer


@pytest.mark.parametrize("raw", [b"", b"\x12", b"\x00" * 11])
def test_runts_are_dropped(raw: bytes) -> None:
    error, answer = refused(raw)
    assert error.rcode is None and answer is None


def test_responses_are_dropped_never_answered() -> None:
    m = dns.message.make_response(dns.message.make_query("www.example.test.", "A"))
    error, answer = refused(m.to_wire())
    assert answer is None and "response" in error.reason


def test_other_opcodes_get_notimp() -> None:
    m = dns.message.make_query("example.test.", "SOA")
    m.set_opcode(dns.opcode.NOTIFY)
    m.id = 777
    _, answer = refused(m.to_wire())
    assert answer is not None and answer.rcode() == dns.rcode.NOTIMP and answer.id == 777
    assert answer.opcode() == dns.opcode.NOTIFY and answer.flags & dns.flags.QR


def test_update_gets_notimp() -> None:
    m = dns.message.make_query("example.test.", "SOA")
    m.set_opcode(dns.opcode.UPDATE)
    _, answer = refused(m.to_wire())
    assert answer is not None and answer.rcode() == dns.rcode.NOTIMP


def with_counts(raw: bytes, qd: int, an: int = 0, ns: int = 0, ar: int | None = None) -> bytes:
    head = list(struct.unpack("!HHHHHH", raw[:12]))
    head[2:5] = [qd, an, ns]
    if ar is not None:
        head[5] = ar
    return struct.pack("!HHHHHH", *head) + raw[12:]


def test_question_counts_other_than_one_get_formerr() -> None:
    base = wire_query(use_edns=False)
    header, question = base[:12], base[12:]
    for raw in (with_counts(header, 0), with_counts(header + question * 2, 2)):
        _, answer = refused(raw)
        assert answer is not None and answer.rcode() == dns.rcode.FORMERR
        assert answer.id == struct.unpack("!H", base[:2])[0]


def test_records_in_answer_or_authority_get_formerr() -> None:
    m = dns.message.make_query("www.example.test.", "A")
    m.answer.append(dns.rrset.from_text("www.example.test.", 60, "IN", "A", "192.0.2.1"))
    _, answer = refused(m.to_wire())
    assert answer is not None and answer.rcode() == dns.rcode.FORMERR
    assert answer.question[0].name == dns.name.from_text("www.example.test.")


def test_extra_additional_records_get_formerr() -> None:
    m = dns.message.make_query("www.example.test.", "A")
    m.additional.append(dns.rrset.from_text("x.example.test.", 60, "IN", "A", "192.0.2.1"))
    _, answer = refused(m.to_wire())
    assert answer is not None and answer.rcode() == dns.rcode.FORMERR


@pytest.mark.parametrize("rdtype", ["ANY", "AXFR", "IXFR", "MAILA", "MAILB"])
def test_transfers_and_any_are_refused(rdtype: str) -> None:
    _, answer = refused(wire_query("example.test.", rdtype))
    assert answer is not None and answer.rcode() == dns.rcode.REFUSED
    assert answer.edns == 0  # the client used EDNS, so the refusal does too


@pytest.mark.parametrize("rdtype", ["TYPE0", "TYPE128", "TYPE200", "TYPE248"])
def test_types_servers_answer_differently_are_refused_with_the_question(rdtype: str) -> None:
    # Type 0: Knot NOTIMP, BIND and NSD NOERROR; 128-248: BIND FORMERR, NSD and Knot NOERROR.
    _, answer = refused(wire_query("www.example.test.", rdtype, id=99))
    assert answer is not None and answer.rcode() == dns.rcode.REFUSED and answer.id == 99
    assert answer.question[0].rdtype == dns.rdatatype.from_text(rdtype)
    assert answer.question[0].name == dns.name.from_text("www.example.test.")


@pytest.mark.parametrize("label", [b"\x00", b"a\x00b", b"www\x00"])
def test_names_with_a_nul_octet_are_refused(label: bytes) -> None:
    name = dns.name.Name([label, b"example", b"test", b""])
    _, answer = refused(dns.message.make_query(name, "A", use_edns=0).to_wire())
    assert answer is not None and answer.rcode() == dns.rcode.REFUSED
    assert answer.question[0].name == name


def test_refuse_types_refuses_the_listed_types_only() -> None:
    settings = DnsSettings(refuse_types=[10, 65534])
    for rdtype in ("NULL", "TYPE65534"):
        _, answer = refused(wire_query("www.example.test.", rdtype), settings)
        assert answer is not None and answer.rcode() == dns.rcode.REFUSED
        assert isinstance(dns_parse_query(wire_query("www.example.test.", rdtype), SETTINGS),
                          DnsQuery)
    assert isinstance(dns_parse_query(wire_query(), settings), DnsQuery)


def test_refuse_types_are_read_as_numbers() -> None:
    config = DnsConfig.model_validate({"refuse_types": ["null", 65534, "TYPE99", "ANY", 0]})
    assert config.refuse_types == (10, 65534, 99, 255, 0)


@pytest.mark.parametrize(("value", "message"), [
    (["NOPE"], "'NOPE' is not a DNS type"), ([65536], "65536 is not a DNS type"),
    ([-1], "-1 is not a DNS type"), ([True], "True is not a DNS type"),
    ([1.5], "1.5 is not a DNS type"), ("ANY", "a list of DNS types"),
])
def test_bad_refuse_types_name_the_field(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as failed:
        DnsConfig.model_validate({"refuse_types": value})
    assert "refuse_types" in str(failed.value)


@pytest.mark.parametrize("rdtype", ["OPT", "TSIG", "TKEY"])
def test_meta_types_in_a_question_get_formerr(rdtype: str) -> None:
    _, answer = refused(wire_query("example.test.", rdtype, use_edns=False))
    assert answer is not None and answer.rcode() == dns.rcode.FORMERR


def test_other_classes_are_refused() -> None:
    _, answer = refused(wire_query("version.bind.", "TXT", rdclass="CH"))
    assert answer is not None and answer.rcode() == dns.rcode.REFUSED


def test_edns_version_one_gets_badvers() -> None:
    _, answer = refused(wire_query(use_edns=1))
    assert answer is not None and answer.rcode() == dns.rcode.BADVERS and answer.edns == 0


def test_signed_queries_are_refused() -> None:
    m = dns.message.make_query("www.example.test.", "A")
    m.use_tsig(dns.tsigkeyring.from_text({"k.": "c2VjcmV0c2VjcmV0"}), keyname="k.")
    _, answer = refused(m.to_wire())
    assert answer is not None and answer.rcode() == dns.rcode.REFUSED


def test_garbage_after_a_question_gets_formerr_with_the_question() -> None:
    raw = with_counts(wire_query(use_edns=False), 1, ar=1) + b"\xff\xff"
    _, answer = refused(raw)
    assert answer is not None and answer.rcode() == dns.rcode.FORMERR
    assert len(answer.question) == 1


# -- replies and their canonical form --------------------------------------------------------

def test_reply_must_answer_the_query() -> None:
    q = query()
    assert output("a", q, reply(q, WWW)).raw.count(b"\n") == 1  # two records
    with pytest.raises(DnsReplyError):
        dns_parse_reply(reply(q, WWW, qid=(q.id + 1) % 65536).to_wire(), q)
    other = reply(query("mail.example.test."), WWW)
    other.id = q.id
    with pytest.raises(DnsReplyError):
        dns_parse_reply(other.to_wire(), q)
    with pytest.raises(DnsReplyError):
        dns_parse_reply(b"\x00\x01garbage", q)
    with pytest.raises(DnsReplyError):  # a query echoed back is not a reply
        dns_parse_reply(q.upstream_wire(SETTINGS), q)
    signed = reply(q, WWW)
    signed.use_tsig(dns.tsigkeyring.from_text({"k.": "c2VjcmV0c2VjcmV0"}), keyname="k.")
    with pytest.raises(DnsReplyError):
        dns_parse_reply(signed.to_wire(), q)
    with pytest.raises(DnsReplyError):
        dns_parse_reply(reply(q, WWW).to_wire() + b"\x00", q)


def test_record_order_ttl_within_tolerance_and_name_case_agree() -> None:
    q = query()
    five = DnsSettings(ttl_tolerance=5)
    a = output("a", q, reply(q, WWW), five)
    b = output("b", q, reply(q, [rr("WWW.example.TEST.", 3597, "A", "192.0.2.11"),
                                 rr("www.example.test.", 3597, "A", "192.0.2.10")]), five)
    assert a.raw != b.raw and a.key == b.key and a.digest == b.digest and a.agrees_with(b)
    far = output("c", q, reply(q, [w.replace("3600", "3590") for w in WWW]), five)
    assert not a.agrees_with(far)


def test_masked_ttls_never_disagree_but_exact_ttls_do() -> None:
    q = query()
    long, short = reply(q, WWW), reply(q, [w.replace("3600", "60") for w in WWW])
    masked = DnsSettings(ttl="mask")
    assert output("a", q, long, masked).agrees_with(output("b", q, short, masked))
    assert not output("a", q, long).agrees_with(output("b", q, short))


def test_edns_options_do_not_matter() -> None:
    q = query()
    plain = output("a", q, reply(q, WWW))
    decorated = reply(q, WWW, options=[
        dns.edns.CookieOption(b"clientck", b"servercookie0001"),
        dns.edns.GenericOption(dns.edns.OptionType.NSID, b"knot-1"),
        dns.edns.EDEOption(dns.edns.EDECode.OTHER, "hello")])
    assert output("b", q, decorated).raw == plain.raw
    assert plain.agrees_with(output("b", q, decorated))


def test_records_gather_into_rrsets_as_a_resolver_reads_them() -> None:
    q = query()
    twice = reply(q, [*WWW, rr("WWW.example.test.", 60, "A", "192.0.2.10")])
    merged = reply(q, [w.replace("3600", "60") for w in WWW])
    assert output("a", q, twice).raw == output("b", q, merged).raw  # one RRset, smallest TTL
    c = query("alias.example.test.")
    cnames = [rr("alias.example.test.", 60, "CNAME", f"{t}.example.test.") for t in ("old", "new")]
    assert output("a", c, reply(c, cnames)).raw == output("b", c, reply(c, cnames[1:])).raw


def test_a_changed_rdata_or_a_missing_record_disagrees() -> None:
    q = query()
    good = output("a", q, reply(q, WWW))
    changed = output("b", q, reply(q, [WWW[0], rr("www.example.test.", 3600, "A",
                                                  "203.0.113.66")]))
    missing = output("c", q, reply(q, WWW[:1]))
    assert not good.agrees_with(changed) and not good.agrees_with(missing)


def test_a_flipped_aa_or_rcode_disagrees() -> None:
    q = query()
    good = output("a", q, reply(q, WWW))
    assert not good.agrees_with(output("b", q, reply(q, WWW, aa=False)))
    assert not good.agrees_with(output("c", q, reply(q, WWW, rcode=dns.rcode.NXDOMAIN)))
    assert good.head == b"NOERROR\tAA RD\tedns"
    assert output("d", q, reply(q, WWW, aa=False)).head == b"NOERROR\tRD\tedns"
    bare = query(use_edns=False)
    assert output("e", bare, reply(bare, WWW)).head == b"NOERROR\tAA RD\tno-edns"


def test_rdata_names_compare_case_insensitively_but_txt_does_not() -> None:
    q = query("example.test.", "MX")
    a = output("a", q, reply(q, [rr("example.test.", 60, "MX", "10 mail.example.test.")]))
    b = output("b", q, reply(q, [rr("example.test.", 60, "MX", "10 MAIL.example.test.")]))
    assert a.raw == b.raw
    t = query("info.example.test.", "TXT")
    x = output("a", t, reply(t, [rr("info.example.test.", 60, "TXT", '"Hello"')]))
    y = output("b", t, reply(t, [rr("info.example.test.", 60, "TXT", '"hello"')]))
    assert not x.agrees_with(y)


def test_additional_data_counts_only_in_referrals_when_configured() -> None:
    q = query("example.test.", "MX")
    mx = [rr("example.test.", 3600, "MX", "10 mail.example.test.")]
    bare = reply(q, mx)
    extra = reply(q, mx, additional=[rr("mail.example.test.", 3600, "A", "192.0.2.25")])
    assert output("a", q, bare, REFERRALS).agrees_with(output("b", q, extra, REFERRALS))
    assert not output("a", q, bare).agrees_with(output("b", q, extra))
    # ...and what is not voted on is not sent
    assert not encode(q, extra, REFERRALS, max_size=65535).additional
    assert encode(q, extra, max_size=65535).additional
    r = query("host.sub.example.test.")
    ns = [rr("sub.example.test.", 3600, "NS", "ns1.sub.example.test.")]
    glue = reply(r, authority=ns, aa=False,
                 additional=[rr("ns1.sub.example.test.", 3600, "A", "192.0.2.153")])
    forged = reply(r, authority=ns, aa=False,
                   additional=[rr("ns1.sub.example.test.", 3600, "A", "203.0.113.1")])
    assert not output("a", r, glue, REFERRALS).agrees_with(output("b", r, forged, REFERRALS))
    assert encode(r, glue, REFERRALS, max_size=65535).additional  # glue is sent


# -- what the client gets ----------------------------------------------------------------------

def test_reply_carries_the_clients_id_and_question() -> None:
    q = query("WwW.Example.TEST.", id=31337)
    executor = query("www.example.test.", id=31337)  # an executor echoing another spelling
    winner = reply(executor, WWW,
                   options=[dns.edns.GenericOption(dns.edns.OptionType.NSID, b"x")])
    out = encode(q, winner, max_size=512)
    assert out.id == 31337 and out.question[0].name.to_text() == "WwW.Example.TEST."
    assert out.flags & dns.flags.AA and out.flags & dns.flags.RD and out.flags & dns.flags.QR
    assert out.options == () and len(out.answer[0]) == 2


def test_large_answer_over_udp_is_truncated_and_whole_over_tcp() -> None:
    q = query("big.example.test.", "TXT", use_edns=False)
    big = reply(q, [rr("big.example.test.", 3600, "TXT", f'"record {i:02d} ' + "x" * 90 + '"')
                    for i in range(40)])
    small = encode(q, big, max_size=q.udp_limit(SETTINGS))
    assert small.flags & dns.flags.TC and not small.answer and small.edns == -1
    assert small.question[0].name.to_text() == "big.example.test."
    full = encode(q, big, max_size=65535)
    assert not full.flags & dns.flags.TC and len(full.answer[0]) == 40


def test_extended_rcode_without_edns_becomes_servfail() -> None:
    q = query(use_edns=False)
    winner = reply(q)
    winner.use_edns(0)
    winner.set_rcode(dns.rcode.BADCOOKIE)
    out = encode(q, winner, max_size=512)
    assert out.rcode() == dns.rcode.SERVFAIL and out.edns == -1
    e = query()
    with_edns = reply(e)
    with_edns.set_rcode(dns.rcode.BADCOOKIE)
    assert encode(e, with_edns, max_size=512).rcode() == dns.rcode.BADCOOKIE


def test_servfail_names_the_reason_only_with_edns() -> None:
    q = query(id=9)
    out = dns.message.from_wire(dns_servfail(q, SETTINGS, "no quorum"))
    assert out.rcode() == dns.rcode.SERVFAIL and out.id == 9 and not out.answer
    assert any(isinstance(o, dns.edns.EDEOption) and o.code == dns.edns.EDECode.OTHER
               and o.text == "no quorum" for o in out.options)
    long = dns.message.from_wire(dns_servfail(q, SETTINGS, "é" * 300))
    assert [o.text for o in long.options] == ["é" * 200]
    bare = dns.message.from_wire(dns_servfail(query(use_edns=False), SETTINGS, "no quorum"))
    assert bare.edns == -1


def test_settings_reject_unknown_values_naming_the_field() -> None:
    with pytest.raises(ValueError, match=r"dns\.flags: unknown XX"):
        DnsSettings(flags=["AA", "XX"])
    with pytest.raises(ValueError, match=r"dns\.udp_payload"):
        DnsSettings(udp_payload=511)
    with pytest.raises(ValueError, match=r"dns\.ttl:"):
        DnsSettings(ttl="round")
    with pytest.raises(ValueError, match=r"dns\.additional"):
        DnsSettings(additional="some")


# -- fuzz ----------------------------------------------------------------------------------------

def _check_refusal(raw: bytes) -> None:
    """Any bytes: a valid query, or a well-formed error reply for the same ID, or nothing."""
    q = dns_parse_query(raw, SETTINGS)
    if isinstance(q, DnsRefusal):
        out = q.reply(SETTINGS)
        if out is None:
            assert len(raw) < 12 or raw[2] & 0x80  # only runts and responses are dropped
            return
        answer = dns.message.from_wire(out)
        assert answer.flags & dns.flags.QR and answer.rcode() in ERROR_RCODES
        assert answer.id == struct.unpack("!H", raw[:2])[0]
        assert not answer.answer and not answer.authority
        return
    up = dns.message.from_wire(q.upstream_wire(SETTINGS))
    assert up.opcode() == dns.opcode.QUERY and len(up.question) == 1
    assert up.question[0].rdclass == dns.rdataclass.IN and not up.answer and not up.additional
    assert up.edns in (-1, 0) and up.options == ()


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_any_bytes(raw: bytes) -> None:
    _check_refusal(raw)


VALID = [wire_query(), wire_query("example.test.", "MX", use_edns=False),
         wire_query("big.example.test.", "TXT", want_dnssec=True,
                    options=[dns.edns.CookieOption(b"clientck", b"")])]


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(VALID), st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)),
                                        max_size=6), st.integers(0, 80))
def test_fuzz_mutated_queries(base: bytes, flips: list[tuple[int, int]], cut: int) -> None:
    raw = bytearray(base)
    for pos, value in flips:
        raw[pos % len(raw)] = value
    _check_refusal(bytes(raw[:len(raw) - cut]) if cut < len(raw) else bytes(raw))


# -- the native listeners, with stand-in executors ---------------------------------------------

class Executor:
    """A DNS server over TCP answering every query with 30 TXT records (one for a name under
    ``small.``), after ``delay``; ``hang_up`` closes the connection after each reply (a pooled
    connection then goes stale); ``udp`` serves UDP on the same port too, truncating what does
    not fit, as real servers do."""

    def __init__(self, delay: float = 0.0, hang_up: bool = False, udp: bool = False) -> None:
        self.delay, self.hang_up, self.udp = delay, hang_up, udp
        self.queries = 0
        self.over_udp = 0
        self.server: asyncio.Server | None = None
        self.datagrams: asyncio.DatagramTransport | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        if self.udp:
            self.datagrams, _ = await asyncio.get_running_loop().create_datagram_endpoint(
                lambda: _Datagrams(self), local_addr=("127.0.0.1", port))
        return port

    def close(self) -> None:
        assert self.server is not None
        self.server.close()
        if self.datagrams is not None:
            self.datagrams.close()

    def answer(self, q: dns.message.Message) -> dns.message.Message:
        answer = dns.message.make_response(q)
        answer.flags |= dns.flags.AA
        name = q.question[0].name.to_text()
        count = 1 if name.startswith("small.") else 30
        answer.answer.append(dns.rrset.from_text_list(
            name, 60, "IN", "TXT", [f'"{i:03d} ' + "y" * 100 + '"' for i in range(count)]))
        return answer

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                size = struct.unpack("!H", await reader.readexactly(2))[0]
                q = dns.message.from_wire(await reader.readexactly(size))
                self.queries += 1
                await asyncio.sleep(self.delay)
                wire = self.answer(q).to_wire(max_size=65535)
                writer.write(struct.pack("!H", len(wire)) + wire)
                await writer.drain()
                if self.hang_up:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


class _Datagrams(asyncio.DatagramProtocol):
    """An executor's UDP side: the answer if it fits the query's payload size, else TC."""

    def __init__(self, executor: Executor) -> None:
        self.executor = executor
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        q = dns.message.from_wire(data)
        self.executor.queries += 1
        self.executor.over_udp += 1
        limit = max(512, q.payload) if q.edns >= 0 else 512
        try:
            wire = self.executor.answer(q).to_wire(max_size=limit)
        except dns.exception.TooBig:
            truncated = dns.message.make_response(q)
            truncated.flags |= dns.flags.TC
            wire = truncated.to_wire()
        assert self.transport is not None
        self.transport.sendto(wire, addr)


@contextlib.asynccontextmanager
async def native_plane(executors: list[Executor], **dns_settings: object
                       ) -> AsyncIterator[tuple[_native.DataPlane, int]]:
    """A native data plane serving DNS on 127.0.0.1 with ``executors`` voting."""
    ports = [await e.start() for e in executors]
    names = [f"e{i}" for i in range(len(executors))]
    config = Config.model_validate({
        "protocol": "dns", "dns": dns_settings,
        "controller": {"active": len(names), "floor": 1},
        "executors": [{"name": n, "argv": ["true"], "profile": [n],
                       "health": {"dns_query": "t.example. TXT"}} for n in names]})
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    plane = _native.DataPlane(1, 1024, wake_w)
    os.close(wake_w)
    try:
        plane.publish(build_snapshot(
            config, voters=names, shadows=[], keep_level=[], weights=None,
            placements={n: Placement("127.0.0.1", p, 1) for n, p in zip(names, ports,
                                                                          strict=True)}))
        with pytest.raises(OSError, match="dns"):
            plane.listen_http("127.0.0.1", 0)  # the snapshot is for DNS
        _, port = plane.listen_dns("127.0.0.1", 0)
        yield plane, port
    finally:
        plane.stop(1.0)
        plane.close()
        os.close(wake_r)
        for e in executors:
            e.close()


def udp_client(port: int) -> socket.socket:
    """A non-blocking UDP socket connected to the gateway on ``port``."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.setblocking(False)
    udp.connect(("127.0.0.1", port))
    return udp


async def udp_ask(sock: socket.socket, wire: bytes, timeout: float = 2.0) -> bytes | None:
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(sock, wire)
    try:
        return await asyncio.wait_for(loop.sock_recv(sock, 65535), timeout)
    except TimeoutError:
        return None


async def test_udp_and_tcp_on_one_port() -> None:
    executors = [Executor(), Executor(), Executor(hang_up=True)]
    async with native_plane(executors) as (plane, port):
        with udp_client(port) as udp:
            raw = await udp_ask(udp, wire_query("T.example.", "TXT", id=5))
            assert raw is not None
            answer = dns.message.from_wire(raw)
            assert answer.id == 5 and answer.flags & dns.flags.TC and not answer.answer
            assert answer.question[0].name.to_text() == "T.example."
            raw = await udp_ask(udp, wire_query("t.example.", "ANY", id=6))
            assert raw is not None and dns.message.from_wire(raw).rcode() == dns.rcode.REFUSED
            response = dns.message.make_response(dns.message.make_query("t.example.", "A"))
            assert await udp_ask(udp, response.to_wire(), timeout=0.3) is None

        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for qid in (7, 8):  # two queries on one connection, the first split in two writes
            wire = wire_query("t.example.", "TXT", id=qid)
            framed = struct.pack("!H", len(wire)) + wire
            writer.write(framed[:5])
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(framed[5:])
            size = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 2))[0]
            full = dns.message.from_wire(await reader.readexactly(size))
            assert full.id == qid and len(full.answer[0]) == 30 and not full.flags & dns.flags.TC
        wire = response.to_wire()
        writer.write(struct.pack("!H", len(wire)) + wire)  # a response: the connection closes
        assert await asyncio.wait_for(reader.read(), 2) == b""
        writer.close()

        # Every executor was asked three times (the one that hangs up on fresh connections).
        assert [e.queries for e in executors] == [3, 3, 3]
        figures = plane.metrics()
        assert figures["rejected"] == {"REFUSED": 1, "dropped": 2}
        assert figures["outcomes"]["accepted"] == 3
        recent = plane.recent()
        assert [(v["method"], v["path"]) for v in recent] == [("TXT", "t.example.")] * 3
        assert all(sorted(v["agreed"]) == ["e0", "e1", "e2"] for v in recent)
        assert plane.take_agreements() == {"e0": 3, "e1": 3, "e2": 3}


async def judged(plane: _native.DataPlane, rounds: int) -> None:
    """Until ``rounds`` rounds ended: the reply goes out at quorum, the last answer after."""
    for _ in range(100):
        if len(plane.recent()) >= rounds:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{len(plane.recent())} of {rounds} rounds ended within 2 s")


async def test_executors_are_asked_over_udp_and_over_tcp_when_it_does_not_fit() -> None:
    """UDP first; an executor whose UDP answer is truncated, or whose UDP port is closed, is
    asked again over TCP, so every executor is judged on its whole answer."""
    executors = [Executor(udp=True), Executor(udp=True), Executor()]
    async with native_plane(executors) as (plane, port):
        with udp_client(port) as udp:
            raw = await udp_ask(udp, wire_query("small.example.", "TXT", id=1))
            assert raw is not None and len(dns.message.from_wire(raw).answer[0]) == 1
            await judged(plane, 1)
            assert [(e.queries, e.over_udp) for e in executors] == [(1, 1), (1, 1), (1, 0)]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            wire = wire_query("t.example.", "TXT", id=2)
            writer.write(struct.pack("!H", len(wire)) + wire)
            size = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 2))[0]
            whole = dns.message.from_wire(await reader.readexactly(size))
            writer.close()
            assert len(whole.answer[0]) == 30 and not whole.flags & dns.flags.TC
        await judged(plane, 2)
        # Truncated over UDP, then asked over TCP: one more of each for the UDP servers.
        assert [(e.queries, e.over_udp) for e in executors] == [(3, 2), (3, 2), (2, 0)]
        assert all(sorted(v["agreed"]) == ["e0", "e1", "e2"] for v in plane.recent())
        assert plane.take_agreements() == {"e0": 2, "e1": 2, "e2": 2}


async def test_refused_types_and_nul_names_never_reach_an_executor() -> None:
    executors = [Executor(), Executor(), Executor()]
    async with native_plane(executors, refuse_types=["NULL"]) as (plane, port):
        udp = udp_client(port)
        nul = dns.name.Name([b"a\x00b", b"t", b"example", b""])
        refused = [wire_query("t.example.", "TYPE0", id=1), wire_query("t.example.", "TYPE200",
                                                                        id=2),
                   wire_query("t.example.", "NULL", id=3),
                   dns.message.make_query(nul, "TXT", use_edns=0, id=4).to_wire()]
        with udp:
            for wire in refused:
                raw = await udp_ask(udp, wire)
                assert raw is not None
                answer = dns.message.from_wire(raw)
                assert answer.rcode() == dns.rcode.REFUSED and not answer.answer
                assert answer.question == dns.message.from_wire(wire).question
            raw = await udp_ask(udp, wire_query("t.example.", "TXT", id=5))
            assert raw is not None and dns.message.from_wire(raw).rcode() == dns.rcode.NOERROR
        assert [e.queries for e in executors] == [1, 1, 1]
        assert plane.metrics()["rejected"] == {"REFUSED": 4}


async def test_udp_queries_beyond_the_bound_are_dropped_and_counted() -> None:
    async with native_plane([Executor(delay=0.5)], max_udp_inflight=1) as (plane, port):
        socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]
        for sock in socks:
            sock.setblocking(False)
            sock.connect(("127.0.0.1", port))
        try:
            replies = await asyncio.gather(*(udp_ask(sock, wire_query("t.example.", "TXT",
                                                                       id=i), timeout=1.5)
                                             for i, sock in enumerate(socks)))
        finally:
            for sock in socks:
                sock.close()
        assert sum(r is not None for r in replies) == 1
        assert plane.metrics()["rejected"] == {"overload": 2}
