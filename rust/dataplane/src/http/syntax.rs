//! The grammar pieces (RFC 9110/9112) shared by the readers and the writers.

use bytes::Bytes;

/// `tchar`: the bytes of a token (methods, header names, chunk extensions).
pub fn is_tchar(b: u8) -> bool {
    matches!(b, b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^'
                | b'_' | b'`' | b'|' | b'~' | b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z')
}

pub fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

/// A field value as written out: visible bytes with inner spaces and tabs, no surrounding
/// whitespace, no controls (obs-text allowed), so a value can never spill into another field.
pub fn is_field_value(v: &[u8]) -> bool {
    let visible = |b: u8| (0x21..=0x7e).contains(&b) || b >= 0x80;
    match (v.first(), v.last()) {
        (None, _) => true,
        (Some(&a), Some(&z)) => visible(a) && visible(z)
            && v.iter().all(|&b| b == b'\t' || visible(b) || b == b' '),
        _ => unreachable!("a non-empty slice has a last byte"),
    }
}

/// A reason phrase: tabs, spaces, visible bytes and obs-text.
pub fn is_reason(v: &[u8]) -> bool {
    v.iter().all(|&b| b == b'\t' || (0x20..=0x7e).contains(&b) || b >= 0x80)
}

/// A request target as forwarded: visible ASCII only, and no fragment (``#`` is never part
/// of a target; servers differ on whether they cut it off or refuse it).
pub fn is_target(v: &[u8]) -> bool {
    !v.is_empty() && v.iter().all(|&b| (0x21..=0x7e).contains(&b) && b != b'#')
}

pub fn is_digits(v: &[u8]) -> bool {
    !v.is_empty() && v.iter().all(u8::is_ascii_digit)
}

/// Optional whitespace (SP, HTAB) trimmed from both ends.
pub fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|b| !matches!(b, b' ' | b'\t')).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !matches!(b, b' ' | b'\t')).map_or(start, |i| i + 1);
    &v[start..end]
}

/// Headers that describe one connection, not the message: never forwarded either way.
pub const HOP_BY_HOP: [&[u8]; 9] = [b"connection", b"keep-alive", b"proxy-connection", b"te",
                                    b"trailer", b"transfer-encoding", b"upgrade",
                                    b"proxy-authorization", b"proxy-authenticate"];

/// The lower-cased options listed by every Connection header.
pub fn connection_tokens(headers: &[(Bytes, Bytes)]) -> Vec<Vec<u8>> {
    let mut tokens: Vec<Vec<u8>> = Vec::new();
    for (name, value) in headers {
        if name.as_ref() == b"connection" {
            for t in value.split(|&b| b == b',') {
                let t = trim_ows(t).to_ascii_lowercase();
                if !t.is_empty() && !tokens.contains(&t) {
                    tokens.push(t);
                }
            }
        }
    }
    tokens
}

/// Whether the message keeps its connection open, given its version and Connection options.
pub fn persistent(http11: bool, headers: &[(Bytes, Bytes)]) -> bool {
    let tokens = connection_tokens(headers);
    if http11 {
        !tokens.iter().any(|t| t == b"close")
    } else {
        tokens.iter().any(|t| t == b"keep-alive")
    }
}

/// The headers a proxy may forward: hop-by-hop ones, ``also_drop`` and those Connection names
/// removed (never Host: stripping it would change the request).
pub fn end_to_end<'a>(headers: &'a [(Bytes, Bytes)], also_drop: &'a [&'static [u8]])
                      -> impl Iterator<Item = &'a (Bytes, Bytes)> + 'a {
    let named = connection_tokens(headers);
    headers.iter().filter(move |(n, _)| {
        let n = n.as_ref();
        !HOP_BY_HOP.contains(&n) && !also_drop.contains(&n)
            && (n == b"host" || !named.iter().any(|t| t == n))
    })
}

/// Every CR and LF must belong to a CRLF pair (a CR at the very end may await its LF); NUL is
/// never allowed. The error says which rule broke.
pub fn check_line_endings(buf: &[u8]) -> Result<(), &'static str> {
    if memchr::memchr(0, buf).is_some() {
        return Err("NUL byte in message head");
    }
    for i in memchr::memchr2_iter(b'\r', b'\n', buf) {
        match buf[i] {
            b'\n' if i == 0 || buf[i - 1] != b'\r' => return Err("bare LF line ending"),
            b'\r' if i + 1 < buf.len() && buf[i + 1] != b'\n' => {
                return Err("bare CR in message head");
            }
            _ => {}
        }
    }
    Ok(())
}

