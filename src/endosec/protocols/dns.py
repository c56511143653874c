"""The DNS mimic boundary, sans-I/O: which queries may pass, and what a reply means.

Bytes in, values out, no sockets (wire parsing is dnspython's). The input agent calls
`parse_query` on every client datagram or TCP message: a query that is not a plain, single
question QUERY never reaches an executor; it raises `QueryError`, whose ``rcode`` is the answer
the client gets (FORMERR, NOTIMP, REFUSED, BADVERS) or None when the message must be dropped
(responses, anything shorter than a header). `Query.upstream_wire` is then the one normalised
query every executor receives (the client's ID, question, RD/CD/AD and DO bits; no EDNS
options, so no cookie, NSID or padding reaches an executor).

An executor's reply is checked against the query (`parse_reply`) and turned into an `Output`
(`reply_output`): ``head`` holds the rcode, the compared flags and whether EDNS was used;
``raw`` holds the voted sections as sorted text lines, one per record, with lowercased names
(DNS names are case-insensitive and servers differ in the case they echo). `DnsCanonicaliser`
masks the TTL column of those lines and, in ``equivalent``, compares TTLs within a tolerance.
EDNS options (cookies, NSID, extended errors) are never compared and never sent on.

`encode_reply` re-encodes the winning reply for the client under its own ID and question and
carries only what was voted; a reply larger than a UDP client can take becomes a header and
question with TC set, so the client retries over TCP and gets it whole.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from endosec.core.model import Canonical, Output

__all__ = [
    "COMPARABLE_FLAGS",
    "MAX_TCP_MESSAGE",
    "MIN_UDP_PAYLOAD",
    "DnsCanonicaliser",
    "DnsProtocolError",
    "DnsSettings",
    "Query",
    "QueryError",
    "ReplyError",
    "encode_reply",
    "error_reply",
    "parse_query",
    "parse_reply",
    "reply_output",
    "servfail",
    "voted_sections",
]

MIN_UDP_PAYLOAD = 512  # RFC 1035: what every client accepts over UDP
MAX_TCP_MESSAGE = 65535  # the two-byte length prefix's limit
_HEADER = struct.Struct("!HHHHHH")
_QR = 0x8000

COMPARABLE_FLAGS: dict[str, int] = {
    "AA": dns.flags.AA, "TC": dns.flags.TC, "RD": dns.flags.RD, "RA": dns.flags.RA,
    "AD": dns.flags.AD, "CD": dns.flags.CD,
}
_FROM_CLIENT = dns.flags.RD | dns.flags.CD | dns.flags.AD  # forwarded to executors
_FROM_WINNER = dns.flags.AA | dns.flags.TC | dns.flags.RA | dns.flags.AD

# Question types the gateway answers itself: meta types are malformed in a question; zone
# transfers and ANY have no single right answer among heterogeneous servers (RFC 8482).
_META_QTYPES = frozenset({dns.rdatatype.OPT, dns.rdatatype.TSIG, dns.rdatatype.TKEY})
_REFUSED_QTYPES = frozenset({dns.rdatatype.AXFR, dns.rdatatype.IXFR, dns.rdatatype.ANY,
                             dns.rdatatype.MAILA, dns.rdatatype.MAILB})
_SECTIONS = ("answer", "authority", "additional")


class DnsProtocolError(Exception):
    """Base of the DNS protocol errors."""


@dataclass(frozen=True, slots=True)
class _Header:
    """What an error reply can echo from a query it refused."""

    id: int
    flags: int
    question: tuple[dns.name.Name, int, int] | None
    edns: bool


class QueryError(DnsProtocolError):
    """A client message that must not be forwarded (the client's fault).

    ``rcode`` is the client's answer (FORMERR, NOTIMP, REFUSED, BADVERS), None to drop.
    """

    def __init__(self, reason: str, rcode: int | None, header: _Header | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.rcode = None if header is None else rcode
        self.header = header


class ReplyError(DnsProtocolError):
    """An executor's message that is not a well-formed reply to the query it was sent."""


@dataclass(frozen=True, slots=True)
class DnsSettings:
    """What takes part in the vote and how large replies may be.

    **Parameters:**

    * **flags** - header flags compared between executors (see `COMPARABLE_FLAGS`).
    * **ttl** - ``"compare"``: TTLs must agree within ``ttl_tolerance`` seconds; ``"mask"``:
      TTLs are not compared (the winner's go to the client unprotected by the vote).
    * **additional** - ``"all"``: the additional section is voted on; ``"referrals"``: only in
      referrals (where it carries glue); elsewhere it is optional data servers fill
      differently, so it is neither compared nor sent to the client.
    * **udp_payload** - the gateway's own EDNS UDP payload size, offered to clients and
      executors.
    """

    flags: frozenset[str] = frozenset({"AA", "TC", "RD", "RA"})
    ttl: Literal["compare", "mask"] = "compare"
    ttl_tolerance: int = 0
    additional: Literal["all", "referrals"] = "all"
    udp_payload: int = 1232
    _flag_bits: tuple[tuple[str, int], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.flags) - COMPARABLE_FLAGS.keys())
        if unknown:
            raise ValueError(f"flags: unknown {', '.join(unknown)} (expected some of "
                             f"{', '.join(COMPARABLE_FLAGS)})")
        if self.ttl_tolerance < 0:
            raise ValueError("ttl_tolerance: must be >= 0")
        if not MIN_UDP_PAYLOAD <= self.udp_payload <= MAX_TCP_MESSAGE:
            raise ValueError(f"udp_payload: must be from {MIN_UDP_PAYLOAD} to "
                             f"{MAX_TCP_MESSAGE}")
        object.__setattr__(self, "flags", frozenset(self.flags))
        object.__setattr__(self, "_flag_bits", tuple(
            (name, bit) for name, bit in COMPARABLE_FLAGS.items() if name in self.flags))

    def head_flags(self, flags: int) -> str:
        return " ".join(name for name, bit in self._flag_bits if flags & bit)


