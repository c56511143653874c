//! The input agent and the response reader on their own: tables of what must be refused, and
//! the property the fuzzer checks (refused with a 4xx, or re-parsed to the same request).

use bytes::Bytes;
use endosec_dataplane::http::{self, Limits, Response, ResponseReader};
use endosec_dataplane::model::ErrorKind;
use proptest::prelude::*;

use endosec_dataplane::http::contract::read_all;

fn status(data: &[u8]) -> u16 {
    match read_all(data, Limits::default(), data.len()) {
        Err(r) => r.status,
        Ok(reqs) => panic!("accepted {} request(s) from {:?}", reqs.len(),
                           String::from_utf8_lossy(data)),
    }
}

#[test]
fn pipelined_requests_come_out_in_order_whatever_the_pieces() {
    let data = b"GET / HTTP/1.1\r\nHost: h\r\n\r\nPOST /b HTTP/1.1\r\nHost: h\r\n\
                 Content-Length: 2\r\n\r\nokPUT /c HTTP/1.1\r\nHost: h\r\n\
                 Transfer-Encoding: chunked\r\n\r\n1\r\nz\r\n0\r\n\r\n";
    for step in [1, 5, data.len()] {
        let reqs = read_all(data, Limits::default(), step).unwrap();
        let seen: Vec<(&[u8], &[u8], &[u8])> =
            reqs.iter().map(|r| (&r.method[..], &r.target[..], &r.body[..])).collect();
        assert_eq!(seen, vec![(&b"GET"[..], &b"/"[..], &b""[..]), (b"POST", b"/b", b"ok"),
                              (b"PUT", b"/c", b"z")]);
    }
}

