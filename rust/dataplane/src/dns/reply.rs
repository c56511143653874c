//! Executors' replies: checked against the query, gathered into RRsets, and turned into the
//! arbiter's outputs.

use std::sync::Arc;

use bytes::Bytes;
use domain::base::iana::{Class, Opcode, OptRcode};
use domain::base::{Message, Name, ParsedName, RecordData, Rtype, ToName};
use domain::base::rdata::ComposeRecordData;
use domain::rdata::AllRecordData;

use super::query::{absolute_text, Query};
use super::{Settings, AA};
use crate::ballot::Output;
use crate::model::push_hex;

/// Where records go, in message order; the names start the canonical lines.
const SECTIONS: [&str; 3] = ["answer", "authority", "additional"];
/// Types an RRset holds one record of: a later record replaces an earlier one.
const SINGLETONS: [Rtype; 5] = [Rtype::SOA, Rtype::NXT, Rtype::DNAME, Rtype::NSEC, Rtype::CNAME];

pub type Data = AllRecordData<Bytes, ParsedName<Bytes>>;

/// One record's data as received and in DNSSEC canonical form (names lowercased where
/// RFC 4034 and 6840 say so).
#[derive(Clone, Debug)]
pub struct Rdata {
    pub data: Data,
    pub canonical: Vec<u8>,
}

/// Records of one owner, class, type (and type covered, for signatures).
#[derive(Clone, Debug)]
pub struct RRset {
    /// The owner as first spelled.
    pub owner: ParsedName<Bytes>,
    /// The owner in lower case, wire format: what groups records.
    canonical_owner: Vec<u8>,
    pub class: Class,
    pub rtype: Rtype,
    covers: u16,
    /// The smallest TTL of its records.
    pub ttl: u32,
    pub rdata: Vec<Rdata>,
}

/// An executor's reply to one query, checked.
#[derive(Clone, Debug)]
pub struct Reply {
    /// The header's flags word (opcode and rcode bits included).
    pub flags: u16,
    /// The rcode with its EDNS extension.
    pub rcode: u16,
    /// The DO bit of its OPT record; None without one.
    pub dnssec_ok: Option<bool>,
    sections: [Vec<RRset>; 3],
}

/// An executor's message that is not a well-formed reply to the query it was sent.
pub fn parse_reply(wire: Bytes, query: &Query) -> Result<Reply, String> {
    let message = Message::from_octets(wire)
        .map_err(|_| "unparseable reply: shorter than a DNS header".to_owned())?;
    let (reply, questions) = read(&message).map_err(|e| format!("unparseable reply: {e}"))?;
    let header = message.header();
    if !header.qr() || header.id() != query.id || header.opcode() != Opcode::QUERY
        || questions.len() != 1 {
        return Err("not a response to this query".into());
    }
    let (name, qtype, qclass) = &questions[0];
    if *name != canonical_name(query.qname()) || *qtype != query.qtype || *qclass != Class::IN {
        return Err("answers another question".into());
    }
    Ok(reply)
}

/// A question: the name in lower case (wire format), type, class.
type Question = (Vec<u8>, Rtype, Class);

/// The whole message: a full parse, as strict as the query's.
fn read(message: &Message<Bytes>) -> Result<(Reply, Vec<Question>), String> {
    let mut questions = Vec::new();
    for q in message.question() {
        let q = q.map_err(|e| e.to_string())?;
        questions.push((canonical_name(q.qname()), q.qtype(), q.qclass()));
    }
    let raw = message.as_slice();
    let mut reply = Reply { flags: u16::from_be_bytes([raw[2], raw[3]]), rcode: 0,
                            dnssec_ok: None, sections: Default::default() };
    let mut extended = 0;
    let mut section = message.answer().map_err(|e| e.to_string())?;
    for index in 0..SECTIONS.len() {
        for record in section.by_ref() {
            let record = record.map_err(|e| e.to_string())?;
            let parsed = record.to_any_record::<Data>().map_err(|e| e.to_string())?;
            let (ttl, class) = (parsed.ttl().as_secs(), parsed.class());
            let (owner, data) = parsed.into_owner_and_data();
            match data.rtype() {
                Rtype::OPT => {
                    if index != 2 || reply.dnssec_ok.is_some() || !owner.is_root() {
                        return Err("a misplaced or repeated OPT record".into());
                    }
                    extended = (ttl >> 24) as u16;
                    reply.dnssec_ok = Some(ttl & 0x8000 != 0);
                }
                Rtype::TSIG => return Err("a signed reply".into()),
                rtype => {
                    // Larger TTLs are read as 0 (RFC 2181).
                    let ttl = if ttl > 0x7FFF_FFFF { 0 } else { ttl };
                    let mut canonical = Vec::new();
                    data.compose_canonical_rdata(&mut canonical).map_err(|e| e.to_string())?;
                    let covers = if matches!(rtype, Rtype::RRSIG | Rtype::SIG) {
                        canonical.get(..2).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]))
                    } else {
                        0
                    };
                    let rrset = RRset { canonical_owner: canonical_name(&owner), owner,
                                        class, rtype, covers, ttl,
                                        rdata: Vec::new() };
                    add(&mut reply.sections[index], rrset, Rdata { data, canonical });
                }
            }
        }
        if index + 1 < SECTIONS.len() {
            section = section.next_section().map_err(|e| e.to_string())?
                .ok_or("a section is missing")?;
        }
    }
    if section.pos() != raw.len() {
        return Err("bytes after the last record".into());
    }
    reply.rcode = (reply.flags & 0xF) | (extended << 4);
    Ok((reply, questions))
}

