"""The DNS boundary without servers: query validation, canonical replies, client encoding."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Sequence

import dns.edns
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

from endosec.core.model import Output
from endosec.gateway.dns import DnsRequest
from endosec.gateway.dns_server import DnsServerState, serve_dns
from endosec.protocols.dns import (
    DnsCanonicaliser,
    DnsSettings,
    Query,
    QueryError,
    ReplyError,
    encode_reply,
    error_reply,
    parse_query,
    parse_reply,
    reply_output,
    servfail,
)

SETTINGS = DnsSettings()
REFERRALS = DnsSettings(additional="referrals")
ERROR_RCODES = {dns.rcode.FORMERR, dns.rcode.NOTIMP, dns.rcode.REFUSED, dns.rcode.BADVERS}


def wire_query(name: str = "www.example.test.", rdtype: str = "A", **kw: object) -> bytes:
    kw.setdefault("use_edns", 0)
    return dns.message.make_query(name, rdtype, **kw).to_wire()  # type: ignore[arg-type]


def query(name: str = "www.example.test.", rdtype: str = "A", **kw: object) -> Query:
    return parse_query(wire_query(name, rdtype, **kw))


def reply(q: Query, answer: Sequence[str] = (), *, authority: Sequence[str] = (),
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


def output(name: str, message: dns.message.Message, settings: DnsSettings = SETTINGS,
           tolerance: int | None = 0) -> Output:
    return reply_output(name, message, settings, DnsCanonicaliser(tolerance), 0.0)


WWW = [rr("www.example.test.", 3600, "A", "192.0.2.10"),
       rr("www.example.test.", 3600, "A", "192.0.2.11")]


# -- query validation -----------------------------------------------------------------------

def test_a_plain_query_is_forwarded_normalised() -> None:
    cookie = dns.edns.CookieOption(b"clientck", b"")
    nsid = dns.edns.GenericOption(dns.edns.OptionType.NSID, b"")
    raw = wire_query("WwW.Example.TEST.", "AAAA", id=4242, payload=4096, want_dnssec=True,
                     options=[cookie, nsid])
    q = parse_query(raw)
    assert (q.id, q.qtype, q.edns, q.payload, q.dnssec_ok) == (4242, 28, True, 4096, True)
    assert q.qname.to_text() == "WwW.Example.TEST."
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


def refused(raw: bytes) -> tuple[QueryError, dns.message.Message | None]:
    with pytest.raises(QueryError) as info:
        parse_query(raw)
    out = error_reply(info.value, SETTINGS)
    return info.value, None if out is None else dns.message.from_wire(out)


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
    assert parse_reply(reply(q, WWW).to_wire(), q).answer
    with pytest.raises(ReplyError):
        parse_reply(reply(q, WWW, qid=(q.id + 1) % 65536).to_wire(), q)
    other = reply(query("mail.example.test."), WWW)
    other.id = q.id
    with pytest.raises(ReplyError):
        parse_reply(other.to_wire(), q)
    with pytest.raises(ReplyError):
        parse_reply(b"\x00\x01garbage", q)
    with pytest.raises(ReplyError):  # a query echoed back is not a reply
        parse_reply(q.upstream_wire(SETTINGS), q)


def test_record_order_ttl_within_tolerance_and_name_case_agree() -> None:
    q = query()
    a = output("a", reply(q, WWW), tolerance=5)
    b = output("b", reply(q, [rr("WWW.example.TEST.", 3597, "A", "192.0.2.11"),
                              rr("www.example.test.", 3597, "A", "192.0.2.10")]),
               tolerance=5)
    assert a.raw != b.raw and a.agrees_with(b)
    far = output("c", reply(q, [w.replace("3600", "3590") for w in WWW]), tolerance=5)
    assert not a.agrees_with(far)


def test_masked_ttls_never_disagree_but_exact_ttls_do() -> None:
    q = query()
    long, short = reply(q, WWW), reply(q, [w.replace("3600", "60") for w in WWW])
    assert output("a", long, tolerance=None).agrees_with(output("b", short, tolerance=None))
    assert not output("a", long).agrees_with(output("b", short))


def test_query_id_and_edns_options_do_not_matter() -> None:
    q = query()
    plain = output("a", reply(q, WWW))
    decorated = reply(q, WWW, options=[
        dns.edns.CookieOption(b"clientck", b"servercookie0001"),
        dns.edns.GenericOption(dns.edns.OptionType.NSID, b"knot-1"),
        dns.edns.EDEOption(dns.edns.EDECode.OTHER, "hello")])
    decorated.id = 1
    assert output("b", decorated).raw == plain.raw and plain.agrees_with(output("b", decorated))


def test_a_changed_rdata_or_a_missing_record_disagrees() -> None:
    q = query()
    good = output("a", reply(q, WWW))
    changed = output("b", reply(q, [WWW[0], rr("www.example.test.", 3600, "A", "203.0.113.66")]))
    missing = output("c", reply(q, WWW[:1]))
    assert not good.agrees_with(changed) and not good.agrees_with(missing)


def test_a_flipped_aa_or_rcode_disagrees() -> None:
    q = query()
    good = output("a", reply(q, WWW))
    assert not good.agrees_with(output("b", reply(q, WWW, aa=False)))
    assert not good.agrees_with(output("c", reply(q, WWW, rcode=dns.rcode.NXDOMAIN)))
    assert good.head == ("NOERROR", "AA RD", True)


def test_rdata_names_compare_case_insensitively_but_txt_does_not() -> None:
    q = query("example.test.", "MX")
    a = output("a", reply(q, [rr("example.test.", 60, "MX", "10 mail.example.test.")]))
    b = output("b", reply(q, [rr("example.test.", 60, "MX", "10 MAIL.example.test.")]))
    assert a.raw == b.raw
    t = query("info.example.test.", "TXT")
    x = output("a", reply(t, [rr("info.example.test.", 60, "TXT", '"Hello"')]))
    y = output("b", reply(t, [rr("info.example.test.", 60, "TXT", '"hello"')]))
    assert not x.agrees_with(y)


def test_additional_data_counts_only_in_referrals_when_configured() -> None:
    q = query("example.test.", "MX")
    mx = [rr("example.test.", 3600, "MX", "10 mail.example.test.")]
    bare = reply(q, mx)
    extra = reply(q, mx, additional=[rr("mail.example.test.", 3600, "A", "192.0.2.25")])
    assert output("a", bare, REFERRALS).agrees_with(output("b", extra, REFERRALS))
    assert not output("a", bare).agrees_with(output("b", extra))
    # ...and what is not voted on is not sent
    assert not dns.message.from_wire(
        encode_reply(q, extra, REFERRALS, max_size=65535)).additional
    r = query("host.sub.example.test.")
    ns = [rr("sub.example.test.", 3600, "NS", "ns1.sub.example.test.")]
    glue = reply(r, authority=ns, aa=False,
                 additional=[rr("ns1.sub.example.test.", 3600, "A", "192.0.2.153")])
    forged = reply(r, authority=ns, aa=False,
                   additional=[rr("ns1.sub.example.test.", 3600, "A", "203.0.113.1")])
    assert not output("a", glue, REFERRALS).agrees_with(output("b", forged, REFERRALS))


# -- what the client gets ----------------------------------------------------------------------

def test_reply_carries_the_clients_id_and_question() -> None:
    q = query("WwW.Example.TEST.", id=31337)
    winner = reply(q, WWW, options=[dns.edns.GenericOption(dns.edns.OptionType.NSID, b"x")])
    winner.id = 1
    out = dns.message.from_wire(encode_reply(q, winner, SETTINGS, max_size=512))
    assert out.id == 31337 and out.question[0].name.to_text() == "WwW.Example.TEST."
    assert out.flags & dns.flags.AA and out.flags & dns.flags.RD and out.flags & dns.flags.QR
    assert out.options == () and len(out.answer[0]) == 2


def test_large_answer_over_udp_is_truncated_and_whole_over_tcp() -> None:
    q = query("big.example.test.", "TXT", use_edns=False)
    big = reply(q, [rr("big.example.test.", 3600, "TXT", f'"record {i:02d} ' + "x" * 90 + '"')
                    for i in range(40)])
    udp = encode_reply(q, big, SETTINGS, max_size=q.udp_limit(SETTINGS))
    assert len(udp) <= 512
    small = dns.message.from_wire(udp)
    assert small.flags & dns.flags.TC and not small.answer and small.edns == -1
    full = dns.message.from_wire(encode_reply(q, big, SETTINGS, max_size=65535))
    assert not full.flags & dns.flags.TC and len(full.answer[0]) == 40


def test_extended_rcode_without_edns_becomes_servfail() -> None:
    q = query(use_edns=False)
    winner = reply(q)
    winner.use_edns(0)
    winner.set_rcode(dns.rcode.BADCOOKIE)
    out = dns.message.from_wire(encode_reply(q, winner, SETTINGS, max_size=512))
    assert out.rcode() == dns.rcode.SERVFAIL and out.edns == -1


def test_servfail_names_the_reason_only_with_edns() -> None:
    q = query(id=9)
    out = dns.message.from_wire(servfail(q, SETTINGS, "no quorum"))
    assert out.rcode() == dns.rcode.SERVFAIL and out.id == 9 and not out.answer
    assert any(isinstance(o, dns.edns.EDEOption) and o.text == "no quorum" for o in out.options)
    bare = dns.message.from_wire(servfail(query(use_edns=False), SETTINGS, "no quorum"))
    assert bare.edns == -1


def test_settings_reject_unknown_flags() -> None:
    with pytest.raises(ValueError, match="flags"):
        DnsSettings(flags=frozenset({"AA", "XX"}))


# -- fuzz ----------------------------------------------------------------------------------------

def _check_refusal(raw: bytes) -> None:
    """Any bytes: a valid query, or a well-formed error reply for the same ID, or nothing."""
    try:
        q = parse_query(raw)
    except QueryError as exc:
        out = error_reply(exc, SETTINGS)
        if out is None:
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


# -- the listeners, with a stand-in engine ------------------------------------------------------

async def test_udp_and_tcp_listeners() -> None:
    asked: list[DnsRequest] = []

    async def handler(request: DnsRequest) -> bytes:
        asked.append(request)
        q = request.query
        big = reply(q, [rr(q.qname.to_text(), 60, "TXT", f'"{i:03d} ' + "y" * 100 + '"')
                        for i in range(30)])
        limit = q.udp_limit(SETTINGS) if request.transport == "udp" else 65535
        return encode_reply(q, big, SETTINGS, max_size=limit)

    state = DnsServerState(handler=handler, settings=SETTINGS, message_timeout=2.0,
                           idle_timeout=2.0, max_connections=4, max_udp_inflight=4)
    listener = await serve_dns(state, "127.0.0.1", 0)
    loop = asyncio.get_running_loop()
    try:
        assert listener.url == f"dns://127.0.0.1:{listener.port}"
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.setblocking(False)
        udp.connect(("127.0.0.1", listener.port))
        await loop.sock_sendall(udp, wire_query("t.example.", "TXT", id=5))
        answer = dns.message.from_wire(await asyncio.wait_for(loop.sock_recv(udp, 4096), 2))
        assert answer.id == 5 and answer.flags & dns.flags.TC and not answer.answer
        await loop.sock_sendall(udp, wire_query("t.example.", "ANY", id=6))
        answer = dns.message.from_wire(await asyncio.wait_for(loop.sock_recv(udp, 4096), 2))
        assert answer.id == 6 and answer.rcode() == dns.rcode.REFUSED
        udp.close()

        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        for qid in (7, 8):  # two queries on one connection, the first split in two writes
            raw = wire_query("t.example.", "TXT", id=qid)
            framed = struct.pack("!H", len(raw)) + raw
            writer.write(framed[:5])
            await writer.drain()
            writer.write(framed[5:])
            size = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 2))[0]
            full = dns.message.from_wire(await reader.readexactly(size))
            assert full.id == qid and len(full.answer[0]) == 30
        response = dns.message.make_response(dns.message.make_query("t.example.", "A"))
        raw = response.to_wire()
        writer.write(struct.pack("!H", len(raw)) + raw)  # a response: the connection closes
        assert await asyncio.wait_for(reader.read(), 2) == b""
        writer.close()
        assert [r.transport for r in asked] == ["udp", "tcp", "tcp"]
    finally:
        listener.close()
