//! The HTTP request path as phases over one request's context.
//!
//! route (read or write; take the write-order lock; journal a write) -> fan out to every voter,
//! shadow and level follower -> canonicalise each reply as it comes -> vote, answering the
//! client the moment the verdict is certain -> judge the stragglers -> report (counters, the
//! recent-verdicts ring, and an event for anything but a clean agreement).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{oneshot, OwnedRwLockReadGuard, OwnedRwLockWriteGuard};

use crate::ballot::{Ballot, Output, Verdict};
use crate::events::{Event, Evidence, VerdictEvent};
use crate::idempotency::{Claim, Outcome as Keyed, MAX_KEY};
use crate::http::{self, Request, Response};
use crate::model::{ErrorKind, Outcome};
use crate::plane::{Recent, Shared};
use crate::snapshot::{Executor, Snapshot};
use crate::upstream::{exchange, Exchange};

/// Methods that must not change executor state; everything else is serialised and journaled.
const SAFE_METHODS: [&[u8]; 4] = [b"GET", b"HEAD", b"OPTIONS", b"TRACE"];

/// Whichever half of the write-order lock a request holds, until its last executor answered.
enum Order {
    Read(#[allow(dead_code)] OwnedRwLockReadGuard<()>),
    Write(#[allow(dead_code)] OwnedRwLockWriteGuard<()>),
}

/// What one request carries through its phases.
struct Context {
    method: Bytes,
    path: String,
    client: Option<std::net::SocketAddr>,
    keep_alive: bool,
    head_only: bool,
    started: Instant,
    snapshot: Arc<Snapshot>,
}

/// What the client gets for one request, and what the access log says of it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub bytes: Vec<u8>,
    pub outcome: Outcome,
}

/// Answer one admitted request: the consensus reply, or a fail-closed refusal.
pub async fn serve(shared: Arc<Shared>, request: Request,
                   client: Option<std::net::SocketAddr>) -> Reply {
    let started = Instant::now();
    let payload = match http::upstream_request_bytes(&request, b"") {
        Ok(bytes) => Bytes::from(bytes),
        Err(why) => return Reply { status: 400, outcome: Outcome::AllFailed,
                                   bytes: http::error_response(400, &[("error", &why)], false) },
    };
    let write = !SAFE_METHODS.contains(&request.method.as_ref());
    let target = String::from_utf8_lossy(&request.target).into_owned();
    let path = target.split('?').next().unwrap_or("").to_owned();
    let ctx = Context { method: request.method.clone(), path, client,
                        keep_alive: request.keep_alive, head_only: request.method == "HEAD",
                        started, snapshot: shared.snapshot.load_full() };
    if ctx.snapshot.reserved_paths.contains(&ctx.path) {
        return Reply { status: 404, outcome: Outcome::AllFailed,
                       bytes: http::error_response(404, &[("error", "not found")],
                                                   ctx.keep_alive) };
    }
    if let Some(reply) = below_floor(&shared, &ctx) {
        return reply;
    }
    let (reply_tx, reply_rx) = oneshot::channel();
    if write {
        let key = request.headers.iter().find(|(n, _)| n.as_ref() == b"idempotency-key")
            .map(|(_, v)| v.clone());
        let claim = match key {
            None => None,
            Some(key) if key.len() > MAX_KEY => return Reply {
                status: 400, outcome: Outcome::AllFailed,
                bytes: http::error_response(400, &[("error", "Idempotency-Key too long")],
                                            ctx.keep_alive) },
            Some(key) => match shared.keys.claim(&key, Instant::now()) {
                Claim::Done(outcome) => return replay(&ctx, &outcome),
                Claim::Wait(mut rx) => {
                    let outcome = rx.wait_for(Option::is_some).await.ok()
                        .and_then(|o| o.clone());
                    return match outcome {
                        Some(outcome) => replay(&ctx, &outcome),
                        None => refuse(&ctx, "the first request with this Idempotency-Key \
                                              ended without an outcome", Outcome::AllFailed),
                    };
                }
                Claim::First(tx) => Some((key, tx)),
            },
        };
        let (seq, durable) = {
            let mut journal = shared.journal.lock();
            let key = claim.as_ref().map(|(k, _)| k.clone()).unwrap_or_default();
            (journal.append(payload.clone(), ctx.method.clone(), key), journal.durable())
        };
        let turn = Turn { shared: shared.clone(), seq, claim };
        tokio::spawn(forward_write(ctx, payload, turn, durable, reply_tx));
    } else {
        let order = Order::Read(shared.order.clone().read_owned().await);
        let mut ctx = ctx;
        ctx.snapshot = shared.snapshot.load_full();
        let round = Round::new(shared.clone(), ctx, false, shared.head(), None);
        tokio::spawn(round.run(payload, order, reply_tx));
    }
    match reply_rx.await {
        Ok(reply) => reply,
        Err(_) => Reply { status: 500, outcome: Outcome::AllFailed,
                          bytes: http::error_response(500, &[("error", "internal error")],
                                                      false) },
    }
}

/// A write's turn: once it is durable and every earlier write was forwarded, it takes the
/// write half of the order lock and fans out. Dropping the turn, however the write ends,
/// lets the next one go.
async fn forward_write(mut ctx: Context, payload: Bytes, turn: Turn,
                       durable: Option<tokio::sync::watch::Receiver<u64>>,
                       reply: oneshot::Sender<Reply>) {
    let shared = turn.shared.clone();
    let seq = turn.seq;
    if let Some(mut durable) = durable {
        let written = tokio::time::timeout(JOURNAL_WAIT, durable.wait_for(|d| *d >= seq)).await;
        if !matches!(written, Ok(Ok(_))) {
            let mut turn = turn;
            turn.in_doubt(503, "the write journal is unavailable");
            let _ = reply.send(Reply { status: 503, outcome: Outcome::AllFailed,
                                       bytes: http::error_response(
                                           503, &[("error", "the write journal is unavailable"),
                                                  ("write", IN_DOUBT)], false) });
            return;
        }
    }
    let mut forwarded = shared.forwarded.subscribe();
    let _ = forwarded.wait_for(|f| *f + 1 >= seq).await;
    let order = Order::Write(shared.order.clone().write_owned().await);
    ctx.snapshot = shared.snapshot.load_full();
    if below_floor(&shared, &ctx).is_some() {
        // Journaled but forwarded to nobody: it will reach every executor on replay.
        let reason = "fewer executors than the floor could vote";
        let mut turn = turn;
        turn.in_doubt(502, reason);
        let _ = reply.send(in_doubt(&ctx, reason));
        return;
    }
    let round = Round::new(shared, ctx, true, seq, Some(turn));
    round.run(payload, order, reply).await;
}

/// How long a write waits for the journal to make it durable before it is refused.
const JOURNAL_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Marks a write forwarded when dropped (after the order lock it held was released); holds
/// the write's idempotency claim until its outcome is recorded.
struct Turn {
    shared: Arc<Shared>,
    seq: u64,
    claim: Option<(Bytes, tokio::sync::watch::Sender<Option<Keyed>>)>,
}

impl Turn {
    /// Record the write's outcome for retries with its key.
    fn outcome(&mut self, outcome: Keyed) {
        if let Some((key, tx)) = self.claim.take() {
            self.shared.keys.record(&key, tx, outcome);
        }
    }