/// Add one record to a section: to the RRset it belongs to, as a resolver would.
fn add(section: &mut Vec<RRset>, new: RRset, rdata: Rdata) {
    let i = section.iter().position(|s| {
        s.canonical_owner == new.canonical_owner && s.class == new.class && s.rtype == new.rtype
            && s.covers == new.covers
    });
    let i = i.unwrap_or_else(|| {
        section.push(new.clone());
        section.len() - 1
    });
    let rrset = &mut section[i];
    if rrset.rdata.is_empty() || new.ttl < rrset.ttl {
        rrset.ttl = new.ttl;
    }
    if SINGLETONS.contains(&rrset.rtype) {
        rrset.rdata.clear();
    }
    if !rrset.rdata.iter().any(|r| r.canonical == rdata.canonical) {
        rrset.rdata.push(rdata);
    }
}

/// A name in lower case, wire format.
fn canonical_name(name: &impl ToName) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.compose_len().into());
    name.compose_canonical(&mut out).expect("a Vec grows");
    out
}

impl Reply {
    /// A referral: no answer, no authority bit, and NS records delegating below the zone.
    fn is_referral(&self) -> bool {
        self.rcode == 0 && self.flags & AA == 0 && self.sections[0].is_empty()
            && self.sections[1].iter().any(|s| s.rtype == Rtype::NS)
    }

    /// Answer, authority and additional as voted on: the only records a client gets.
    pub fn voted(&self, settings: &Settings) -> [&[RRset]; 3] {
        let additional: &[RRset] = if settings.referrals_only && !self.is_referral() {
            &[]
        } else {
            &self.sections[2]
        };
        [&self.sections[0], &self.sections[1], additional]
    }

    /// The arbiter's head: rcode, compared flags, EDNS use.
    pub fn head(&self, settings: &Settings) -> Vec<u8> {
        let edns = if self.dnssec_ok.is_some() { "edns" } else { "no-edns" };
        format!("{}\t{}\t{edns}", OptRcode::masked_from_int(self.rcode), settings.head_flags(self.flags))
            .into_bytes()
    }

    /// The voted sections as sorted lines ``SECTION owner ttl class type rdata`` (tabs),
    /// owner names lowercased, rdata canonical in RFC 3597 form.
    pub fn canonical(&self, settings: &Settings) -> Vec<u8> {
        let mut lines: Vec<String> = Vec::new();
        for (name, rrsets) in SECTIONS.iter().zip(self.voted(settings)) {
            let mut section: Vec<(String, String, &[u8], String)> = Vec::new();
            for rrset in rrsets {
                let owner = absolute_text(&Name::from_octets(rrset.canonical_owner.as_slice())
                    .expect("a name that was parsed"));
                let rtype = rrset.rtype.to_string();
                for rdata in &rrset.rdata {
                    let mut line = format!("{name}\t{owner}\t{}\t{}\t{rtype}\t\\# {}",
                                           rrset.ttl, rrset.class, rdata.canonical.len());
                    if !rdata.canonical.is_empty() {
                        line.push(' ');
                        push_hex(&mut line, &rdata.canonical);
                    }
                    section.push((owner.clone(), rtype.clone(), &rdata.canonical, line));
                }
            }
            section.sort_unstable();
            lines.extend(section.into_iter().map(|(_, _, _, line)| line));
        }
        lines.join("\n").into_bytes()
    }

    /// The arbiter's view of this reply from ``executor``.
    pub fn output(&self, executor: Arc<str>, settings: &Settings, latency: f64) -> Output {
        Output::value(executor, self.head(settings), Bytes::from(self.canonical(settings)),
                      settings.rule.clone(), latency)
    }
}
