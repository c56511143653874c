//! The sans-I/O DNS boundary on hand-built messages (Python's tests hold it to the full
//! specification with dnspython's messages).

use std::str::FromStr;
use std::sync::Arc;

use bytes::Bytes;
use domain::base::iana::{Class, Opcode, OptRcode, Rcode};
use domain::base::message_builder::{AdditionalBuilder, AnswerBuilder};
use domain::base::{Message, MessageBuilder, Name, Rtype};
use domain::rdata::{Cname, Mx, Txt, A};

use super::*;

fn name(text: &str) -> Name<Vec<u8>> {
    Name::from_str(text).unwrap()
}

/// A query for ``qname``/``qtype``, with EDNS when ``payload`` is given.
fn query_wire(qname: &str, qtype: Rtype, payload: Option<u16>) -> Vec<u8> {
    let mut builder = MessageBuilder::new_vec();
    builder.header_mut().set_id(4242);
    builder.header_mut().set_rd(true);
    let mut q = builder.question();
    q.push((name(qname), qtype, Class::IN)).unwrap();
    let mut additional = q.additional();
    if let Some(payload) = payload {
        additional.opt(|o| {
            o.set_udp_payload_size(payload);
            o.set_dnssec_ok(true);
            Ok(())
        }).unwrap();
    }
    additional.finish()
}

fn query(qname: &str, qtype: Rtype, payload: Option<u16>) -> Query {
    parse_query(Bytes::from(query_wire(qname, qtype, payload)), &Settings::default()).unwrap()
}

/// An executor's reply to ``q``: its upstream query answered with ``fill``.
fn reply_wire(q: &Query, aa: bool,
              fill: impl FnOnce(AnswerBuilder<Vec<u8>>) -> AdditionalBuilder<Vec<u8>>)
              -> Vec<u8> {
    let upstream = Message::from_octets(q.upstream_wire(&Settings::default())).unwrap();
    let mut answer = MessageBuilder::new_vec().start_answer(&upstream, Rcode::NOERROR).unwrap();
    answer.header_mut().set_aa(aa);
    fill(answer).finish()
}

fn empty(answer: AnswerBuilder<Vec<u8>>) -> AdditionalBuilder<Vec<u8>> {
    answer.additional()
}

fn output(q: &Query, wire: Vec<u8>, settings: &Settings) -> crate::ballot::Output {
    parse_reply(Bytes::from(wire), q).unwrap().output(Arc::from("e"), settings, 0.0)
}

fn refusal(wire: Vec<u8>) -> Refusal {
    parse_query(Bytes::from(wire), &Settings::default()).unwrap_err()
}

#[test]
fn a_query_is_forwarded_normalised_with_the_clients_id_and_spelling() {
    let q = query("WwW.Example.TEST", Rtype::AAAA, Some(4096));
    assert_eq!((q.id, q.edns, q.payload, q.dnssec_ok), (4242, true, 4096, true));
    assert_eq!((q.label(), q.key()), ("AAAA".to_owned(), "www.example.test.".to_owned()));
    let settings = Settings::default();
    assert_eq!(q.udp_limit(&settings), 1232);
    let up = Message::from_octets(q.upstream_wire(&settings)).unwrap();
    assert_eq!(up.header().id(), 4242);
    assert!(up.header().rd() && !up.header().qr());
    let opt = up.opt().unwrap();
    assert_eq!((opt.udp_payload_size(), opt.dnssec_ok(), opt.opt().iter::<domain::base::opt::AllOptData<_, _>>().count()),
               (1232, true, 0));
    assert_eq!(up.sole_question().unwrap().qname().to_string(), "WwW.Example.TEST");
    assert_eq!(query("a.test", Rtype::A, None).udp_limit(&settings), 512);
}

