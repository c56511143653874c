//! endosec's native data plane.
//!
//! The request path of a mimic boundary as phases over a per-request context: admit (the input
//! agent) -> fan out to the voters -> canonicalise each reply -> vote, answering at quorum ->
//! reply -> report. Decisions that are not per request live in the Python control plane, which
//! publishes immutable [`snapshot::Snapshot`]s down and drains [`events`] up.
//!
//! Pure parts (no I/O): [`model`], [`canon`], [`ballot`], [`http`], [`journal`], [`stats`].
//! I/O parts, on tokio: [`pool`], [`upstream`], [`proxy`], [`listener`], [`plane`].

pub mod accesslog;
pub mod ballot;
pub mod canon;
pub mod events;
pub mod http;
pub mod idempotency;
pub mod journal;
pub mod listener;
pub mod model;
pub mod plane;
pub mod pool;
pub mod proxy;
pub mod snapshot;
pub mod stats;
pub mod upstream;
