//! The upstream response reader: a compromised executor is as hostile as any client.
//!
//! One reader reads one response (a connection gets a fresh reader per exchange; the pool
//! checks a connection is quiet before reusing it). Heads are framed here and parsed by
//! httparse after the same pre-scan as requests; interim 1xx responses are skipped (101 is
//! refused: nobody asked for an upgrade); framing is exactly one Content-Length, exactly one
//! `chunked` (never both, never in HTTP/1.0), nothing for HEAD, 1xx, 204 and 304, or the
//! connection's end. Limits on the head, the body and the whole exchange are enforced as bytes
//! arrive.

use bytes::{Bytes, BytesMut};

use super::chunked::{ChunkError, Chunked};
use super::syntax::{check_line_endings, count_lines, first_line_end, is_reason, lower_name,
                    persistent, trim_ows, HEAD_END};
use super::{Headers, Limits, Response, UpstreamError};
use crate::model::ErrorKind;

fn malformed(reason: impl Into<String>) -> UpstreamError {
    UpstreamError { kind: ErrorKind::Malformed, reason: reason.into() }
}

fn oversize(reason: &str) -> UpstreamError {
    UpstreamError { kind: ErrorKind::Oversize, reason: reason.into() }
}

#[derive(Debug)]
enum Body {
    None,
    Length(usize),
    Chunked(Chunked),
    /// Until the executor closes the connection.
    Close,
}

#[derive(Debug)]
struct Head {
    status: u16,
    reason: Bytes,
    headers: Headers,
    keep_alive: bool,
}

/// Reads one executor response: feed bytes with `receive` (or read them into `spare`), call
/// `receive_eof` when the executor closed, and call `next` until it returns the response. A bad
/// response is an [`UpstreamError`] (MALFORMED or OVERSIZE; RESET when it closed before any
/// byte) and the reader stays broken.
#[derive(Debug)]
pub struct ResponseReader {
    limits: Limits,
    head_only: bool,
    buf: BytesMut,
    wire: usize,
    eof: bool,
    head: Option<(Head, Body)>,
    failure: Option<UpstreamError>,
}

impl ResponseReader {
    /// ``request_method`` is the method being answered (a HEAD response has no body).
    pub fn new(limits: Limits, request_method: &[u8]) -> ResponseReader {
        ResponseReader { limits, head_only: request_method == b"HEAD", buf: BytesMut::new(),
                         wire: 0, eof: false, head: None, failure: None }
    }

    pub fn receive(&mut self, data: &[u8]) {
        if !self.eof && self.failure.is_none() {
            self.wire += data.len();
            self.buf.extend_from_slice(data);
        }
    }

    /// The reader's own buffer, with room for at least ``room`` more bytes, to read the
    /// socket into without a copy; then say how many came with [`Self::received`].
    pub fn spare(&mut self, room: usize) -> &mut BytesMut {
        self.buf.reserve(room);
        &mut self.buf
    }

    /// ``n`` bytes were read into [`Self::spare`].
    pub fn received(&mut self, n: usize) {
        self.wire += n;
    }

    /// The executor closed the connection.
    pub fn receive_eof(&mut self) {
        self.eof = true;
    }

    /// The complete response, or None while more bytes are needed.
    pub fn next_event(&mut self) -> Result<Option<Response>, UpstreamError> {
        if let Some(e) = &self.failure {
            return Err(e.clone());
        }
        self.step().inspect_err(|e| self.failure = Some(e.clone()))
    }

