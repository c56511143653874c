//! The DHR vocabulary shared by every part of the data plane (mirrors `endosec.core.model`).

use std::fmt;

/// Why an executor produced no value. Errors never agree with anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    Timeout,
    Connect,
    Reset,
    Malformed,
    Oversize,
    Crash,
}

impl ErrorKind {
    /// The spelling shared with Python's `ErrorKind` values.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Connect => "connect",
            ErrorKind::Reset => "reset",
            ErrorKind::Malformed => "malformed",
            ErrorKind::Oversize => "oversize",
            ErrorKind::Crash => "crash",
        }
    }

    pub fn parse(text: &str) -> Option<ErrorKind> {
        Some(match text {
            "timeout" => ErrorKind::Timeout,
            "connect" => ErrorKind::Connect,
            "reset" => ErrorKind::Reset,
            "malformed" => ErrorKind::Malformed,
            "oversize" => ErrorKind::Oversize,
            "crash" => ErrorKind::Crash,
            _ => return None,
        })
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the arbiter decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    Accepted,
    NoQuorum,
    AllFailed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::NoQuorum => "no-quorum",
            Outcome::AllFailed => "all-failed",
        }
    }
}

/// ``bytes`` in lowercase hex, appended to ``out`` (``write!`` per byte is slow on hot paths).
pub fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.reserve(2 * bytes.len());
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
}
