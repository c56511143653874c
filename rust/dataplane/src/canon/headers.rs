//! The header rule (mirrors `endosec.core.canonical_http`) and the ``head`` bytes of an output:
//! ``repr((status, canonical_headers))`` as Python writes it, since the digest covers them.

use std::borrow::Cow;
use std::io::Write;

use bytes::Bytes;

use super::pyrepr::write_bytes;

/// Headers every server spells its own way.
pub const DEFAULT_IGNORED_HEADERS: [&str; 9] = [
    "date", "server", "etag", "last-modified", "x-request-id", "keep-alive", "connection",
    "transfer-encoding", "content-length",
];

/// A set of lower-case header names (small: a sorted list beats hashing here).
#[derive(Clone, Debug, Default)]
pub struct Names(Vec<Box<[u8]>>);

impl Names {
    pub fn insert(&mut self, name: &[u8]) {
        if let Err(at) = self.0.binary_search_by(|n| (**n).cmp(name)) {
            self.0.insert(at, name.into());
        }
    }

    pub fn contains(&self, name: &[u8]) -> bool {
        self.0.binary_search_by(|n| (**n).cmp(name)).is_ok()
    }

    pub fn union(&self, other: &Names) -> Names {
        let mut out = self.clone();
        for n in &other.0 {
            out.insert(n);
        }
        out
    }
}

/// Which headers of an output take part in the vote, and how.
#[derive(Debug)]
pub struct HeaderRule {
    pub ignore: Names,
    /// Extra ignores for some statuses, sorted by status; each includes ``ignore``.
    pub on_status: Vec<(u16, Names)>,
    pub allow: Option<Names>,
    pub presence: Names,
    pub media_type: bool,
}

impl Default for HeaderRule {
    fn default() -> HeaderRule {
        let mut ignore = Names::default();
        for name in DEFAULT_IGNORED_HEADERS {
            ignore.insert(name.as_bytes());
        }
        HeaderRule { ignore, on_status: Vec::new(), allow: None, presence: Names::default(),
                     media_type: true }
    }
}

fn strip<'a>(mut v: &'a [u8], chars: &[u8]) -> &'a [u8] {
    while let [first, rest @ ..] = v {
        if !chars.contains(first) {
            break;
        }
        v = rest;
    }
    while let [rest @ .., last] = v {
        if !chars.contains(last) {
            break;
        }
        v = rest;
    }
    v
}

/// What ``bytes.strip()`` removes.
const ASCII_SPACE: &[u8] = b" \t\n\r\x0b\x0c";

/// ``Application/JSON; charset="UTF-8"`` -> ``application/json``: spelling, not meaning.
fn media_type(value: &[u8]) -> Vec<u8> {
    let mut parts = value.split(|&b| b == b';');
    let mut out = strip(parts.next().unwrap_or_default(), ASCII_SPACE).to_ascii_lowercase();
    for param in parts {
        let param = strip(param, ASCII_SPACE);
        let (name, v) = match param.iter().position(|&b| b == b'=') {
            Some(at) => (&param[..at], &param[at + 1..]),
            None => (param, &b""[..]),
        };
        let name = strip(name, ASCII_SPACE).to_ascii_lowercase();
        if name.is_empty() {
            continue;
        }
        let mut v = Cow::Borrowed(strip(v, ASCII_SPACE));
        if name == b"charset" {
            v = Cow::Owned(strip(&v, b"\"").to_ascii_lowercase());
            if *v == *b"utf-8" {
                continue;
            }
        }
        out.push(b';');
        out.extend_from_slice(&name);
        out.push(b'=');
        out.extend_from_slice(&v);
    }
    out
}

/// A kept header: its lower-cased name and canonical value.
type Header<'a> = (Cow<'a, [u8]>, Cow<'a, [u8]>);

impl HeaderRule {
    /// Whether the vote looks at the (lower-case) header ``name`` on a reply of ``status``.
    pub fn voted(&self, status: u16, name: &[u8]) -> bool {
        let ignore = match self.on_status.binary_search_by_key(&status, |(s, _)| *s) {
            Ok(at) => &self.on_status[at].1,
            Err(_) => &self.ignore,
        };
        !ignore.contains(name) && (self.presence.contains(name)
                                   || self.allow.as_ref().is_none_or(|a| a.contains(name)))
    }

    /// ``repr((status, canonical_headers(headers, status))).encode()``: names lower-cased and
    /// sorted (stably), values trimmed, exemptions applied.
    pub fn head(&self, status: u16, headers: &[(Bytes, Bytes)]) -> Vec<u8> {
        let ignore = match self.on_status.binary_search_by_key(&status, |(s, _)| *s) {
            Ok(at) => &self.on_status[at].1,
            Err(_) => &self.ignore,
        };
        let mut kept: Vec<Header<'_>> = Vec::with_capacity(headers.len());
        for (name, value) in headers {
            let n: Cow<'_, [u8]> = if name.iter().any(u8::is_ascii_uppercase) {
                Cow::Owned(name.to_ascii_lowercase())
            } else {
                Cow::Borrowed(name)
            };
            if ignore.contains(&n) {
                continue;
            }
            if self.presence.contains(&n) {
                // Only presence-only headers can already be kept under this name.
                if !kept.iter().any(|(k, _)| *k == n) {
                    kept.push((n, Cow::Borrowed(b"")));
                }
                continue;
            }
            if self.allow.as_ref().is_some_and(|allow| !allow.contains(&n)) {
                continue;
            }
            let v = strip(value, b" \t");
            let v = if self.media_type && *n == *b"content-type" {
                Cow::Owned(media_type(v))
            } else {
                Cow::Borrowed(v)
            };
            kept.push((n, v));
        }
        kept.sort_by(|a, b| a.0.cmp(&b.0));
        let size: usize = kept.iter().map(|(n, v)| n.len() + v.len() + 12).sum();
        let mut out = Vec::with_capacity(size + 12);
        out.push(b'(');
        let _ = write!(out, "{status}"); // writing to a Vec cannot fail
        out.extend_from_slice(b", (");
        for (i, (n, v)) in kept.iter().enumerate() {
            if i > 0 {
                out.extend_from_slice(b", ");
            }
            out.push(b'(');
            write_bytes(&mut out, n);
            out.extend_from_slice(b", ");
            write_bytes(&mut out, v);
            out.push(b')');
        }
        if kept.len() == 1 {
            out.push(b',');
        }
        out.extend_from_slice(b"))");
        out
    }
}