#[test]
fn refusals_echo_the_query_and_say_why() {
    assert_eq!(refusal(vec![0; 11]).label(), "dropped");
    let mut response = query_wire("a.test", Rtype::A, None);
    response[2] |= 0x80;
    assert!(refusal(response).reply(&Settings::default()).is_none());
    let mut notify = query_wire("a.test", Rtype::SOA, None);
    notify[2] |= Opcode::NOTIFY.to_int() << 3;
    let refused = refusal(notify);
    assert_eq!(refused.rcode, Some(OptRcode::NOTIMP));
    let answer = Message::from_octets(refused.reply(&Settings::default()).unwrap()).unwrap();
    assert_eq!((answer.header().id(), answer.header().opcode()), (4242, Opcode::NOTIFY));
    assert!(answer.header().qr() && answer.header().rd());
    assert_eq!(answer.sole_question().unwrap().qname().to_string(), "a.test");
    for (qtype, rcode) in [(Rtype::ANY, OptRcode::REFUSED), (Rtype::AXFR, OptRcode::REFUSED),
                           (Rtype::OPT, OptRcode::FORMERR), (Rtype::TKEY, OptRcode::FORMERR)] {
        assert_eq!(refusal(query_wire("a.test", qtype, Some(1232))).rcode, Some(rcode));
    }
    let mut trailing = query_wire("a.test", Rtype::A, None);
    trailing.push(0);
    assert_eq!(refusal(trailing).label(), "FORMERR");
    let mut badvers = query_wire("a.test", Rtype::A, Some(1232));
    let version = badvers.len() - 5; // the OPT record's version byte
    badvers[version] = 1;
    let refused = refusal(badvers);
    assert_eq!(refused.rcode, Some(OptRcode::BADVERS));
    let answer = Message::from_octets(refused.reply(&Settings::default()).unwrap()).unwrap();
    assert_eq!(answer.opt_rcode(), OptRcode::BADVERS);
}

#[test]
fn types_servers_answer_differently_and_nul_labels_are_refused_with_the_question() {
    for qtype in [0, 128, 200, 248, 253, 254] {
        let refused = refusal(query_wire("a.test", Rtype::from_int(qtype), Some(1232)));
        assert_eq!(refused.rcode, Some(OptRcode::REFUSED), "type {qtype}");
        let answer = Message::from_octets(refused.reply(&Settings::default()).unwrap()).unwrap();
        let question = answer.sole_question().unwrap();
        assert_eq!((question.qtype(), answer.header().id()), (Rtype::from_int(qtype), 4242));
    }
    for qtype in [1, 127, 256, 65535] {
        assert!(parse_query(Bytes::from(query_wire("a.test", Rtype::from_int(qtype), None)),
                            &Settings::default()).is_ok(), "type {qtype}");
    }
    let mut wire = query_wire("aaa.test", Rtype::A, None);
    let at = wire.windows(3).position(|w| w == b"aaa").unwrap();
    wire[at..at + 3].copy_from_slice(b"a\x00b");
    let refused = refusal(wire);
    assert_eq!((refused.rcode, refused.reason.as_str()),
               (Some(OptRcode::REFUSED), "a NUL octet in the name"));
    let answer = Message::from_octets(refused.reply(&Settings::default()).unwrap()).unwrap();
    assert_eq!(answer.sole_question().unwrap().qname().to_string(), "a\\000b.test");
    let configured = Settings::compile(&Spec { refuse_types: vec![Rtype::NULL.to_int()],
                                                ..Spec::default() }).unwrap();
    let null = Bytes::from(query_wire("a.test", Rtype::NULL, None));
    assert!(parse_query(null.clone(), &Settings::default()).is_ok());
    let refused = parse_query(null, &configured).unwrap_err();
    assert_eq!((refused.rcode, refused.reason.as_str()),
               (Some(OptRcode::REFUSED), "NULL queries are not served"));
}

#[test]
fn replies_agree_whatever_the_case_order_and_duplicates() {
    let q = query("example.test", Rtype::MX, Some(1232));
    let settings = Settings::default();
    let a = output(&q, reply_wire(&q, true, |mut answer| {
        answer.push((name("example.test"), 60, Mx::new(10, name("mail.example.test")))).unwrap();
        answer.push((name("example.test"), 60, Mx::new(20, name("mx2.example.test")))).unwrap();
        answer.additional()
    }), &settings);
    let b = output(&q, reply_wire(&q, true, |mut answer| {
        answer.push((name("EXAMPLE.test"), 30, Mx::new(20, name("MX2.example.test")))).unwrap();
        answer.push((name("example.test"), 60, Mx::new(10, name("mail.example.test")))).unwrap();
        answer.push((name("example.test"), 60, Mx::new(10, name("Mail.example.test")))).unwrap();
        answer.additional()
    }), &settings);
    // One RRset at the smallest TTL: the same records, TTLs 60 and 30 apart.
    assert_eq!(a.canonical().key, b.canonical().key);
    assert!(!a.agrees_with(&b));
    let masked = Settings::compile(&Spec { ttl: "mask".into(), ..Spec::default() }).unwrap();
    let (a, b) = (output(&q, reply_wire(&q, true, empty), &masked),
                  output(&q, reply_wire(&q, false, empty), &masked));
    assert_eq!(a.head, b"NOERROR\tAA RD\tno-edns");
    assert!(!a.agrees_with(&b), "AA is compared");
}

