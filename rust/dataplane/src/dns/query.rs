//! The input agent for DNS: one client message in, a query to forward or a refusal out.

use bytes::Bytes;
use domain::base::iana::{Class, Opcode, OptRcode};
use domain::base::{Message, Name, ParsedName, Rtype, ToName};
use domain::rdata::AllRecordData;

use super::encode::{compose, Draft, OptDraft};
use super::{Settings, ECHOED, FROM_CLIENT, MIN_UDP_PAYLOAD, QR};

/// Question types the gateway answers itself: meta types are malformed in a question.
const META_QTYPES: [Rtype; 3] = [Rtype::OPT, Rtype::TSIG, Rtype::TKEY];

/// Types no two servers answer alike: the reserved type 0 (Knot: NOTIMP, BIND and NSD: an
/// empty answer) and the meta range 128-255 (RFC 6895), which holds ANY and zone transfers
/// (RFC 8482: no single right answer) and types BIND refuses as malformed where NSD and Knot
/// answer them as unknown data.
fn never_served(qtype: Rtype) -> bool {
    matches!(qtype.to_int(), 0 | 128..=255)
}

/// One accepted client query: opcode QUERY, one IN question, EDNS version 0 or none.
#[derive(Clone, Debug)]
pub struct Query {
    pub id: u16,
    /// As the client spelled it (its case is echoed back).
    qname: Name<Bytes>,
    pub qtype: Rtype,
    /// The client's header flags.
    flags: u16,
    pub edns: bool,
    /// The client's UDP payload size (512 without EDNS).
    pub payload: u16,
    pub dnssec_ok: bool,
}

/// What a reply to a refused query echoes of it.
#[derive(Clone, Debug)]
struct Echo {
    id: u16,
    flags: u16,
    question: Option<(Name<Bytes>, Rtype, Class)>,
    edns: bool,
}

/// A client message that must not be forwarded (the client's fault).
#[derive(Clone, Debug)]
pub struct Refusal {
    pub reason: String,
    /// The client's answer (FORMERR, NOTIMP, REFUSED, BADVERS); None: the message is dropped.
    pub rcode: Option<OptRcode>,
    echo: Option<Echo>,
}

impl Refusal {
    fn drop(reason: &str) -> Refusal {
        Refusal { reason: reason.to_owned(), rcode: None, echo: None }
    }

    fn answer(reason: String, rcode: OptRcode, echo: &Echo) -> Refusal {
        Refusal { reason, rcode: Some(rcode), echo: Some(echo.clone()) }
    }

    /// How refusals are counted: the rcode's name, or ``dropped``.
    pub fn label(&self) -> String {
        self.rcode.map_or_else(|| "dropped".to_owned(), |r| r.to_string())
    }

    /// The client's answer, or None when it gets none: the query's ID, opcode, RD, CD and
    /// question echoed, EDNS when the query used it (or the rcode needs it).
    pub fn reply(&self, settings: &Settings) -> Option<Vec<u8>> {
        let (rcode, echo) = (self.rcode?, self.echo.as_ref()?);
        let code = rcode.to_int();
        let opt = (echo.edns || code > 0xF).then_some(OptDraft {
            payload: settings.udp_payload, dnssec_ok: false, ede: None });
        compose(&Draft { id: echo.id, flags: QR | (echo.flags & ECHOED), rcode: code,
                         question: echo.question.as_ref().map(|(n, t, c)| (n, *t, *c)),
                         sections: [&[], &[], &[]], opt }, usize::MAX)
    }
}

impl Query {
    pub fn qname(&self) -> &Name<Bytes> {
        &self.qname
    }

    /// The question type's name, for events (``A``, ``TYPE65534``).
    pub fn label(&self) -> String {
        self.qtype.to_string()
    }

    /// The name in lower case with its final dot, for events.
    pub fn key(&self) -> String {
        absolute_text(&self.qname.to_canonical_name::<Vec<u8>>())
    }

    /// The largest UDP reply this client takes: its EDNS size capped at ours, else 512.
    pub fn udp_limit(&self, settings: &Settings) -> usize {
        if !self.edns {
            return MIN_UDP_PAYLOAD.into();
        }
        usize::from(self.payload.min(settings.udp_payload).max(MIN_UDP_PAYLOAD))
    }

    /// The normalised query every executor receives.
    pub fn upstream_wire(&self, settings: &Settings) -> Vec<u8> {
        let opt = self.edns.then_some(OptDraft { payload: settings.udp_payload,
                                                 dnssec_ok: self.dnssec_ok, ede: None });
        compose(&Draft { id: self.id, flags: self.flags & FROM_CLIENT, rcode: 0,
                         question: Some((&self.qname, self.qtype, Class::IN)),
                         sections: [&[], &[], &[]], opt }, usize::MAX)
            .expect("a query always fits")
    }

    /// The client's header flags (replies echo some of them).
    pub(super) fn client_flags(&self) -> u16 {
        self.flags
    }
}

/// A name in presentation format with its final dot (``.`` for the root).
pub(super) fn absolute_text<N: ToName + std::fmt::Display>(name: &N) -> String {
    if name.compose_len() == 1 {
        ".".to_owned()
    } else {
        format!("{name}.")
    }
}

