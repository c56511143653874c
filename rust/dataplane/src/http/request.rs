//! The input agent's request reader: the strict, trusted entry point for client bytes.
//!
//! A head is framed and pre-scanned for everything a lenient parser would tolerate or that
//! makes framing ambiguous (NUL, bare CR or LF, obs-fold), its request line checked by hand,
//! its fields parsed by httparse, then the framing rules applied: one Content-Length of digits
//! or exactly one `chunked` (never both), no header whose name folds to a framing header once
//! `_` is read as `-` (CGI-style back ends would see conflicting framing), one valid Host.
//! Bodies are read here, strictly, so a request is either complete and unambiguous or refused
//! before any byte of it is forwarded.

use bytes::{Buf, Bytes, BytesMut};

use super::chunked::{ChunkError, Chunked};
use super::syntax::{check_line_endings, connection_tokens, count_lines, first_line_end,
                    is_target, is_token, lower_name, show, trim_ows, HEAD_END};
use super::{Headers, Limits, Next, Refusal, Request, Version};

/// Methods llhttp knows (what executors commonly parse); others are 501.
pub const KNOWN_METHODS: [&[u8]; 33] = [
    b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"TRACE", b"PATCH", b"COPY",
    b"LOCK", b"MKCOL", b"MOVE", b"PROPFIND", b"PROPPATCH", b"SEARCH", b"UNLOCK", b"BIND",
    b"REBIND", b"UNBIND", b"ACL", b"REPORT", b"MKACTIVITY", b"CHECKOUT", b"MERGE", b"M-SEARCH",
    b"NOTIFY", b"SUBSCRIBE", b"UNSUBSCRIBE", b"PURGE", b"MKCALENDAR", b"LINK", b"UNLINK",
    b"SOURCE",
];
/// Tunnels and the HTTP/2 preface: never served by a request/response boundary.
const UNSUPPORTED: [&[u8]; 2] = [b"CONNECT", b"PRI"];

fn fail(status: u16, reason: impl Into<String>) -> Refusal {
    Refusal { status, reason: reason.into(), allow: None }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
}

/// A validated head waiting for its body.
#[derive(Debug)]
struct Head {
    method: Bytes,
    target: Bytes,
    version: Version,
    headers: Headers,
    keep_alive: bool,
    framing: Framing,
    expect_continue: bool,
}

/// Turns a client's byte stream into complete, unambiguous [`Request`]s, pipelining included.
///
/// Feed bytes with `receive` (`receive_eof` when the client closed) and call `next` until it
/// returns `NeedData`. The first violation is a [`Refusal`] whose status is the answer; the
/// reader then stays broken and `next` returns the same refusal again.
#[derive(Debug)]
pub struct RequestReader {
    limits: Limits,
    buf: BytesMut,
    eof: bool,
    done: bool,
    failure: Option<Refusal>,
    head: Option<Head>,
    head_size: usize,
    chunked: Option<Chunked>,
    /// How far the buffer was already checked for a head terminator and bad line endings.
    scanned: usize,
}

impl RequestReader {
    pub fn new(limits: Limits) -> RequestReader {
        RequestReader { limits, buf: BytesMut::new(), eof: false, done: false, failure: None,
                        head: None, head_size: 0, chunked: None, scanned: 0 }
    }

    /// Buffer bytes from the client (ignored once the client closed or the reader broke).
    pub fn receive(&mut self, data: &[u8]) {
        if !self.eof && self.failure.is_none() {
            self.buf.extend_from_slice(data);
        }
    }

    /// The client closed its side.
    pub fn receive_eof(&mut self) {
        self.eof = true;
    }

    /// The next complete request, `NeedData`, or `Closed` once the client is done.
    pub fn next_event(&mut self) -> Result<Next, Refusal> {
        if let Some(refusal) = &self.failure {
            return Err(refusal.clone());
        }
        self.step().inspect_err(|refusal| self.failure = Some(refusal.clone()))
    }

    /// The client sent ``Expect: 100-continue`` and waits before sending its body.
    pub fn expects_continue(&self) -> bool {
        self.head.as_ref().is_some_and(|h| h.expect_continue) && self.buf.is_empty()
    }

    /// Bytes received for requests not yet returned (> 0: a request is under way).
    pub fn buffered(&self) -> usize {
        self.buf.len() + if self.head.is_some() { self.head_size } else { 0 }
    }

    fn step(&mut self) -> Result<Next, Refusal> {
        if self.done {
            return Ok(Next::Closed);
        }
        if self.head.is_none() {
            let Some(raw) = self.take_head()? else {
                return Ok(if !self.buf.is_empty() || !self.eof { Next::NeedData }
                          else { Next::Closed });
            };
            self.head_size = raw.len();
            let head = parse_head(&raw, &self.limits)?;
            if head.framing == Framing::Chunked {
                self.chunked = Some(Chunked::new(self.limits.max_body_bytes,
                                                 self.limits.max_header_bytes));
            }
            self.head = Some(head);
        }
        let Some(body) = self.take_body()? else {
            if self.eof {
                return Err(fail(400, "connection closed in the middle of a request body"));
            }
            return Ok(Next::NeedData);
        };
        let head = self.head.take().expect("a head was parsed above");
        self.chunked = None;
        self.done = !head.keep_alive;
        Ok(Next::Request(Request { method: head.method, target: head.target,
                                   headers: head.headers, body, keep_alive: head.keep_alive,
                                   version: head.version }))
    }