    /// A refusal that leaves the write in doubt (journaled; some executors may apply it).
    fn in_doubt(&mut self, status: u16, reason: &str) {
        self.shared.journal.lock().mark_in_doubt(self.seq);
        self.outcome(Keyed::Refused { status, reason: reason.to_owned(), seq: self.seq });
    }
}

/// The reply a retried keyed write gets: what the first one came to.
fn replay(ctx: &Context, outcome: &Keyed) -> Reply {
    match outcome {
        Keyed::Reply(response) => match http::encode_response(response, ctx.keep_alive, false,
                                                               &[]) {
            Ok(bytes) => Reply { status: response.status, bytes, outcome: Outcome::Accepted },
            Err(why) => refuse(ctx, &why, Outcome::NoQuorum),
        },
        Keyed::Refused { status: 502, reason, .. } => in_doubt(ctx, reason),
        Keyed::Refused { status, reason, .. } => Reply {
            status: *status, outcome: Outcome::AllFailed,
            bytes: http::error_response(*status, &[("error", reason), ("write", IN_DOUBT)],
                                        ctx.keep_alive) },
        Keyed::Applied { seq } => Reply {
            status: 409, outcome: Outcome::Accepted,
            bytes: http::error_response(409, &[("error", "this write was already applied \
                                                           (before a gateway restart)"),
                                                ("write", &format!("#{seq}"))],
                                        ctx.keep_alive) },
    }
}

/// The 502 of a write that got no quorum.
fn in_doubt(ctx: &Context, reason: &str) -> Reply {
    Reply { status: 502, outcome: Outcome::NoQuorum,
            bytes: http::error_response(502, &[("error", "no quorum"), ("reason", reason),
                                               ("write", IN_DOUBT)], ctx.keep_alive) }
}

/// What a 502 to a write says: it may have been applied by some executors, and will reach the
/// others through the journal.
const IN_DOUBT: &str = "in doubt";

impl Drop for Turn {
    fn drop(&mut self) {
        if let Some((key, _)) = self.claim.take() {
            self.shared.keys.forget(&key);
        }
        let seq = self.seq;
        self.shared.forwarded.send_modify(|f| *f = (*f).max(seq));
    }
}

/// Fail closed without fanning out when fewer executors than the floor can vote.
fn below_floor(shared: &Shared, ctx: &Context) -> Option<Reply> {
    let snapshot = &ctx.snapshot;
    if snapshot.voters.len() >= snapshot.floor {
        return None;
    }
    let reason = format!("only {} executors can vote; at least {} are needed",
                         snapshot.voters.len(), snapshot.floor);
    shared.stats.outcome(Outcome::NoQuorum);
    shared.events.push(Event::Verdict(Box::new(VerdictEvent {
        method: method_label(&ctx.method), path: ctx.path.clone(), client: ctx.client,
        outcome: Outcome::NoQuorum, agreed: vec![], dissented: vec![], failed: vec![],
        reason: reason.clone(), digests: vec![], errors: vec![], shadows: vec![],
        refused: true, evidence: vec![] })), &shared.stats);
    Some(refuse(ctx, &reason, Outcome::NoQuorum))
}

fn method_label(method: &[u8]) -> String {
    String::from_utf8_lossy(method).into_owned()
}

fn refuse(ctx: &Context, reason: &str, outcome: Outcome) -> Reply {
    Reply { status: 502, outcome,
            bytes: http::error_response(502, &[("error", "no quorum"), ("reason", reason)],
                                        ctx.keep_alive) }
}

/// One request's fan-out and ballot.
struct Round {
    shared: Arc<Shared>,
    ctx: Context,
    ballot: Ballot,
    replies: Vec<(Arc<str>, Response)>,
    shadow_outputs: Vec<Output>,
    errors: Vec<(Arc<str>, String)>,
    targets: Vec<Arc<Executor>>,
    reply: Option<oneshot::Sender<Reply>>,
    /// A write's seq and turn (released after the order lock).
    write: Option<Turn>,
}

impl Round {
    fn new(shared: Arc<Shared>, ctx: Context, write: bool, head: u64, turn: Option<Turn>)
           -> Round {
        let snap = ctx.snapshot.clone();
        let names = snap.voters.iter().map(|e| e.name.clone()).collect();
        let ballot = Ballot::new(snap.strategy, names, snap.weights.as_deref())
            .expect("a published snapshot has a valid ballot");
        let mut round = Round { shared, ctx, ballot, replies: Vec::new(),
                                shadow_outputs: Vec::new(), errors: Vec::new(),
                                targets: Vec::new(), reply: None, write: turn };
        // A write reaches every executor kept level; it was level before this write if its
        // journal position is the entry just before this one.
        let level_at = if write { head - 1 } else { head };
        let mut seen = std::collections::HashSet::new();
        let candidates = snap.voters.iter().chain(&snap.shadows)
            .chain(if write { snap.keep_level.as_slice() } else { &[] });
        for executor in candidates {
            if !seen.insert(executor.name.clone()) {
                continue;
            }
            if executor.level(level_at) {
                if write && !executor.stateless {
                    executor.synced.store(head, std::sync::atomic::Ordering::Release);
                }
                round.targets.push(executor.clone());
            } else if round.ballot.is_pending(&executor.name) {
                round.errors.push((executor.name.clone(), "behind the write journal".into()));
                let rule = snap.rules.body_rule(&round.ctx.path, b"").clone();
                let out = Output::failure(executor.name.clone(), ErrorKind::Crash, rule, 0.0);
                round.add_vote(out);
            }
        }
        round
    }