/// Validate one client message against ``settings``: the query to forward, or why not.
pub fn parse_query(wire: Bytes, settings: &Settings) -> Result<Query, Refusal> {
    let Ok(message) = Message::from_octets(wire) else {
        return Err(Refusal::drop("shorter than a DNS header"));
    };
    let header = message.header();
    let raw = message.as_slice();
    let flags = u16::from_be_bytes([raw[2], raw[3]]);
    if header.qr() {
        return Err(Refusal::drop("a response, not a query"));
    }
    let mut echo = Echo { id: header.id(), flags, question: None, edns: false };
    let mut questions = Vec::new();
    for question in message.question() {
        match question {
            Ok(q) => questions.push((q.qname().to_name::<Bytes>(), q.qtype(), q.qclass())),
            Err(e) => return Err(Refusal::answer(format!("unparseable question: {e}"),
                                                 OptRcode::FORMERR, &echo)),
        }
    }
    // An UPDATE's zone section is one SOA entry of a data class (RFC 2136); anything else is
    // malformed, and is not echoed.
    let zone = |(_, qtype, qclass): &(Name<Bytes>, Rtype, Class)| {
        *qtype == Rtype::SOA && !matches!(*qclass, Class::ANY | Class::NONE)
    };
    if header.opcode() == Opcode::UPDATE && (questions.len() > 1 || !questions.iter().all(zone)) {
        return Err(Refusal::answer("an UPDATE whose zone is not one SOA entry".into(),
                                   OptRcode::FORMERR, &echo));
    }
    if let [question] = questions.as_slice() {
        echo.question = Some(question.clone());
    }
    let counts = message.header_counts();
    if header.opcode() != Opcode::QUERY {
        return Err(Refusal::answer(format!("opcode {} is not QUERY", header.opcode().to_int()),
                                   OptRcode::NOTIMP, &echo));
    }
    if counts.qdcount() != 1 {
        return Err(Refusal::answer(format!("{} questions; exactly one is allowed",
                                           counts.qdcount()), OptRcode::FORMERR, &echo));
    }
    if counts.ancount() > 0 || counts.nscount() > 0 {
        return Err(Refusal::answer("a query with answer or authority records".into(),
                                   OptRcode::FORMERR, &echo));
    }
    let additional = read_additional(&message, counts.arcount())
        .map_err(|why| match why {
            Additional::Signed => Refusal::answer("signed queries are not forwarded".into(),
                                                  OptRcode::REFUSED, &echo),
            Additional::Malformed(why) => Refusal::answer(format!("malformed query: {why}"),
                                                          OptRcode::FORMERR, &echo),
        })?;
    echo.edns = additional.opt.is_some();
    if additional.others > 0 {
        return Err(Refusal::answer("only an OPT record may follow the question".into(),
                                   OptRcode::FORMERR, &echo));
    }
    if let Some(opt) = &additional.opt {
        if opt.version > 0 {
            return Err(Refusal::answer(format!("EDNS version {}", opt.version),
                                       OptRcode::BADVERS, &echo));
        }
    }
    let (qname, qtype, qclass) = questions.pop().expect("exactly one question");
    if META_QTYPES.contains(&qtype) {
        return Err(Refusal::answer(format!("meta type {qtype} in a question"),
                                   OptRcode::FORMERR, &echo));
    }
    if never_served(qtype) || settings.refuses(qtype) {
        return Err(Refusal::answer(format!("{qtype} queries are not served"),
                                   OptRcode::REFUSED, &echo));
    }
    if qclass != Class::IN {
        return Err(Refusal::answer(format!("class {qclass} is not served"), OptRcode::REFUSED,
                                   &echo));
    }
    // A NUL octet ends a C string: servers written in C part ways on such names (one
    // answers SERVFAIL where the others answer NXDOMAIN), and no zone needs one.
    if qname.iter().any(|label| label.as_ref().contains(&0)) {
        return Err(Refusal::answer("a NUL octet in the name".into(), OptRcode::REFUSED, &echo));
    }
    let (payload, dnssec_ok) = additional.opt
        .map_or((MIN_UDP_PAYLOAD, false), |o| (o.payload.max(MIN_UDP_PAYLOAD), o.dnssec_ok));
    Ok(Query { id: header.id(), qname, qtype, flags, edns: echo.edns, payload, dnssec_ok })
}

/// The client's OPT record.
struct Edns {
    version: u8,
    payload: u16,
    dnssec_ok: bool,
}

/// What follows the question of a query.
struct Read {
    opt: Option<Edns>,
    /// Records other than OPT (only TSIG may be there and it is refused on sight).
    others: usize,
}

enum Additional {
    /// A TSIG record, last and of class ANY: a signed query we hold no key for.
    Signed,
    Malformed(String),
}

/// Read the additional section whole, as a full parse of the message would.
fn read_additional(message: &Message<Bytes>, count: u16) -> Result<Read, Additional> {
    let malformed = |e: &dyn std::fmt::Display| Additional::Malformed(e.to_string());
    let mut section = message.additional().map_err(|e| malformed(&e))?;
    let mut read = Read { opt: None, others: 0 };
    for (index, record) in section.by_ref().enumerate() {
        let record = record.map_err(|e| malformed(&e))?;
        let data = record.to_any_record::<AllRecordData<Bytes, ParsedName<Bytes>>>()
            .map_err(|e| malformed(&e))?;
        match data.into_data() {
            AllRecordData::Opt(_) => {
                if read.opt.is_some() || !record.owner().is_root() {
                    return Err(Additional::Malformed("a misplaced or repeated OPT record".into()));
                }
                let ttl = record.ttl().as_secs();
                read.opt = Some(Edns { version: (ttl >> 16) as u8, payload: record.class().to_int(),
                                       dnssec_ok: ttl & 0x8000 != 0 });
            }
            AllRecordData::Tsig(_) => {
                if record.class() != Class::ANY || index + 1 != usize::from(count) {
                    return Err(Additional::Malformed("a misplaced TSIG record".into()));
                }
                return Err(Additional::Signed);
            }
            _ => read.others += 1,
        }
    }
    if section.pos() != message.as_slice().len() {
        return Err(Additional::Malformed("bytes after the last record".into()));
    }
    Ok(read)
}