#[test]
fn a_singleton_keeps_its_last_record() {
    let q = query("alias.test", Rtype::A, None);
    let settings = Settings::default();
    let two = output(&q, reply_wire(&q, true, |mut answer| {
        answer.push((name("alias.test"), 60, Cname::new(name("old.test")))).unwrap();
        answer.push((name("alias.test"), 60, Cname::new(name("new.test")))).unwrap();
        answer.additional()
    }), &settings);
    let one = output(&q, reply_wire(&q, true, |mut answer| {
        answer.push((name("alias.test"), 60, Cname::new(name("new.test")))).unwrap();
        answer.additional()
    }), &settings);
    assert_eq!(two.raw, one.raw);
}

#[test]
fn replies_to_another_question_or_id_are_refused() {
    let q = query("a.test", Rtype::A, None);
    let other = query("b.test", Rtype::A, None);
    assert!(parse_reply(Bytes::from(reply_wire(&other, true, empty)), &q).is_err());
    assert!(parse_reply(Bytes::from(q.upstream_wire(&Settings::default())), &q).is_err());
    let mut wire = reply_wire(&q, true, empty);
    wire[1] ^= 1;
    assert!(parse_reply(Bytes::from(wire), &q).unwrap_err().contains("not a response"));
}

#[test]
fn a_large_reply_becomes_tc_over_udp_and_stays_whole_over_tcp() {
    let q = query("Big.test", Rtype::TXT, None);
    let settings = Settings::default();
    let wire = reply_wire(&q, true, |mut answer| {
        for i in 0..40 {
            let text = format!("record {i:02} {}", "x".repeat(90));
            answer.push((name("big.test"), 60, Txt::<Vec<u8>>::build_from_slice(text.as_bytes()).unwrap()))
                .unwrap();
        }
        answer.additional()
    });
    let winner = parse_reply(Bytes::from(wire), &q).unwrap();
    let udp = encode_reply(&q, &winner, &settings, q.udp_limit(&settings));
    assert!(udp.len() <= 512);
    let small = Message::from_octets(udp).unwrap();
    assert!(small.header().tc() && small.header_counts().ancount() == 0);
    assert_eq!(small.sole_question().unwrap().qname().to_string(), "Big.test");
    let full = Message::from_octets(encode_reply(&q, &winner, &settings, MAX_TCP_MESSAGE))
        .unwrap();
    assert!(!full.header().tc() && full.header_counts().ancount() == 40);
}

#[test]
fn servfail_names_the_reason_only_with_edns() {
    let settings = Settings::default();
    let q = query("a.test", Rtype::A, Some(1232));
    let out = Message::from_octets(servfail(&q, &settings, "no quorum")).unwrap();
    assert_eq!(out.header().rcode(), Rcode::SERVFAIL);
    let ede = out.opt().unwrap().opt().first::<domain::base::opt::ExtendedError<_>>().unwrap();
    assert_eq!(ede.text_slice(), Some(&b"no quorum"[..]));
    let bare = query("a.test", Rtype::A, None);
    assert!(Message::from_octets(servfail(&bare, &settings, "no quorum")).unwrap().opt()
        .is_none());
}

#[test]
fn refused_echoes_the_question_and_says_nothing_more() {
    let settings = Settings::default();
    let q = query("Leak.test", Rtype::TXT, Some(1232));
    let out = Message::from_octets(refused(&q, &settings)).unwrap();
    assert_eq!(out.header().rcode(), Rcode::REFUSED);
    assert_eq!(out.header().id(), q.id);
    assert_eq!(out.sole_question().unwrap().qname().to_string(), "Leak.test");
    assert!(out.opt().unwrap().opt().first::<domain::base::opt::ExtendedError<_>>().is_none());
    assert_eq!(out.header_counts().ancount(), 0);
}

#[test]
fn the_referral_glue_counts_only_in_referrals_when_so_configured() {
    let referrals = Settings::compile(&Spec { additional: "referrals".into(), ..Spec::default() })
        .unwrap();
    let q = query("example.test", Rtype::MX, None);
    let with_extra = |address: [u8; 4]| reply_wire(&q, true, |mut answer| {
        answer.push((name("example.test"), 60, Mx::new(10, name("mail.example.test")))).unwrap();
        let mut additional = answer.additional();
        additional.push((name("mail.example.test"), 60, A::from_octets(address[0], address[1],
                                                                        address[2], address[3])))
            .unwrap();
        additional
    });
    let (a, b) = (output(&q, with_extra([192, 0, 2, 25]), &referrals),
                  output(&q, with_extra([203, 0, 113, 1]), &referrals));
    assert!(a.agrees_with(&b));
    let all = Settings::default();
    assert!(!output(&q, with_extra([192, 0, 2, 25]), &all)
        .agrees_with(&output(&q, with_extra([203, 0, 113, 1]), &all)));
}
