//! Bytes out: the one request every executor receives, and the answer the client receives.
//!
//! Both directions drop hop-by-hop headers and recompute framing, so nothing a client or an
//! executor says about its own connection can leak through the gateway.

use bytes::Bytes;

use super::syntax::{end_to_end, is_digits, is_field_value, is_token, phrase, show};
use super::{Refusal, Request, Response};

/// Methods whose requests carry a body by convention: they always get a Content-Length.
const BODY_METHODS: [&[u8]; 3] = [b"POST", b"PUT", b"PATCH"];
/// Framing is recomputed; Expect is answered by the gateway, which always sends whole bodies.
const REQUEST_RECOMPUTED: [&[u8]; 2] = [b"content-length", b"expect"];
/// Range requests are defined for GET only (RFC 9110 14.2: any other method must ignore
/// them); servers differ on HEAD, so other methods are sent without them.
const GET_ONLY: [&[u8]; 2] = [b"range", b"if-range"];
const RESPONSE_RECOMPUTED: [&[u8]; 1] = [b"content-length"];

/// Refuse a header that would let bytes escape its field when written out.
fn check_header(name: &[u8], value: &[u8]) -> Result<(), String> {
    if !is_token(name) || name.iter().any(u8::is_ascii_uppercase) {
        return Err(format!("invalid header name '{}' (must be a lower-case token)", show(name)));
    }
    if !is_field_value(value) {
        return Err(format!("invalid value for header '{}'", show(name)));
    }
    Ok(())
}

fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The single byte string sent, identically, to every executor: HTTP/1.1 with the client's
/// end-to-end headers in order (Range and If-Range only with GET), a recomputed
/// Content-Length and `connection: keep-alive`. ``host`` fills in Host for HTTP/1.0 clients
/// that sent none.
pub fn upstream_request_bytes(request: &Request, host: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(256 + request.body.len());
    out.extend_from_slice(&request.method);
    out.push(b' ');
    out.extend_from_slice(&request.target);
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut has_host = false;
    let get = request.method == "GET";
    let headers = end_to_end(&request.headers, &REQUEST_RECOMPUTED)
        .filter(|(name, _)| get || !GET_ONLY.contains(&name.as_ref()));
    for (name, value) in headers {
        has_host |= name.as_ref() == b"host";
        field(&mut out, name, value);
    }
    if !has_host {
        check_header(b"host", host)?;
        field(&mut out, b"host", host);
    }
    if !request.body.is_empty() || BODY_METHODS.contains(&request.method.as_ref()) {
        field(&mut out, b"content-length", request.body.len().to_string().as_bytes());
    }
    out.extend_from_slice(b"connection: keep-alive\r\n\r\n");
    out.extend_from_slice(&request.body);
    Ok(out)
}

fn status_line(out: &mut Vec<u8>, status: u16) {
    out.extend_from_slice(format!("HTTP/1.1 {status} {}\r\n", phrase(status)).as_bytes());
}

/// The chosen response as sent to the client.
///
/// The reason phrase is the standard one (executors' phrases are not voted on). For a HEAD
/// request (``head_only``) the body is omitted and the executor's own Content-Length, which
/// describes the GET body, is kept.
pub fn encode_response(response: &Response, keep_alive: bool, head_only: bool,
                       extra_headers: &[(Bytes, Bytes)]) -> Result<Vec<u8>, String> {
    let status = response.status;
    if status < 200 {
        return Err(format!("cannot forward interim status {status}"));
    }
    let lowered: Vec<(Bytes, Bytes)>;
    let headers = if response.headers.iter().any(|(n, _)| n.iter().any(u8::is_ascii_uppercase)) {
        lowered = response.headers.iter()
            .map(|(n, v)| (Bytes::from(n.to_ascii_lowercase()), v.clone())).collect();
        &lowered
    } else {
        &response.headers
    };
    let mut out = Vec::with_capacity(256 + response.body.len());
    status_line(&mut out, status);
    for (name, value) in end_to_end(headers, &RESPONSE_RECOMPUTED).chain(extra_headers) {
        check_header(name, value)?;
        field(&mut out, name, value);
    }
    let bodyless = status == 204 || status == 304;
    if !bodyless {
        let announced = response.header(b"content-length").filter(|v| is_digits(v));
        match announced {
            Some(length) if head_only => field(&mut out, b"content-length", length),
            _ if head_only && response.body.is_empty() => {}
            _ => field(&mut out, b"content-length", response.body.len().to_string().as_bytes()),
        }
    }
    out.extend_from_slice(if keep_alive { b"connection: keep-alive\r\n\r\n".as_slice() }
                          else { b"connection: close\r\n\r\n" });
    if !head_only && !bodyless {
        out.extend_from_slice(&response.body);
    }
    Ok(out)
}

/// A JSON error answered by the gateway itself (400, 413, 431, 502, ...): keys sorted and
/// non-ASCII escaped as Python's `json.dumps(sort_keys=True)` writes them. It closes the
/// connection unless ``keep_alive``: after a protocol error the stream cannot be trusted.
pub fn error_response(status: u16, payload: &[(&str, &str)], keep_alive: bool) -> Vec<u8> {
    error_with(status, payload, None, keep_alive)
}

/// The answer to a refused request: its status and reason, and ``Allow`` for a 405.
pub fn refusal_response(refusal: &Refusal, keep_alive: bool) -> Vec<u8> {
    error_with(refusal.status, &[("error", refusal.reason.as_str())], refusal.allow.as_deref(),
               keep_alive)
}

fn error_with(status: u16, payload: &[(&str, &str)], allow: Option<&[u8]>, keep_alive: bool)
              -> Vec<u8> {
    debug_assert!((400..=599).contains(&status), "error status must be 4xx or 5xx");
    let mut pairs = payload.to_vec();
    pairs.sort_by(|a, b| a.0.cmp(b.0));
    let mut body = String::from("{");
    for (i, (key, value)) in pairs.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        json_string(&mut body, key);
        body.push(':');
        json_string(&mut body, value);
    }
    body.push('}');
    let mut out = Vec::with_capacity(160 + body.len());
    status_line(&mut out, status);
    out.extend_from_slice(b"content-type: application/json\r\ncache-control: no-store\r\n");
    if let Some(methods) = allow {
        field(&mut out, b"allow", methods);
    }
    field(&mut out, b"content-length", body.len().to_string().as_bytes());
    out.extend_from_slice(if keep_alive { b"connection: keep-alive\r\n\r\n".as_slice() }
                          else { b"connection: close\r\n\r\n" });
    out.extend_from_slice(body.as_bytes());
    out
}

/// A JSON string with ASCII-only output (`ensure_ascii`).
fn json_string(out: &mut String, s: &str) {
    use std::fmt::Write;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
}