    async fn run(mut self, payload: Bytes, order: Order, reply: oneshot::Sender<Reply>) {
        self.reply = Some(reply);
        if let Some(early) = self.ballot.decided_verdict() {
            self.respond(&early);
        }
        let snap = self.ctx.snapshot.clone();
        let limits = snap.limits;
        let method = self.ctx.method.clone();
        let mut pending: FuturesUnordered<_> = self.targets.iter().cloned().map(|executor| {
            let payload = payload.clone();
            let method = method.clone();
            async move {
                let ex = exchange(&executor.pool, &payload, &method, limits,
                                  executor.read_timeout).await;
                (executor, ex)
            }
        }).collect();
        while let Some((executor, ex)) = pending.next().await {
            self.answered(&executor, ex);
        }
        drop(pending);
        let verdict = self.ballot.close();
        self.respond(&verdict);
        // The write counts as forwarded before the lock goes, so a read that follows finds
        // its executors level with the journal; and it is the next write's turn.
        self.write = None;
        drop(order);
        self.report(&verdict);
    }

    fn answered(&mut self, executor: &Executor, ex: Exchange) {
        executor.stats.latency.observe(ex.latency);
        let rules = &self.ctx.snapshot.rules;
        let latency = ex.latency.as_secs_f64();
        let output = match ex.outcome {
            Ok(response) => {
                let head = rules.canonical_head(response.status, &response.headers);
                let content_type = response.header(b"content-type").cloned().unwrap_or_default();
                let rule = rules.body_rule(&self.ctx.path, &content_type).clone();
                let out = Output::value(executor.name.clone(), head, response.body.clone(), rule,
                                        latency);
                self.replies.push((executor.name.clone(), response));
                out
            }
            Err(e) => {
                self.errors.push((executor.name.clone(), format!("{}: {}", e.kind, e.reason)));
                let rule = rules.body_rule(&self.ctx.path, b"").clone();
                Output::failure(executor.name.clone(), e.kind, rule, latency)
            }
        };
        if self.ballot.is_pending(&executor.name) {
            self.add_vote(output);
        } else if self.ctx.snapshot.shadows.iter().any(|s| s.name == executor.name) {
            self.shadow_outputs.push(output);
        }
    }

