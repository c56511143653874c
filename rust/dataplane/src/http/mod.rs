//! HTTP/1.1 for the data plane, sans-I/O (mirrors `endosec.protocols.http`).
//!
//! * [`RequestReader`] is the input agent's strict reader for client bytes: every ambiguous
//!   framing is refused with a status before anything is forwarded.
//! * [`upstream_request_bytes`] builds the one request every executor receives.
//! * [`ResponseReader`] reads executors' responses, as hostile as any client.
//! * [`Admission`] is what the input agent serves of a read request: the methods, and what
//!   becomes of targets whose paths are not in normal form.
//! * [`encode_response`] and [`error_response`] build what the client receives.

use bytes::Bytes;

use crate::model::ErrorKind;

mod admission;
mod chunked;
pub mod clock;
pub mod contract;
pub mod face;
mod request;
mod response;
mod syntax;
mod write;

pub use admission::{Admission, Spec, Targets};
pub use face::Face;
pub use request::{RequestReader, KNOWN_METHODS};
pub use response::ResponseReader;
pub use write::{encode_response, error_response, refusal_response, upstream_request_bytes};

pub type Headers = Vec<(Bytes, Bytes)>;

/// Resource limits for one connection; exceeding them is the peer's fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_body_bytes: usize,
    pub max_target_bytes: usize,
    pub max_response_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_header_bytes: 16384, max_headers: 100, max_body_bytes: 1 << 20,
                 max_target_bytes: 8192, max_response_bytes: 16 << 20 }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

/// One complete client request, body de-chunked, target in origin form (or ``*``), header
/// names lower-cased in the client's order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: Bytes,
    pub target: Bytes,
    pub headers: Headers,
    pub body: Bytes,
    pub keep_alive: bool,
    pub version: Version,
}

/// The client's request was refused: answer ``status`` (then close, unless the request was
/// read whole and the client keeps the connection).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub reason: String,
    /// The methods served, for a 405.
    pub allow: Option<Bytes>,
}

#[derive(Debug)]
pub enum Next {
    Request(Request),
    NeedData,
    Closed,
}

/// One complete executor response, body de-chunked, header names lower-cased.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: Bytes,
    pub headers: Headers,
    pub body: Bytes,
    pub keep_alive: bool,
}

impl Response {
    pub fn header(&self, name: &[u8]) -> Option<&Bytes> {
        self.headers.iter().find(|(n, _)| n.as_ref() == name).map(|(_, v)| v)
    }
}

/// An executor's response could not be read; it counts as that executor's failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamError {
    pub kind: ErrorKind,
    pub reason: String,
}