    fn take_head(&mut self) -> Result<Option<Bytes>, Refusal> {
        // Blank lines between requests are tolerated (RFC 9112 2.2).
        while self.buf.starts_with(b"\r\n") {
            self.buf.advance(2);
            self.scanned = 0;
        }
        if self.buf.is_empty() {
            return Ok(None);
        }
        let from = self.scanned.saturating_sub(3);
        if let Some(at) = HEAD_END.find(&self.buf[from..]) {
            let end = from + at + 4;
            if end > self.limits.max_header_bytes {
                return Err(fail(431, "request head too large"));
            }
            self.scanned = 0;
            return Ok(Some(self.buf.split_to(end).freeze()));
        }
        let start = self.scanned.saturating_sub(usize::from(
            self.scanned > 0 && self.buf[self.scanned - 1] == b'\r'));
        check_line_endings(&self.buf[start..]).map_err(|why| fail(400, why))?;
        self.scanned = self.buf.len();
        if memchr::memmem::find(&self.buf, b"\r\n").is_none()
            && self.buf.len() > self.limits.max_target_bytes + 64 {
            return Err(fail(414, "request line too long"));
        }
        if self.buf.len() > self.limits.max_header_bytes {
            return Err(fail(431, "request head too large"));
        }
        if self.eof {
            return Err(fail(400, "connection closed in the middle of a request head"));
        }
        Ok(None)
    }

    fn take_body(&mut self) -> Result<Option<Bytes>, Refusal> {
        if let Some(chunked) = &mut self.chunked {
            return chunked.feed(&mut self.buf).map_err(|e| match e {
                ChunkError::Malformed(why) => fail(400, why),
                ChunkError::TooLarge => fail(413, "request body too large"),
                ChunkError::TrailersTooLarge => fail(431, "trailer section too large"),
            });
        }
        let Some(Head { framing: Framing::Length(length), .. }) = self.head else {
            unreachable!("a chunked head has a decoder");
        };
        if self.buf.len() < length {
            return Ok(None);
        }
        Ok(Some(self.buf.split_to(length).freeze()))
    }
}

/// Validate and parse one head (request line to the blank line, inclusive).
fn parse_head(raw: &Bytes, limits: &Limits) -> Result<Head, Refusal> {
    check_line_endings(raw).map_err(|why| fail(400, why))?;
    if memchr::memmem::find(raw, b"\r\n ").is_some()
        || memchr::memmem::find(raw, b"\r\n\t").is_some() {
        return Err(fail(400, "obsolete line folding in header"));
    }
    let lines = count_lines(raw);
    if lines - 2 > limits.max_headers {
        return Err(fail(431, "too many header fields"));
    }
    let line_end = first_line_end(raw).expect("a head ends in CRLF CRLF");
    let parts: Vec<&[u8]> = raw[..line_end].split(|&b| b == b' ').collect();
    if parts.len() == 3 && parts[1].len() > limits.max_target_bytes {
        return Err(fail(414, "request target too long"));
    }
    let [method, target, version] = parts[..] else {
        return Err(fail(400, "malformed request line"));
    };
    let version = match version {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() && !target.is_empty() =>
            (*major, *minor),
        _ => return Err(fail(400, "malformed request line")),
    };
    if !is_token(method) {
        return Err(fail(400, "invalid method token"));
    }
    let version = match version {
        (b'1', b'1') => Version::Http11,
        (b'1', b'0') => Version::Http10,
        (major, minor) => return Err(fail(505, format!(
            "HTTP version {}.{} is not supported", char::from(major), char::from(minor)))),
    };
    if UNSUPPORTED.contains(&method) || !KNOWN_METHODS.contains(&method) {
        return Err(fail(501, format!("method {} is not supported", show(method))));
    }
    let mut slots = vec![httparse::EMPTY_HEADER; lines - 2];
    let rest = &raw[line_end + 2..];
    let parsed = match httparse::parse_headers(rest, &mut slots) {
        Ok(httparse::Status::Complete((n, parsed))) if n == rest.len() => parsed,
        Ok(_) => return Err(fail(400, "invalid request head")),
        Err(e) => return Err(fail(400, format!("invalid request head: {e}"))),
    };
    let mut headers: Headers = Vec::with_capacity(parsed.len());
    for h in parsed {
        headers.push((lower_name(raw, h.name.as_bytes()), raw.slice_ref(trim_ows(h.value))));
    }
    interpret(raw.slice_ref(method), raw.slice_ref(target), version, headers, limits)
}

