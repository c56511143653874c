//! The DNS request path: a [`Round`] with the DNS phases. Every executor is asked the one
//! normalised query over TCP (so every answer arrives whole, whatever its size) on a pooled
//! connection; its reply is checked against the query and judged by its canonical form; the
//! client gets the winner re-encoded under its own ID and question (TC over UDP when it does
//! not fit), or SERVFAIL. Queries never change executor state: no journal, no write order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::ballot::{Output, Verdict};
use crate::canon::BodyRule;
use crate::dns::{self, Query, Reply, Settings, MAX_TCP_MESSAGE};
use crate::http::UpstreamError;
use crate::immune;
use crate::model::ErrorKind;
use crate::plane::Shared;
use crate::pool::{Conn, Pool};
use crate::round::{below_floor, Context, Fanout, Phases, Respond, Round};
use crate::upstream::{exchange_with, Asked, Attempt};
use crate::snapshot::Executor;

/// How a query arrived, which bounds its reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Answer one admitted query with the consensus reply, or SERVFAIL, through ``respond``; the
/// future ends once every executor was judged.
pub async fn serve(shared: Arc<Shared>, query: Query, transport: Transport, client: SocketAddr,
                   respond: Respond<Vec<u8>>) {
    let counted = shared.clone();
    let respond: Respond<Vec<u8>> = Box::new(move |reply: Vec<u8>| {
        if reply.get(3).is_some_and(|flags| flags & 0x0f != 0) {  // an rcode but NOERROR
            counted.stats.client_errors.error(client.ip());
        }
        respond(reply);
    });
    let snapshot = shared.snapshot.load_full();
    let settings = snapshot.dns.clone();
    let (label, key) = (query.label(), query.key());
    let sample = shared.sketch.sample();
    let watched = !snapshot.memories.is_empty() || snapshot.detector.is_some();
    let features: Option<Arc<[u64]>> =
        (sample || watched).then(|| immune::query_features(&label, &key).into());
    let memory = features.as_deref().and_then(|f| {
        snapshot.memories.matching(f).or_else(|| snapshot.detector.as_ref()?.flags(f))
    });
    let ctx = Context { id: shared.ids.next(), label, key, client: Some(client),
                        started: Instant::now(), snapshot, memory, features, sample };
    if let Some(memory) = &ctx.memory {
        shared.matches.record(memory, immune::Matched {
            response: memory.response.as_str(), count: 1, request: ctx.id,
            method: ctx.label.clone(), path: ctx.key.clone(), client: ctx.client });
        if memory.response == immune::Response::Refuse {
            respond(dns::refused(&query, &settings));
            return;
        }
    }
    if below_floor(&shared, &ctx).is_some() {
        respond(dns::servfail(&query, &settings, &refusal_text(ctx.id)));
        return;
    }
    let wire = query.upstream_wire(&settings);
    let mut framed = Vec::with_capacity(2 + wire.len());
    framed.extend_from_slice(&u16::try_from(wire.len()).expect("a query is short").to_be_bytes());
    framed.extend_from_slice(&wire);
    let phases = Dns { query: Arc::new(query), transport, settings,
                       payload: Bytes::from(framed) };
    Round::new(shared.clone(), ctx, phases, Fanout::Read { head: shared.head() })
        .run(respond).await;
}

/// What the DNS phases of one query carry besides the [`Context`].
struct Dns {
    query: Arc<Query>,
    transport: Transport,
    settings: Arc<Settings>,
    /// The normalised query with its two-byte length prefix.
    payload: Bytes,
}

impl Phases for Dns {
    type Reply = Reply;
    type Answer = Vec<u8>;

    fn ask(&self, _ctx: &Context, executor: Arc<Executor>) -> BoxFuture<'static, Asked<Reply>> {
        let (payload, query) = (self.payload.clone(), self.query.clone());
        Box::pin(async move {
            let asked = exchange(&executor.pool, &payload, executor.read_timeout).await;
            let outcome = asked.outcome.and_then(|wire| {
                dns::parse_reply(wire, &query)
                    .map_err(|reason| UpstreamError { kind: ErrorKind::Malformed, reason })
            });
            Asked { outcome, latency: asked.latency, service: asked.service }
        })
    }

    fn output(&self, _ctx: &Context, executor: Arc<str>, reply: &Reply, latency: f64) -> Output {
        reply.output(executor, &self.settings, latency)
    }

    fn features(&self, ctx: &Context) -> Vec<u64> {
        immune::query_features(&ctx.label, &ctx.key)
    }

    fn failure_rule(&self, _ctx: &Context) -> Arc<BodyRule> {
        self.settings.rule().clone()
    }

    fn answer(&mut self, ctx: &Context, _verdict: &Verdict, winner: Option<(&Reply, &BodyRule)>)
              -> Vec<u8> {
        let Some((winner, _)) = winner else {
            return dns::servfail(&self.query, &self.settings, &refusal_text(ctx.id));
        };
        let limit = match self.transport {
            Transport::Udp => self.query.udp_limit(&self.settings),
            Transport::Tcp => MAX_TCP_MESSAGE,
        };
        dns::encode_reply(&self.query, winner, &self.settings, limit)
    }
}

/// A SERVFAIL's extended error text: generic, with the request's id (the reason, which names
/// executors, goes to the events only).
fn refusal_text(id: u64) -> String {
    format!("no quorum; request {id:016x}")
}

/// Send one length-prefixed query and read one length-prefixed reply, within
/// ``read_timeout``.
async fn exchange(pool: &Pool, payload: &[u8], read_timeout: Duration) -> Asked<Bytes> {
    exchange_with(pool, read_timeout, |conn| attempt(pool, conn, payload)).await
}

async fn attempt(pool: &Pool, mut conn: Conn, payload: &[u8]) -> Attempt<Bytes> {
    let reset = |reason: String| Attempt::Done(Err(UpstreamError { kind: ErrorKind::Reset,
                                                                    reason }));
    if let Err(e) = conn.stream.write_all(payload).await {
        return if conn.reused { Attempt::Stale } else { reset(e.to_string()) };
    }
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        match conn.stream.read_buf(&mut buf).await {
            Ok(0) if buf.is_empty() => return Attempt::Stale,
            Ok(0) => return reset("closed in the middle of a reply".into()),
            Ok(_) => {}
            Err(_) if buf.is_empty() && conn.reused => return Attempt::Stale,
            Err(e) => return reset(e.to_string()),
        }
        if buf.len() < 2 {
            continue;
        }
        let whole = 2 + usize::from(u16::from_be_bytes([buf[0], buf[1]]));
        if buf.len() < whole {
            buf.reserve(whole - buf.len());
            continue;
        }
        // Bytes beyond the reply were never asked for: the connection is not reused.
        if buf.len() == whole {
            pool.checkin(conn);
        }
        buf.advance(2);
        return Attempt::Done(Ok(buf.split_to(whole - 2).freeze()));
    }
}