    fn add_vote(&mut self, output: Output) {
        let started = Instant::now();
        let early = self.ballot.add(output).expect("every output comes from a pending voter");
        self.shared.stats.arbiter.observe(started.elapsed());
        if let Some(verdict) = early {
            self.respond(&verdict);
        }
    }

    fn respond(&mut self, verdict: &Verdict) {
        let Some(tx) = self.reply.take() else { return };
        let reply = match &verdict.winner {
            None if self.write.is_some() => {
                if let Some(turn) = self.write.as_mut() {
                    turn.in_doubt(502, &verdict.reason);
                }
                in_doubt(&self.ctx, &verdict.reason)
            }
            None => refuse(&self.ctx, &verdict.reason, verdict.outcome),
            Some(winner) => {
                let reply = self.encode(winner, verdict);
                if let Some(turn) = self.write.as_mut() {
                    if let Some((_, response)) = self.replies.iter().find(|(n, _)| n == winner) {
                        turn.outcome(Keyed::Reply(Box::new(response.clone())));
                    }
                }
                reply
            }
        };
        self.shared.stats.latency.observe(self.ctx.started.elapsed());
        let _ = tx.send(reply);
    }

    fn encode(&self, winner: &Arc<str>, verdict: &Verdict) -> Reply {
        let response = &self.replies.iter().find(|(n, _)| n == winner)
            .expect("the winner answered").1;
        let mut extra = Vec::new();
        if self.ctx.snapshot.verdict_headers {
            let join = |names: &[Arc<str>]| Bytes::from(names.join(","));
            let dissenters: Vec<Arc<str>> =
                verdict.dissented.iter().chain(&verdict.failed).cloned().collect();
            extra.push((Bytes::from_static(b"x-endosec-verdict"),
                        Bytes::from_static(verdict.outcome.as_str().as_bytes())));
            extra.push((Bytes::from_static(b"x-endosec-agreed"), join(&verdict.agreed)));
            extra.push((Bytes::from_static(b"x-endosec-dissented"), join(&dissenters)));
        }
        match http::encode_response(response, self.ctx.keep_alive, self.ctx.head_only, &extra) {
            Ok(bytes) => Reply { status: response.status, bytes, outcome: verdict.outcome },
            Err(why) => refuse(&self.ctx, &format!("the agreed reply cannot be forwarded: {why}"),
                               Outcome::NoQuorum),
        }
    }