/// The standard reason phrase for a status (Python's `http.HTTPStatus` phrases, so both
/// planes write the same status line).
pub fn phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue", 101 => "Switching Protocols", 102 => "Processing",
        103 => "Early Hints", 200 => "OK", 201 => "Created", 202 => "Accepted",
        203 => "Non-Authoritative Information", 204 => "No Content", 205 => "Reset Content",
        206 => "Partial Content", 207 => "Multi-Status", 208 => "Already Reported",
        226 => "IM Used", 300 => "Multiple Choices", 301 => "Moved Permanently", 302 => "Found",
        303 => "See Other", 304 => "Not Modified", 305 => "Use Proxy",
        307 => "Temporary Redirect", 308 => "Permanent Redirect", 400 => "Bad Request",
        401 => "Unauthorized", 402 => "Payment Required", 403 => "Forbidden",
        404 => "Not Found", 405 => "Method Not Allowed", 406 => "Not Acceptable",
        407 => "Proxy Authentication Required", 408 => "Request Timeout", 409 => "Conflict",
        410 => "Gone", 411 => "Length Required", 412 => "Precondition Failed",
        413 => "Request Entity Too Large", 414 => "Request-URI Too Long",
        415 => "Unsupported Media Type", 416 => "Requested Range Not Satisfiable",
        417 => "Expectation Failed", 418 => "I'm a Teapot", 421 => "Misdirected Request",
        422 => "Unprocessable Entity", 423 => "Locked", 424 => "Failed Dependency",
        425 => "Too Early", 426 => "Upgrade Required", 428 => "Precondition Required",
        429 => "Too Many Requests", 431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons", 500 => "Internal Server Error",
        501 => "Not Implemented", 502 => "Bad Gateway", 503 => "Service Unavailable",
        504 => "Gateway Timeout", 505 => "HTTP Version Not Supported",
        506 => "Variant Also Negotiates", 507 => "Insufficient Storage", 508 => "Loop Detected",
        510 => "Not Extended", 511 => "Network Authentication Required",
        _ => "",
    }
}

/// The head terminator, searched for in every buffer: one searcher built once.
pub static HEAD_END: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\r\n\r\n"));

/// Header names servers commonly send capitalised: lowered without allocating.
const COMMON: [&[u8]; 16] = [b"content-type", b"content-length", b"server", b"date",
                            b"connection", b"etag", b"last-modified", b"accept-ranges",
                            b"cache-control", b"keep-alive", b"transfer-encoding", b"location",
                            b"set-cookie", b"vary", b"expires", b"x-content-type-options"];

/// A header name in lower case: a slice of ``raw`` when it already is, a static name when it
/// is a common one, else a copy.
pub fn lower_name(raw: &Bytes, name: &[u8]) -> Bytes {
    if !name.iter().any(u8::is_ascii_uppercase) {
        return raw.slice_ref(name);
    }
    match COMMON.iter().find(|c| c.eq_ignore_ascii_case(name)) {
        Some(c) => Bytes::from_static(c),
        None => Bytes::from(name.to_ascii_lowercase()),
    }
}

/// Lines in a head whose line endings were checked (every LF follows a CR).
pub fn count_lines(head: &[u8]) -> usize {
    memchr::memchr_iter(b'\n', head).count()
}

/// Where the first line of a checked head ends (its CR).
pub fn first_line_end(head: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', head).map(|i| i - 1)
}

/// Bytes for a message: printable ASCII kept, the rest escaped, so a refusal's reason never
/// carries the peer's raw bytes.
pub fn show(bytes: &[u8]) -> String {
    bytes.iter().flat_map(|&b| std::ascii::escape_default(b)).map(char::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_endings() {
        assert!(check_line_endings(b"a\r\nb\r\n\r\n").is_ok());
        assert!(check_line_endings(b"a\r\nb\r").is_ok(), "a CR may await its LF");
        assert_eq!(check_line_endings(b"a\nb"), Err("bare LF line ending"));
        assert_eq!(check_line_endings(b"\n"), Err("bare LF line ending"));
        assert_eq!(check_line_endings(b"a\rb"), Err("bare CR in message head"));
        assert_eq!(check_line_endings(b"a\0"), Err("NUL byte in message head"));
    }

    #[test]
    fn field_values() {
        assert!(is_field_value(b""));
        assert!(is_field_value(b"a b\tc\xff"));
        assert!(!is_field_value(b" a"));
        assert!(!is_field_value(b"a\t"));
        assert!(!is_field_value(b"a\r\nb"));
        assert!(!is_field_value(b"a\x7fb"));
    }

    #[test]
    fn connection_options_drop_named_headers_but_never_host() {
        let h = |n: &'static str, v: &'static str| (Bytes::from(n), Bytes::from(v));
        let headers = vec![h("connection", "X-Secret, host"), h("x-secret", "s"), h("host", "h"),
                           h("te", "trailers"), h("x-kept", "k")];
        let kept: Vec<&[u8]> = end_to_end(&headers, &[]).map(|(n, _)| n.as_ref()).collect();
        assert_eq!(kept, vec![&b"host"[..], b"x-kept"]);
        assert!(persistent(true, &headers));
        assert!(!persistent(false, &headers));
    }
}
