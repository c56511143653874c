//! endosec's native data plane.
//!
//! The request path of a mimic boundary as phases over a per-request context: admit (the input
//! agent) -> fan out to the voters -> canonicalise each reply -> vote, answering at quorum ->
//! reply -> report. Decisions that are not per request live in the Python control plane, which
//! publishes immutable [`snapshot::Snapshot`]s down and drains [`events`] up.
//!
//! Pure parts (no I/O): [`model`], [`canon`], [`ballot`], [`http`]. I/O parts: the pools,
//! the listener and the proxy phases, built on tokio.

pub mod ballot;
pub mod canon;
pub mod http;
pub mod model;