@dataclass(frozen=True, slots=True)
class Query:
    """One accepted client query: a single IN question, opcode QUERY, EDNS version 0 or none."""

    id: int
    qname: dns.name.Name  # as the client spelled it (its case is echoed back)
    qtype: int
    flags: int  # the client's header flags
    edns: bool
    payload: int  # the client's UDP payload size (512 without EDNS)
    dnssec_ok: bool
    qclass: int = dns.rdataclass.IN

    @property
    def label(self) -> str:
        return dns.rdatatype.to_text(dns.rdatatype.RdataType.make(self.qtype))

    @property
    def header(self) -> _Header:
        return _Header(self.id, self.flags, (self.qname, self.qtype, self.qclass), self.edns)

    @property
    def key(self) -> str:
        return self.qname.to_text().lower()

    def udp_limit(self, settings: DnsSettings) -> int:
        """The largest UDP reply this client takes: its EDNS size capped at ours, else 512."""
        if not self.edns:
            return MIN_UDP_PAYLOAD
        return max(MIN_UDP_PAYLOAD, min(self.payload, settings.udp_payload))

    def upstream_wire(self, settings: DnsSettings) -> bytes:
        """The normalised query every executor receives."""
        query = dns.message.make_query(
            self.qname, dns.rdatatype.RdataType.make(self.qtype),
            use_edns=0 if self.edns else False, want_dnssec=self.dnssec_ok,
            payload=settings.udp_payload if self.edns else None, id=self.id,
            flags=self.flags & _FROM_CLIENT)
        return query.to_wire()


def parse_query(wire: bytes) -> Query:
    """Validate one client message; raise `QueryError` unless it may be forwarded."""
    if len(wire) < _HEADER.size:
        raise QueryError("shorter than a DNS header", None)
    qid, flags, qdcount, ancount, nscount, _ = _HEADER.unpack_from(wire)
    if flags & _QR:
        raise QueryError("a response, not a query", None)
    header = _Header(qid, flags, None, False)
    try:
        partial = dns.message.from_wire(wire, question_only=True)
    except Exception as exc:  # dnspython raises many types on hostile input
        raise QueryError(f"unparseable question: {exc}", dns.rcode.FORMERR, header) from exc
    if len(partial.question) == 1:
        q = partial.question[0]
        header = _Header(qid, flags, (q.name, q.rdtype, q.rdclass), False)
    opcode = (flags >> 11) & 0xF
    if opcode != dns.opcode.QUERY:
        raise QueryError(f"opcode {opcode} is not QUERY", dns.rcode.NOTIMP, header)
    if qdcount != 1:
        raise QueryError(f"{qdcount} questions; exactly one is allowed", dns.rcode.FORMERR,
                         header)
    if ancount or nscount:
        raise QueryError("a query with answer or authority records", dns.rcode.FORMERR, header)
    try:
        message = dns.message.from_wire(wire)
    except dns.message.UnknownTSIGKey as exc:
        raise QueryError("signed queries are not forwarded", dns.rcode.REFUSED,
                         header) from exc
    except Exception as exc:  # dnspython raises many types on hostile input
        raise QueryError(f"malformed query: {exc}", dns.rcode.FORMERR, header) from exc
    return _accept(message, header)