    fn step(&mut self) -> Result<Option<Response>, UpstreamError> {
        let limits = self.limits;
        if self.wire > limits.max_response_bytes + limits.max_header_bytes {
            return Err(oversize("response too large"));
        }
        while self.head.is_none() {
            let window = &self.buf[..self.buf.len().min(limits.max_header_bytes + 4)];
            let Some(at) = HEAD_END.find(window) else {
                if self.buf.len() > limits.max_header_bytes {
                    return Err(oversize("response head too large"));
                }
                check_line_endings(&self.buf).map_err(malformed)?;
                return self.ended();
            };
            if at + 4 > limits.max_header_bytes {
                return Err(oversize("response head too large"));
            }
            let raw = self.buf.split_to(at + 4).freeze();
            let (head, body) = parse_head(&raw, &limits, self.head_only)?;
            if head.status == 101 {
                return Err(malformed("unrequested protocol upgrade"));
            }
            if head.status >= 200 {
                self.head = Some((head, body));
            }
        }
        let (_, body) = self.head.as_mut().expect("set above");
        let body = match body {
            Body::None => Bytes::new(),
            Body::Length(n) => {
                if self.buf.len() < *n {
                    return self.ended();
                }
                self.buf.split_to(*n).freeze()
            }
            Body::Chunked(chunked) => match chunked.feed(&mut self.buf) {
                Ok(Some(body)) => body,
                Ok(None) => return self.ended(),
                Err(ChunkError::Malformed(why)) => return Err(malformed(why)),
                Err(ChunkError::TooLarge) => return Err(oversize("response body too large")),
                Err(ChunkError::TrailersTooLarge) => return Err(oversize("trailers too large")),
            },
            Body::Close => {
                if self.buf.len() > limits.max_response_bytes {
                    return Err(oversize("response body too large"));
                }
                if !self.eof {
                    return Ok(None);
                }
                std::mem::take(&mut self.buf).freeze()
            }
        };
        let (head, _) = self.head.take().expect("set above");
        // Bytes after the response, or a close, poison the connection for reuse.
        let keep_alive = head.keep_alive && self.buf.is_empty() && !self.eof;
        self.failure = Some(malformed("response already read"));
        Ok(Some(Response { status: head.status, reason: head.reason, headers: head.headers,
                           body, keep_alive }))
    }

    /// More bytes are needed: fine unless the executor already closed.
    fn ended(&self) -> Result<Option<Response>, UpstreamError> {
        match (self.eof, self.wire) {
            (false, _) => Ok(None),
            (true, 0) => Err(UpstreamError { kind: ErrorKind::Reset,
                                             reason: "closed before responding".into() }),
            (true, _) => Err(malformed("closed in the middle of a response")),
        }
    }
}

/// One response head: status line, fields, and the framing they announce.
fn parse_head(raw: &Bytes, limits: &Limits, head_only: bool) -> Result<(Head, Body), UpstreamError> {
    check_line_endings(raw).map_err(malformed)?;
    let lines = count_lines(raw);
    if lines - 2 > limits.max_headers {
        return Err(oversize("too many response header fields"));
    }
    let mut slots = vec![httparse::EMPTY_HEADER; lines - 2];
    let mut parsed = httparse::Response::new(&mut slots);
    match parsed.parse(raw) {
        Ok(httparse::Status::Complete(n)) if n == raw.len() => {}
        Ok(_) => return Err(malformed("invalid response head")),
        Err(e) => return Err(malformed(format!("invalid response: {e}"))),
    }
    let status = parsed.code.unwrap_or(0);
    if !(100..=599).contains(&status) {
        return Err(malformed(format!("status {status} is outside 100..599")));
    }
    let http11 = parsed.version == Some(1);
    // The reason phrase as sent (httparse hides it when it holds obs-text).
    let line = &raw[..first_line_end(raw).expect("a head has a CRLF")];
    let reason = line.get(13..).unwrap_or_default();
    if !is_reason(reason) {
        return Err(malformed("control character in reason phrase"));
    }
    let mut headers: Headers = Vec::with_capacity(parsed.headers.len());
    let mut length: Option<&[u8]> = None;
    let mut chunked = false;
    for h in parsed.headers.iter() {
        let name = lower_name(raw, h.name.as_bytes());
        let value = trim_ows(h.value);
        match name.as_ref() {
            b"content-length" => {
                if length.is_some() || value.is_empty()
                    || !value.iter().all(u8::is_ascii_digit) {
                    return Err(malformed("repeated or invalid Content-Length"));
                }
                length = Some(value);
            }
            b"transfer-encoding" => {
                if chunked || !value.eq_ignore_ascii_case(b"chunked") {
                    return Err(malformed("Transfer-Encoding must be exactly 'chunked'"));
                }
                chunked = true;
            }
            _ => {}
        }
        headers.push((name, raw.slice_ref(value)));
    }
    if chunked && (length.is_some() || !http11) {
        return Err(malformed("ambiguous response framing"));
    }
    let no_body = head_only || status < 200 || status == 204 || status == 304;
    let body = if no_body {
        Body::None
    } else if chunked {
        Body::Chunked(Chunked::new(limits.max_response_bytes, limits.max_header_bytes))
    } else if let Some(length) = length {
        let n = std::str::from_utf8(length).ok().filter(|v| v.len() <= 18)
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&n| n <= limits.max_response_bytes)
            .ok_or_else(|| oversize("response body too large"))?;
        Body::Length(n)
    } else {
        Body::Close
    };
    let keep_alive = persistent(http11, &headers) && !matches!(body, Body::Close);
    Ok((Head { status, reason: raw.slice_ref(reason), headers, keep_alive }, body))
}
