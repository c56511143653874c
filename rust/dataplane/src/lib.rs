//! endosec's native data plane.
//!
//! The request path of a mimic boundary as phases over a per-request context: admit (the input
//! agent) -> fan out to the voters -> canonicalise each reply -> vote, answering at quorum ->
//! reply -> report. Decisions that are not per request live in the Python control plane, which
//! publishes immutable [`snapshot::Snapshot`]s down and drains [`events`] up.
//!
//! Pure parts (no I/O): [`model`], [`canon`], [`immune`], [`ballot`], [`http`], [`dns`], [`journal`],
//! [`stats`]. I/O parts, on tokio: [`pool`], [`upstream`], [`round`] (one request's phases,
//! whatever the protocol), [`proxy`] and [`listener`] (HTTP), [`dns_proxy`] and
//! [`dns_listener`] (DNS), [`plane`].

pub mod accesslog;
pub mod ballot;
pub mod canon;
pub mod dns;
pub mod dns_listener;
pub mod dns_proxy;
pub mod events;
pub mod http;
pub mod idempotency;
pub mod immune;
pub mod journal;
pub mod listener;
pub mod model;
pub mod plane;
pub mod pool;
pub mod proxy;
pub mod round;
pub mod snapshot;
pub mod stats;
pub mod upstream;