def _accept(message: dns.message.Message, header: _Header) -> Query:
    header = _Header(header.id, header.flags, header.question, message.edns >= 0)
    if message.had_tsig or message.additional:
        raise QueryError("only an OPT record may follow the question", dns.rcode.FORMERR,
                         header)
    if message.edns > 0:
        raise QueryError(f"EDNS version {message.edns}", dns.rcode.BADVERS, header)
    q = message.question[0]
    if q.rdtype in _META_QTYPES:
        raise QueryError(f"meta type {dns.rdatatype.to_text(q.rdtype)} in a question",
                         dns.rcode.FORMERR, header)
    if q.rdtype in _REFUSED_QTYPES:
        raise QueryError(f"{dns.rdatatype.to_text(q.rdtype)} queries are not served",
                         dns.rcode.REFUSED, header)
    if q.rdclass != dns.rdataclass.IN:
        raise QueryError(f"class {dns.rdataclass.to_text(q.rdclass)} is not served",
                         dns.rcode.REFUSED, header)
    edns = message.edns == 0
    return Query(id=message.id, qname=q.name, qtype=int(q.rdtype), flags=int(message.flags),
                 edns=edns, payload=max(MIN_UDP_PAYLOAD, message.payload) if edns
                 else MIN_UDP_PAYLOAD,
                 dnssec_ok=bool(message.ednsflags & dns.flags.DO))


def _response(header: _Header, rcode: int, settings: DnsSettings) -> dns.message.Message:
    """A reply skeleton echoing the query's ID, opcode, RD and CD bits and question."""
    reply = dns.message.Message(id=header.id)
    reply.flags = _QR | (header.flags & (0x7800 | dns.flags.RD | dns.flags.CD))
    if header.question is not None:
        name, rdtype, rdclass = header.question
        reply.question = [dns.rrset.RRset(name, dns.rdataclass.RdataClass.make(rdclass),
                                          dns.rdatatype.RdataType.make(rdtype))]
    if header.edns or rcode > 0xF:
        reply.use_edns(0, 0, settings.udp_payload)
    reply.set_rcode(dns.rcode.Rcode.make(rcode))
    return reply


def error_reply(error: QueryError, settings: DnsSettings) -> bytes | None:
    """The client's answer to a refused query, or None when it gets none."""
    h = error.header
    if error.rcode is None or h is None:
        return None
    return _response(h, error.rcode, settings).to_wire()


def servfail(query: Query, settings: DnsSettings, reason: str = "") -> bytes:
    """Fail closed: SERVFAIL, with an extended error naming the reason when EDNS is in use."""
    reply = _response(query.header, dns.rcode.SERVFAIL, settings)
    if query.edns and reason:
        reply.use_edns(0, 0, settings.udp_payload,
                       options=[dns.edns.EDEOption(dns.edns.EDECode.OTHER, reason[:200])])
    return reply.to_wire()


def parse_reply(wire: bytes, query: Query) -> dns.message.Message:
    """An executor's reply to ``query``; `ReplyError` if it is not one."""
    try:
        message = dns.message.from_wire(wire)
    except Exception as exc:  # dnspython raises many types on hostile input
        raise ReplyError(f"unparseable reply: {exc}") from exc
    if not message.flags & dns.flags.QR or message.id != query.id:
        raise ReplyError("not a response to this query")
    if message.opcode() != dns.opcode.QUERY or len(message.question) != 1:
        raise ReplyError("not a response to this query")
    q = message.question[0]
    if q.name != query.qname or q.rdtype != query.qtype or q.rdclass != query.qclass:
        raise ReplyError("answers another question")
    return message


def _is_referral(message: dns.message.Message) -> bool:
    return (message.rcode() == dns.rcode.NOERROR and not message.flags & dns.flags.AA
            and not message.answer
            and any(r.rdtype == dns.rdatatype.NS for r in message.authority))