/// Apply the framing rules to parsed fields; anything ambiguous is refused.
fn interpret(method: Bytes, target: Bytes, version: Version, headers: Headers, limits: &Limits)
             -> Result<Head, Refusal> {
    let mut length: Option<usize> = None;
    let mut chunked = false;
    let mut hosts = 0;
    let mut expect_continue = false;
    for (name, value) in &headers {
        match name.as_ref() {
            b"content-length" => {
                if length.is_some() {
                    return Err(fail(400, "repeated Content-Length"));
                }
                if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
                    return Err(fail(400, format!("invalid Content-Length '{}'", show(value))));
                }
                let n = std::str::from_utf8(value).ok().filter(|v| v.len() <= 18)
                    .and_then(|v| v.parse::<usize>().ok())
                    .filter(|&n| n <= limits.max_body_bytes)
                    .ok_or_else(|| fail(413, "request body too large"))?;
                length = Some(n);
            }
            b"transfer-encoding" => {
                if chunked || !value.eq_ignore_ascii_case(b"chunked") {
                    return Err(fail(400, "Transfer-Encoding must be exactly one 'chunked'"));
                }
                chunked = true;
            }
            b"host" => {
                hosts += 1;
                if !valid_host(value) {
                    return Err(fail(400, "invalid Host header"));
                }
            }
            b"expect" => {
                if !value.eq_ignore_ascii_case(b"100-continue") {
                    return Err(fail(417, "unsupported expectation"));
                }
                expect_continue = true;
            }
            n if n.contains(&b'_') && folds_to_framing(n) => {
                return Err(fail(400, format!("header {} would be read as a framing header",
                                             show(n))));
            }
            _ => {}
        }
    }
    if chunked && length.is_some() {
        return Err(fail(400, "both Content-Length and Transfer-Encoding"));
    }
    if chunked && version == Version::Http10 {
        return Err(fail(400, "Transfer-Encoding in an HTTP/1.0 request"));
    }
    if hosts > 1 {
        return Err(fail(400, "repeated Host header"));
    }
    if hosts == 0 && version == Version::Http11 {
        return Err(fail(400, "missing Host header"));
    }
    let (target, headers) = origin_form(&method, target, headers)?;
    let tokens = connection_tokens(&headers);
    let keep_alive = match version {
        Version::Http11 => !tokens.iter().any(|t| t == b"close"),
        Version::Http10 => tokens.iter().any(|t| t == b"keep-alive"),
    };
    let framing = if chunked { Framing::Chunked } else { Framing::Length(length.unwrap_or(0)) };
    Ok(Head { method, target, version, headers, keep_alive, framing, expect_continue })
}

/// `transfer_encoding`, `Content_Length`: what a back end that folds `_` into `-` would read.
fn folds_to_framing(name: &[u8]) -> bool {
    let folded: Vec<u8> = name.iter().map(|&b| if b == b'_' { b'-' } else { b }).collect();
    folded == b"transfer-encoding" || folded == b"content-length"
}

/// Rewrite absolute-form to origin form with a matching Host, so executors see one meaning.
fn origin_form(method: &[u8], target: Bytes, mut headers: Headers)
               -> Result<(Bytes, Headers), Refusal> {
    if target.starts_with(b"/") || target.as_ref() == b"*" {
        if target.as_ref() == b"*" && method != b"OPTIONS" {
            return Err(fail(400, "'*' target is only valid for OPTIONS"));
        }
        if !is_target(&target) {
            return Err(fail(400, "invalid request target"));
        }
        return Ok((target, headers));
    }
    let lower = target.to_ascii_lowercase();
    let scheme = if lower.starts_with(b"http://") { 7 }
                 else if lower.starts_with(b"https://") { 8 }
                 else { return Err(fail(400, "request target must be in origin or absolute form")) };
    let rest = &target[scheme..];
    let split = rest.iter().position(|b| matches!(b, b'/' | b'?' | b'#')).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    if authority.is_empty() || authority.contains(&b'@') || !valid_host(authority) {
        return Err(fail(400, "invalid authority in request target"));
    }
    let path = if path.starts_with(b"/") { target.slice_ref(path) }
               else { Bytes::from([b"/".as_slice(), path].concat()) };
    if !is_target(&path) {
        return Err(fail(400, "invalid request target"));
    }
    headers.retain(|(n, _)| n.as_ref() != b"host");
    headers.insert(0, (Bytes::from_static(b"host"), target.slice_ref(authority)));
    Ok((path, headers))
}

/// `[v6]` or reg-name characters, then an optional `:port`.
fn valid_host(value: &[u8]) -> bool {
    let (host, port) = if value.starts_with(b"[") {
        let Some(close) = value.iter().position(|&b| b == b']') else { return false };
        let inner = &value[1..close];
        if inner.is_empty() || !inner.iter().all(|&b| b.is_ascii_hexdigit() || b == b':'
                                                  || b == b'.') {
            return false;
        }
        (&value[..=close], &value[close + 1..])
    } else {
        let colon = value.iter().position(|&b| b == b':').unwrap_or(value.len());
        (&value[..colon], &value[colon..])
    };
    let reg_name = |b: &u8| b.is_ascii_alphanumeric() || b"._~!$&'()*+,;=%-".contains(b);
    (host.starts_with(b"[") || host.iter().all(reg_name))
        && (port.is_empty() || (port[0] == b':' && port[1..].iter().all(u8::is_ascii_digit)))
}