#[test]
fn ambiguous_framing_and_bad_syntax_are_refused_with_their_status() {
    let cases: &[(&[u8], u16)] = &[
        (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
         400),
        (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", 400),
        (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer_Encoding: chunked\r\nContent-Length: 1\r\n\r\nx",
         400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\nHost: h\n\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\rX: y\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x01b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),
        (b"GET http://u@h/ HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        (b"GET /\xff HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505),
        (b"FROB / HTTP/1.1\r\nHost: h\r\n\r\n", 501),
        (b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n", 501),
        (b"GET / HTTP/1.1\r\nHost: h\r\nExpect: magic\r\n\r\n", 417),
        (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1048577\r\n\r\n", 413),
    ];
    for (data, want) in cases {
        assert_eq!(status(data), *want, "{:?}", String::from_utf8_lossy(data));
    }
    let long_target = [b"GET /".as_slice(), &[b'a'; 8192], b" HTTP/1.1\r\nHost: h\r\n\r\n"].concat();
    assert_eq!(status(&long_target), 414);
    let many = [b"GET / HTTP/1.1\r\nHost: h\r\n".as_slice(), &b"X: y\r\n".repeat(100), b"\r\n"]
        .concat();
    assert_eq!(status(&many), 431);
}

#[test]
fn absolute_form_becomes_origin_form_with_its_host() {
    let reqs = read_all(b"GET http://real.example:8080 HTTP/1.1\r\nHost: other\r\nA: b\r\n\r\n",
                        Limits::default(), 1).unwrap();
    assert_eq!(&reqs[0].target[..], b"/");
    assert_eq!(reqs[0].headers, vec![(Bytes::from("host"), Bytes::from("real.example:8080")),
                                     (Bytes::from("a"), Bytes::from("b"))]);
}

fn response(data: &[u8], method: &[u8], eof: bool) -> Result<Option<Response>, ErrorKind> {
    let limits = Limits { max_response_bytes: 10, max_header_bytes: 200, max_headers: 3,
                          ..Limits::default() };
    let mut reader = ResponseReader::new(limits, method);
    reader.receive(data);
    if eof {
        reader.receive_eof();
    }
    reader.next_event().map_err(|e| e.kind)
}

#[test]
fn executor_responses_are_read_strictly() {
    let ok = response(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nz",
                      b"GET", false).unwrap().unwrap();
    assert_eq!((ok.status, &ok.body[..], ok.keep_alive), (200, &b"z"[..], true));
    let chunked = response(b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n\
                             3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\n", b"GET", false).unwrap().unwrap();
    assert_eq!(&chunked.body[..], b"abc");
    let head = response(b"HTTP/1.1 200 OK\r\nContent-Length: 999\r\n\r\n", b"HEAD", false)
        .unwrap().unwrap();
    assert_eq!((&head.body[..], head.keep_alive), (&b""[..], true));
    let close = response(b"HTTP/1.1 200 OK\r\n\r\nabc", b"GET", true).unwrap().unwrap();
    assert_eq!((&close.body[..], close.keep_alive), (&b"abc"[..], false));
    assert_eq!(response(b"HTTP/1.1 200 OK\r\n\r\nabc", b"GET", false), Ok(None));
    let cases: &[(&[u8], ErrorKind)] = &[
        (b"", ErrorKind::Reset),
        (b"garbage\r\n\r\n", ErrorKind::Malformed),
        (b"HTTP/1.1 200 OK\nContent-Length: 0\n\n", ErrorKind::Malformed),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
         ErrorKind::Malformed),
        (b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", ErrorKind::Malformed),
        (b"HTTP/1.1 999 Odd\r\n\r\n", ErrorKind::Malformed),
        (b"HTTP/1.1 101 Switching\r\nUpgrade: x\r\n\r\n", ErrorKind::Malformed),
        (b"HTTP/1.1 200 O\x01K\r\nContent-Length: 0\r\n\r\n", ErrorKind::Malformed),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", ErrorKind::Malformed),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n", ErrorKind::Oversize),
        (b"HTTP/1.1 200 OK\r\n\r\nxxxxxxxxxxx", ErrorKind::Oversize),
        (b"HTTP/1.1 200 OK\r\nA: b\r\nA: b\r\nA: b\r\nA: b\r\n\r\n", ErrorKind::Oversize),
    ];
    for (data, kind) in cases {
        assert_eq!(response(data, b"GET", true), Err(*kind), "{:?}",
                   String::from_utf8_lossy(data));
    }
}

#[test]
fn bytes_after_a_response_poison_its_connection() {
    let r = response(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1", b"GET", false)
        .unwrap().unwrap();
    assert!(!r.keep_alive);
}

#[test]
fn encoded_responses_drop_hop_by_hop_and_recompute_framing() {
    let h = |n: &'static str, v: &'static str| (Bytes::from(n), Bytes::from(v));
    let resp = Response { status: 200, reason: Bytes::new(), body: Bytes::from("hi"),
                          keep_alive: true,
                          headers: vec![h("connection", "x-drop"), h("x-drop", "1"),
                                        h("content-length", "99"), h("x-keep", "2")] };
    let out = http::encode_response(&resp, false, false, &[h("x-endosec", "ok")]).unwrap();
    assert_eq!(out, b"HTTP/1.1 200 OK\r\nx-keep: 2\r\nx-endosec: ok\r\ncontent-length: 2\r\n\
                      connection: close\r\n\r\nhi");
    assert!(http::encode_response(&resp, true, false, &[h("x", "a\r\nset-cookie: evil")])
        .is_err());
    let err = http::error_response(502, &[("reason", "caf\u{e9}"), ("error", "no quorum")],
                                   true);
    assert!(err.ends_with(br#"{"error":"no quorum","reason":"caf\u00e9"}"#));
}

/// Requests built from valid parts, and the bytes attacks are made of.
fn request_bytes() -> impl Strategy<Value = Vec<u8>> {
    let line = prop::sample::select(vec![
        &b"GET / HTTP/1.1\r\n"[..], b"POST /p?q=1 HTTP/1.1\r\n", b"GET / HTTP/1.0\r\n",
        b"OPTIONS * HTTP/1.1\r\n", b"GET http://h/x HTTP/1.1\r\n", b"PRI * HTTP/2.0\r\n",
        b"GET /\x00 HTTP/1.1\r\n", b"GET / HTTP/1.1\n", b"\r\n"]);
    let field = prop::sample::select(vec![
        &b"Host: h\r\n"[..], b"Host: h\r\n", b"Host: h\r\n", b"Content-Length: 3\r\n",
        b"Content-Length: 0\r\n", b"Content-Length: -1\r\n", b"Transfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: chunked\t\r\n", b"Transfer_Encoding: chunked\r\n",
        b"Transfer-Encoding: gzip\r\n", b"Connection: close\r\n", b"Connection: x, host\r\n",
        b"Expect: 100-continue\r\n", b"X: y\r\n", b" folded\r\n", b"X : y\r\n", b"X: a\rb\r\n",
        b"Upgrade: h2c\r\n", b"Keep-Alive: 5\r\n"]);
    let body = prop::sample::select(vec![
        &b""[..], b"abc", b"3\r\nabc\r\n", b"0\r\n\r\n", b"1 ;ext=v\r\nz\r\n",
        b"ffffffffffffffffff\r\n", b"0\r\nT: t\r\n\r\n", b"3\nabc\n", b"\r\n", b"\x00"]);
    let message = (line, prop::collection::vec(field, 0..6), prop::collection::vec(body, 0..3))
        .prop_map(|(l, f, b)| [l.to_vec(), f.concat(), b"\r\n".to_vec(), b.concat()].concat());
    prop_oneof![
        prop::collection::vec(message, 1..3).prop_map(|m| m.concat()),
        prop::collection::vec(any::<u8>(), 0..300),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn every_input_is_refused_or_round_trips(data in request_bytes(), step in 1usize..64) {
        endosec_dataplane::http::contract::check(&data, step);
    }
}