def voted_sections(message: dns.message.Message, settings: DnsSettings
                   ) -> tuple[list[dns.rrset.RRset], ...]:
    """Answer, authority and additional as voted on: the only records a client gets."""
    additional: list[dns.rrset.RRset] = message.additional
    if settings.additional == "referrals" and not _is_referral(message):
        additional = []
    return (message.answer, message.authority, additional)


def _lines(section: str, rrsets: Iterable[dns.rrset.RRset]) -> list[tuple[bytes, ...]]:
    """One sortable line per record: names lowercased, rdata in DNSSEC canonical form."""
    out: list[tuple[bytes, ...]] = []
    for rrset in rrsets:
        owner = rrset.name.canonicalize().to_text()
        rdclass = dns.rdataclass.to_text(rrset.rdclass)
        rdtype = dns.rdatatype.to_text(rrset.rdtype)
        for rdata in rrset:
            digestable = rdata.to_digestable()
            text = dns.rdata.from_wire(rrset.rdclass, rrset.rdtype, digestable, 0,
                                       len(digestable)).to_text()
            line = "\t".join((section, owner, str(rrset.ttl), rdclass, rdtype, text)).encode()
            out.append((section.encode(), owner.encode(), rdtype.encode(), digestable, line))
    return out


def canonical_text(message: dns.message.Message, settings: DnsSettings) -> bytes:
    """The voted sections as sorted lines ``SECTION owner ttl class type rdata`` (tabs)."""
    lines: list[tuple[bytes, ...]] = []
    for name, rrsets in zip(_SECTIONS, voted_sections(message, settings), strict=True):
        lines += sorted(_lines(name, rrsets))
    return b"\n".join(item[-1] for item in lines)


@dataclass(frozen=True, slots=True)
class DnsCanonicaliser:
    """Compare `canonical_text` outputs with the TTL column masked, then TTLs by tolerance."""

    ttl_tolerance: int | None = 0  # None: TTLs are not compared at all

    def canonicalise(self, raw: bytes) -> Canonical:
        keyed: list[bytes] = []
        ttls: list[int] = []
        for line in raw.split(b"\n") if raw else ():
            parts = line.split(b"\t", 5)
            if len(parts) == 6 and parts[2].isdigit():
                ttls.append(int(parts[2]))
                parts[2] = b"-"
            keyed.append(b"\t".join(parts))
        return Canonical(b"\n".join(keyed), tuple(ttls))

    def equivalent(self, a: Canonical, b: Canonical) -> bool:
        if a.key != b.key:
            return False
        if self.ttl_tolerance is None:
            return True
        ttls_a, ttls_b = a.value, b.value
        assert isinstance(ttls_a, tuple) and isinstance(ttls_b, tuple)
        return len(ttls_a) == len(ttls_b) and all(
            abs(x - y) <= self.ttl_tolerance for x, y in zip(ttls_a, ttls_b, strict=True))


def reply_output(executor: str, message: dns.message.Message, settings: DnsSettings,
                 canonicaliser: DnsCanonicaliser, latency: float) -> Output:
    """The arbiter's view of one reply: rcode, flags and EDNS use in the head."""
    head = (dns.rcode.to_text(message.rcode()), settings.head_flags(message.flags),
            message.edns >= 0)
    return Output(executor, canonical_text(message, settings), canonicaliser, head=head,
                  latency=latency)


def encode_reply(query: Query, winner: dns.message.Message, settings: DnsSettings, *,
                 max_size: int) -> bytes:
    """The winning reply under the client's ID and question, at most ``max_size`` bytes.

    Only voted sections are carried, and no EDNS options. When it does not fit, the client
    gets the header and question with TC set (and retries over TCP).
    """
    rcode = winner.rcode()
    if rcode > 0xF and not query.edns:
        rcode = dns.rcode.SERVFAIL  # an extended rcode cannot be said without EDNS
    reply = _response(query.header, rcode, settings)
    reply.flags |= winner.flags & _FROM_WINNER
    if query.edns:
        reply.use_edns(0, winner.ednsflags & dns.flags.DO, settings.udp_payload)
        reply.set_rcode(dns.rcode.Rcode.make(rcode))
    reply.answer, reply.authority, reply.additional = (
        list(s) for s in voted_sections(winner, settings))
    try:
        return reply.to_wire(max_size=max_size)
    except dns.exception.TooBig:
        reply.answer, reply.authority, reply.additional = [], [], []
        reply.flags |= dns.flags.TC
        return reply.to_wire(max_size=max_size)
