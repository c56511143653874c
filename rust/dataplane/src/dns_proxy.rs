//! The DNS request path: a [`Round`] with the DNS phases. Every executor is asked the one
//! normalised query over UDP, on a socket of its own for the exchange, and again over TCP on a
//! pooled connection when the reply was truncated or larger than the query advertised (so every
//! answer is judged whole, whatever its size); its reply is checked against the query and
//! judged by its canonical form; the client gets the winner re-encoded under its own ID and
//! question (TC over UDP when it does not fit), or SERVFAIL. Queries never change executor
//! state: no journal, no write order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

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
        // What the normalised query lets an executor send over UDP.
        let limit = if query.edns { usize::from(self.settings.udp_payload) }
                    else { 512 };
        Box::pin(async move {
            let asked = exchange(&executor, &payload, limit).await;
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

/// Ask one executor within its read timeout: over UDP, and over TCP when the UDP reply was
/// truncated or longer than ``limit``, or its UDP port is closed (``payload`` is the query with
/// its TCP length prefix).
async fn exchange(executor: &Executor, payload: &[u8], limit: usize) -> Asked<Bytes> {
    let started = Instant::now();
    let deadline = tokio::time::Instant::from_std(started + executor.read_timeout);
    let outcome = match datagram(executor, &payload[2..], limit, deadline).await {
        Datagram::Reply(wire) => Ok(wire),
        Datagram::Failed(e) => Err(e),
        Datagram::OverTcp => {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let pool = &executor.pool;
            let asked = exchange_with(pool, left, |conn| attempt(pool, conn, payload)).await;
            return Asked { latency: started.elapsed(), ..asked };
        }
    };
    let latency = started.elapsed();
    Asked { outcome, latency, service: latency }
}

/// How a UDP exchange ended.
enum Datagram {
    Reply(Bytes),
    /// Too long for UDP, or no UDP there: ask over TCP.
    OverTcp,
    Failed(UpstreamError),
}

/// One query over UDP on a socket connected to the executor; datagrams that do not answer
/// this query's ID are skipped.
async fn datagram(executor: &Executor, query: &[u8], limit: usize,
                  deadline: tokio::time::Instant) -> Datagram {
    let failed = |kind, reason| Datagram::Failed(UpstreamError { kind, reason });
    let timeout = || failed(ErrorKind::Timeout,
                            format!("no reply within {:?}", executor.read_timeout));
    let Some(_slot) = executor.pool.slot(deadline).await else { return timeout() };
    let socket = match executor.datagrams.take() {
        Ok(socket) => socket,
        Err(e) => return failed(ErrorKind::Connect, e.to_string()),
    };
    let refused = |e: std::io::Error| if e.kind() == std::io::ErrorKind::ConnectionRefused {
        Datagram::OverTcp
    } else {
        failed(ErrorKind::Connect, e.to_string())
    };
    if let Err(e) = socket.send(query).await {
        return refused(e);
    }
    loop {
        let mut buf = BytesMut::with_capacity(limit + 1);
        match tokio::time::timeout_at(deadline, socket.recv_buf(&mut buf)).await {
            Err(_) => return timeout(),
            Ok(Err(e)) => return refused(e),
            Ok(Ok(n)) if n < 12 || buf[..2] != query[..2] || buf[2] & 0x80 == 0 => {}
            Ok(Ok(n)) => {
                executor.datagrams.give(socket);
                return if n > limit || buf[2] & 0x02 != 0 { Datagram::OverTcp }
                       else { Datagram::Reply(buf.freeze()) };
            }
        }
    }
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