    fn report(&mut self, verdict: &Verdict) {
        let shared = &self.shared;
        shared.stats.outcome(verdict.outcome);
        shared.remember(Recent { method: method_label(&self.ctx.method),
                                 path: self.ctx.path.clone(), outcome: verdict.outcome,
                                 agreed: verdict.agreed.clone(),
                                 dissented: verdict.dissented.clone(),
                                 failed: verdict.failed.clone() },
                        self.ctx.snapshot.recent_verdicts);
        let winner = verdict.winner.as_ref().and_then(|w| self.ballot.output(w));
        let shadows: Vec<(Arc<str>, bool)> = match winner {
            Some(w) => self.shadow_outputs.iter()
                .map(|o| (o.executor.clone(), o.agrees_with(w))).collect(),
            None => Vec::new(),
        };
        let clean = verdict.outcome == Outcome::Accepted && verdict.dissented.is_empty()
            && verdict.failed.is_empty() && shadows.is_empty();
        if clean {
            for name in &verdict.agreed {
                if let Some(e) = self.ctx.snapshot.executors.get(name) {
                    e.stats.agreed();
                }
            }
            return;
        }
        let digests = self.ballot.outputs().iter()
            .map(|o| (o.executor.clone(), hex(&o.digest()))).collect();
        let evidence = self.evidence(verdict);
        let errors = std::mem::take(&mut self.errors);
        shared.events.push(Event::Verdict(Box::new(VerdictEvent {
            method: method_label(&self.ctx.method), path: self.ctx.path.clone(),
            client: self.ctx.client, outcome: verdict.outcome, agreed: verdict.agreed.clone(),
            dissented: verdict.dissented.clone(), failed: verdict.failed.clone(),
            reason: verdict.reason.clone(), digests, errors, shadows, refused: false,
            evidence })), &shared.stats);
    }

    /// The replies of the winner and of every dissenter, bodies only when the snapshot says so
    /// (and cut at its bound): what an operator needs to see what the dissenter did.
    fn evidence(&self, verdict: &Verdict) -> Vec<(Arc<str>, Evidence)> {
        let policy = &self.ctx.snapshot.evidence;
        let wanted = verdict.winner.iter().chain(&verdict.dissented).chain(&verdict.failed);
        wanted.filter_map(|name| {
            let (_, response) = self.replies.iter().find(|(n, _)| n == name)?;
            let body = policy.bodies.then(|| {
                response.body.slice(..response.body.len().min(policy.max_body))
            });
            Some((name.clone(), Evidence { status: response.status,
                                           headers: response.headers.clone(), body }))
        }).collect()
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

