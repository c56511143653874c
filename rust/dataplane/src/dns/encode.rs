//! Messages the gateway writes: the normalised query, the client's reply, and the replies it
//! gives itself (refusals, SERVFAIL).

use bytes::Bytes;
use domain::base::iana::{Class, OptRcode, OptionCode};
use domain::base::message_builder::StaticCompressor;
use domain::base::{MessageBuilder, Name, Rtype, Ttl};
use domain::dep::octseq::OctetsBuilder;

use super::query::Query;
use super::reply::{RRset, Reply};
use super::{Settings, ECHOED, FROM_WINNER, QR, REFUSED, SERVFAIL, TC};

/// The Extended DNS Error code for "other" (RFC 8914).
const EDE_OTHER: u16 = 0;
/// How much of a reason an Extended DNS Error carries, in characters.
const MAX_REASON: usize = 200;

/// One message to write.
pub(super) struct Draft<'a> {
    pub id: u16,
    /// The header's flags word; its rcode bits come from ``rcode``.
    pub flags: u16,
    /// The rcode, with its EDNS extension above 0xF.
    pub rcode: u16,
    pub question: Option<(&'a Name<Bytes>, Rtype, Class)>,
    pub sections: [&'a [RRset]; 3],
    pub opt: Option<OptDraft<'a>>,
}

/// An OPT record (EDNS version 0).
pub(super) struct OptDraft<'a> {
    pub payload: u16,
    pub dnssec_ok: bool,
    /// The text of an Extended DNS Error of code "other".
    pub ede: Option<&'a str>,
}

/// The message in wire format (names compressed), or None when it exceeds ``max_size``.
pub(super) fn compose(draft: &Draft<'_>, max_size: usize) -> Option<Vec<u8>> {
    let target = StaticCompressor::new(Vec::with_capacity(512));
    let mut builder = MessageBuilder::from_target(target).ok()?;
    builder.set_push_limit(max_size);
    builder.header_mut().set_id(draft.id);
    let mut question = builder.question();
    if let Some(q) = draft.question {
        question.push(q).ok()?;
    }
    let mut answer = question.answer();
    for (owner, class, ttl, data) in records(draft.sections[0]) {
        answer.push((owner, class, ttl, data)).ok()?;
    }
    let mut authority = answer.authority();
    for (owner, class, ttl, data) in records(draft.sections[1]) {
        authority.push((owner, class, ttl, data)).ok()?;
    }
    let mut additional = authority.additional();
    for (owner, class, ttl, data) in records(draft.sections[2]) {
        additional.push((owner, class, ttl, data)).ok()?;
    }
    if let Some(opt) = &draft.opt {
        additional.opt(|o| {
            o.set_udp_payload_size(opt.payload);
            o.set_dnssec_ok(opt.dnssec_ok);
            o.set_rcode(OptRcode::masked_from_int(draft.rcode));
            match opt.ede {
                Some(text) => {
                    let len = u16::try_from(2 + text.len()).expect("a reason is short");
                    o.push_raw_option(OptionCode::EXTENDED_ERROR, len, |t| {
                        t.append_slice(&EDE_OTHER.to_be_bytes())?;
                        t.append_slice(text.as_bytes())
                    })
                }
                None => Ok(()),
            }
        }).ok()?;
    }
    let mut wire = additional.finish().into_target();
    let word = (draft.flags & !0xF) | (draft.rcode & 0xF);
    wire[2..4].copy_from_slice(&word.to_be_bytes());
    Some(wire)
}

type Record<'a> = (&'a domain::base::ParsedName<Bytes>, Class, Ttl, &'a super::reply::Data);

fn records(rrsets: &[RRset]) -> impl Iterator<Item = Record<'_>> {
    rrsets.iter().flat_map(|s| {
        s.rdata.iter().map(move |r| (&s.owner, s.class, Ttl::from_secs(s.ttl), &r.data))
    })
}

/// The winning reply under the client's ID and question, at most ``max_size`` bytes.
///
/// Only voted sections are carried, and no EDNS option. When they do not fit, the client gets
/// the header and question with TC set (and retries over TCP).
pub fn encode_reply(query: &Query, winner: &Reply, settings: &Settings, max_size: usize)
                    -> Vec<u8> {
    let mut rcode = winner.rcode;
    if rcode > 0xF && !query.edns {
        rcode = SERVFAIL; // an extended rcode cannot be said without EDNS
    }
    let opt = query.edns.then_some(OptDraft { payload: settings.udp_payload,
                                              dnssec_ok: winner.dnssec_ok.unwrap_or(false),
                                              ede: None });
    let mut draft = Draft { id: query.id,
                            flags: QR | (query.client_flags() & ECHOED)
                                | (winner.flags & FROM_WINNER),
                            rcode, question: Some((query.qname(), query.qtype, Class::IN)),
                            sections: winner.voted(settings), opt };
    if let Some(wire) = compose(&draft, max_size) {
        return wire;
    }
    draft.sections = [&[], &[], &[]];
    draft.flags |= TC;
    compose(&draft, usize::MAX).expect("a header, a question and an OPT record always fit")
}

/// Fail closed: SERVFAIL, with an Extended DNS Error naming the reason when the client uses
/// EDNS; never any executor's answer.
pub fn servfail(query: &Query, settings: &Settings, reason: &str) -> Vec<u8> {
    empty(query, settings, SERVFAIL, reason)
}

/// REFUSED, before any executor is asked (a query an immune memory refuses).
pub fn refused(query: &Query, settings: &Settings) -> Vec<u8> {
    empty(query, settings, REFUSED, "")
}

fn empty(query: &Query, settings: &Settings, rcode: u16, reason: &str) -> Vec<u8> {
    let reason = match reason.char_indices().nth(MAX_REASON) {
        Some((end, _)) => &reason[..end],
        None => reason,
    };
    let opt = query.edns.then_some(OptDraft {
        payload: settings.udp_payload, dnssec_ok: false,
        ede: (!reason.is_empty()).then_some(reason) });
    compose(&Draft { id: query.id, flags: QR | (query.client_flags() & ECHOED),
                     rcode, question: Some((query.qname(), query.qtype, Class::IN)),
                     sections: [&[], &[], &[]], opt }, usize::MAX)
        .expect("a header, a question and an OPT record always fit")
}
