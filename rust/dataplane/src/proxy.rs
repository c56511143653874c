//! The HTTP request path: route (read or write; take the write-order lock; journal a write)
//! -> a [`Round`] with the HTTP phases: ask each executor over its keep-alive pool, judge its
//! status, headers and body, answer with the winner's response (or a 502, which for a write
//! says the write is in doubt), and once every executor answered, let the next write go.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use tokio::sync::{oneshot, OwnedRwLockReadGuard, OwnedRwLockWriteGuard};

use crate::ballot::{Output, Verdict};
use crate::canon::BodyRule;
use crate::events::{Event, Evidence};
use crate::immune;
use crate::idempotency::{Claim, Outcome as Keyed, MAX_KEY};
use crate::http::clock::{rfc3339_micros, TIME_HEADER};
use crate::http::{self, Request, Response};
use crate::model::Outcome;
use crate::plane::Shared;
use crate::round::{below_floor, Context, Fanout, Phases, Round};
use crate::snapshot::Executor;
use crate::upstream::{exchange, Asked};

/// Methods that must not change executor state; everything else is serialised and journaled.
const SAFE_METHODS: [&[u8]; 4] = [b"GET", b"HEAD", b"OPTIONS", b"TRACE"];

/// Whichever half of the write-order lock a request holds, until its last executor answered.
enum Order {
    Read(#[allow(dead_code)] OwnedRwLockReadGuard<()>),
    Write(#[allow(dead_code)] OwnedRwLockWriteGuard<()>),
}

/// What the client gets for one request, and what the access log says of it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub bytes: Vec<u8>,
    pub outcome: Outcome,
}

/// Answer one admitted request: the consensus reply, or a fail-closed refusal.
pub async fn serve(shared: Arc<Shared>, mut request: Request,
                   client: Option<std::net::SocketAddr>) -> Reply {
    let started = Instant::now();
    let write = !SAFE_METHODS.contains(&request.method.as_ref());
    request.headers.retain(|(name, _)| name.as_ref() != TIME_HEADER);
    let snapshot = shared.snapshot.load_full();
    let sample = shared.sketch.sample();
    let watched = !snapshot.memories.is_empty() || snapshot.detector.is_some();
    let features: Option<Arc<[u64]>> = (sample || watched).then(|| {
        immune::request_features(&request.method, &request.target, &request.headers,
                                 &request.body).into()
    });
    let memory = features.as_deref().and_then(|f| {
        snapshot.memories.matching(f).or_else(|| snapshot.detector.as_ref()?.flags(f))
    });
    if write {
        let now = rfc3339_micros(std::time::SystemTime::now());
        request.headers.push((Bytes::from_static(TIME_HEADER), Bytes::from(now)));
    }
    let payload = match http::upstream_request_bytes(&request, b"") {
        Ok(bytes) => Bytes::from(bytes),
        Err(why) => return Reply { status: 400, outcome: Outcome::AllFailed,
                                   bytes: http::error_response(400, &[("error", &why)], false) },
    };
    let keep_alive = request.keep_alive;
    let path = request.target.split(|&b| b == b'?').next().unwrap_or(b"");
    let path = String::from_utf8_lossy(path).into_owned();
    let ctx = Context { id: shared.ids.next(),
                        label: String::from_utf8_lossy(&request.method).into_owned(), key: path,
                        client, started, snapshot, memory, features, sample };
    if ctx.snapshot.reserved_paths.contains(&ctx.key) {
        return Reply { status: 404, outcome: Outcome::AllFailed,
                       bytes: http::error_response(404, &[("error", "not found")], keep_alive) };
    }
    if let Some(memory) = &ctx.memory {
        shared.matches.record(memory, immune::Matched {
            response: memory.response.as_str(), count: 1, request: ctx.id,
            method: ctx.label.clone(), path: ctx.key.clone(), client });
        if memory.response == immune::Response::Refuse {
            return Reply { status: 403, outcome: Outcome::AllFailed,
                           bytes: http::error_response(403, &[("error", "forbidden"),
                                                              ("request", &format!("{:016x}", ctx.id))],
                                                       keep_alive) };
        }
    }
    let http = Http { method: request.method.clone(), payload, keep_alive,
                      head_only: request.method == "HEAD", turn: None, order: None, request };
    if let Some(leader) = ctx.snapshot.writes_to.as_deref().filter(|_| write) {
        return relay(leader, &http, ctx.snapshot.limits, ctx.id).await;
    }
    if below_floor(&shared, &ctx).is_some() {
        return refuse(keep_alive, ctx.id, Outcome::NoQuorum);
    }
    let (reply_tx, reply_rx) = oneshot::channel();
    if write {
        let key = http.request.headers.iter().find(|(n, _)| n.as_ref() == b"idempotency-key")
            .map(|(_, v)| v.clone());
        let claim = match key {
            None => None,
            Some(key) if key.len() > MAX_KEY => return Reply {
                status: 400, outcome: Outcome::AllFailed,
                bytes: http::error_response(400, &[("error", "Idempotency-Key too long")],
                                            keep_alive) },
            Some(key) => match shared.keys.claim(&key, Instant::now()) {
                Claim::Done(outcome) => return replay(keep_alive, ctx.id, &outcome),
                Claim::Wait(mut rx) => {
                    let outcome = rx.wait_for(Option::is_some).await.ok()
                        .and_then(|o| o.clone());
                    return match outcome {
                        Some(outcome) => replay(keep_alive, ctx.id, &outcome),
                        // The first request with this key ended without an outcome.
                        None => refuse(keep_alive, ctx.id, Outcome::AllFailed),
                    };
                }
                Claim::First(tx) => Some((key, tx)),
            },
        };
        let (seq, durable) = {
            let mut journal = shared.journal.lock();
            let key = claim.as_ref().map(|(k, _)| k.clone()).unwrap_or_default();
            (journal.append(http.payload.clone(), http.method.clone(), key), journal.durable())
        };
        let turn = Turn { shared: shared.clone(), seq, claim, request: ctx.id,
                          method: ctx.label.clone(), path: ctx.key.clone() };
        tokio::spawn(forward_write(ctx, http, turn, durable, reply_tx));
    } else {
        let order = Order::Read(shared.order.clone().read_owned().await);
        let mut ctx = ctx;
        ctx.snapshot = shared.snapshot.load_full();
        let http = Http { order: Some(order), ..http };
        let round = Round::new(shared.clone(), ctx, http, Fanout::Read { head: shared.head() });
        tokio::spawn(round.run(Box::new(move |reply| { let _ = reply_tx.send(reply); })));
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
async fn forward_write(mut ctx: Context, http: Http, turn: Turn,
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
        let mut turn = turn;
        turn.in_doubt(502, "fewer executors than the floor could vote");
        let _ = reply.send(in_doubt(http.keep_alive, ctx.id));
        return;
    }
    let http = Http { turn: Some(turn), order: Some(order), ..http };
    Round::new(shared, ctx, http, Fanout::Write { seq })
        .run(Box::new(move |answer| { let _ = reply.send(answer); })).await;
}

/// How long a write waits for the journal to make it durable before it is refused.
const JOURNAL_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Marks a write forwarded when dropped (after the order lock it held was released); holds
/// the write's idempotency claim until its outcome is recorded.
struct Turn {
    shared: Arc<Shared>,
    seq: u64,
    claim: Option<(Bytes, tokio::sync::watch::Sender<Option<Keyed>>)>,
    /// What the in-doubt event names.
    request: u64,
    method: String,
    path: String,
}

impl Turn {
    /// Record the write's outcome for retries with its key.
    fn outcome(&mut self, outcome: Keyed) {
        if let Some((key, tx)) = self.claim.take() {
            self.shared.keys.record(&key, tx, outcome);
        }
    }

    /// A refusal that leaves the write in doubt (journaled; some executors may apply it):
    /// marked in the journal and reported, for the ledger.
    fn in_doubt(&mut self, status: u16, reason: &str) {
        self.shared.journal.lock().mark_in_doubt(self.seq);
        self.shared.events.push(Event::InDoubt {
            seq: self.seq, request: self.request, method: self.method.clone(),
            path: self.path.clone(), status, reason: reason.to_owned() }, &self.shared.stats);
        self.outcome(Keyed::Refused { status, reason: reason.to_owned(), seq: self.seq });
    }
}

/// The reply a retried keyed write gets: what the first one came to.
fn replay(keep_alive: bool, id: u64, outcome: &Keyed) -> Reply {
    match outcome {
        Keyed::Reply(response) => match http::encode_response(response, keep_alive, false, &[]) {
            Ok(bytes) => Reply { status: response.status, bytes, outcome: Outcome::Accepted },
            Err(_) => refuse(keep_alive, id, Outcome::NoQuorum),
        },
        Keyed::Refused { status: 502, .. } => in_doubt(keep_alive, id),
        Keyed::Refused { status, reason, .. } => Reply {
            status: *status, outcome: Outcome::AllFailed,
            bytes: http::error_response(*status, &[("error", reason), ("write", IN_DOUBT)],
                                        keep_alive) },
        Keyed::Applied { seq } => Reply {
            status: 409, outcome: Outcome::Accepted,
            bytes: http::error_response(409, &[("error", "this write was already applied \
                                                           (before a gateway restart)"),
                                                ("write", &format!("#{seq}"))],
                                        keep_alive) },
    }
}

/// A write through a follower: its leader orders, journals and judges it, and its answer is
/// this one's. No answer from the leader is a 502 with the write in doubt.
async fn relay(leader: &Executor, http: &Http, limits: http::Limits, id: u64) -> Reply {
    let asked = exchange(&leader.pool, &http.payload, &http.method, limits,
                         leader.read_timeout).await;
    let Ok(response) = asked.outcome else {
        return in_doubt(http.keep_alive, id);
    };
    match http::encode_response(&response, http.keep_alive, http.head_only, &[]) {
        Ok(bytes) => Reply { status: response.status, bytes,
                             outcome: if response.status == 502 { Outcome::NoQuorum }
                                      else { Outcome::Accepted } },
        Err(_) => in_doubt(http.keep_alive, id),
    }
}

/// The 502 of a write that got no quorum.
fn in_doubt(keep_alive: bool, id: u64) -> Reply {
    Reply { status: 502, outcome: Outcome::NoQuorum,
            bytes: http::error_response(502, &[("error", "no quorum"),
                                               ("request", &format!("{id:016x}")),
                                               ("write", IN_DOUBT)], keep_alive) }
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

/// A 502: generic, with the request's id to find the reason (which names executors) in the
/// events; a client learns nothing of who voted or how many.
fn refuse(keep_alive: bool, id: u64, outcome: Outcome) -> Reply {
    Reply { status: 502, outcome,
            bytes: http::error_response(502, &[("error", "no quorum"),
                                               ("request", &format!("{id:016x}"))],
                                        keep_alive) }
}

/// What the HTTP phases of one request carry besides the [`Context`].
struct Http {
    method: Bytes,
    /// The request every executor receives.
    payload: Bytes,
    keep_alive: bool,
    head_only: bool,
    /// A write's turn: its idempotency outcome is recorded at the answer.
    turn: Option<Turn>,
    /// The half of the write-order lock held until every executor answered.
    order: Option<Order>,
    /// The client's request, for its features if it turns out an antigen.
    request: Request,
}

impl Phases for Http {
    type Reply = Response;
    type Answer = Reply;

    fn ask(&self, ctx: &Context, executor: Arc<Executor>) -> BoxFuture<'static, Asked<Response>> {
        let (payload, method, limits) = (self.payload.clone(), self.method.clone(),
                                         ctx.snapshot.limits);
        Box::pin(async move {
            exchange(&executor.pool, &payload, &method, limits, executor.read_timeout).await
        })
    }

    fn output(&self, ctx: &Context, executor: Arc<str>, response: &Response, latency: f64)
              -> Output {
        let rules = &ctx.snapshot.rules;
        let head = rules.canonical_head(response.status, &response.headers);
        let content_type = response.header(b"content-type").cloned().unwrap_or_default();
        let rule = rules.body_rule(&ctx.key, &content_type, response.status).clone();
        Output::value(executor, head, response.body.clone(), rule, latency)
    }

    fn features(&self, _ctx: &Context) -> Vec<u64> {
        let r = &self.request;
        immune::request_features(&r.method, &r.target, &r.headers, &r.body)
    }

    fn failure_rule(&self, ctx: &Context) -> Arc<BodyRule> {
        ctx.snapshot.rules.body_rule(&ctx.key, b"", 0).clone()
    }

    fn answer(&mut self, ctx: &Context, verdict: &Verdict, winner: Option<(&Response, &BodyRule)>)
              -> Reply {
        let Some((response, body_rule)) = winner else {
            return match self.turn.as_mut() {
                Some(turn) => {
                    turn.in_doubt(502, &verdict.reason);
                    in_doubt(self.keep_alive, ctx.id)
                }
                None => refuse(self.keep_alive, ctx.id, verdict.outcome),
            };
        };
        if let Some(turn) = self.turn.as_mut() {
            turn.outcome(Keyed::Reply(Box::new(response.clone())));
        }
        let snapshot = &ctx.snapshot;
        let mut extra = Vec::new();
        if snapshot.verdict_headers {
            extra.push((Bytes::from_static(b"x-endosec-verdict"),
                        Bytes::from_static(verdict.outcome.as_str().as_bytes())));
        }
        if snapshot.verdict_headers && snapshot.verdict_names {
            let join = |names: &[Arc<str>]| Bytes::from(names.join(","));
            let dissenters: Vec<Arc<str>> =
                verdict.dissented.iter().chain(&verdict.failed).cloned().collect();
            extra.push((Bytes::from_static(b"x-endosec-agreed"), join(&verdict.agreed)));
            extra.push((Bytes::from_static(b"x-endosec-dissented"), join(&dissenters)));
        }
        let rule = snapshot.rules.headers();
        let voted = |name: &[u8]| rule.voted(response.status, name);
        let mut shown = Response { headers: snapshot.face.apply(&response.headers, &voted),
                                   ..response.clone() };
        snapshot.face.body(&mut shown, body_rule, self.head_only);
        match http::encode_response(&shown, self.keep_alive, self.head_only, &extra) {
            Ok(bytes) => Reply { status: response.status, bytes, outcome: verdict.outcome },
            // Cannot happen for a reply the reader accepted; fail closed if it does.
            Err(_) => refuse(self.keep_alive, ctx.id, Outcome::NoQuorum),
        }
    }

    /// The write counts as forwarded before the lock goes, so a read that follows finds its
    /// executors level with the journal; and it is the next write's turn.
    fn settle(&mut self) {
        self.turn = None;
        self.order = None;
    }

    /// The replies of the winner and of every dissenter, bodies only when the snapshot says so
    /// (and cut at its bound): what an operator needs to see what the dissenter did.
    fn evidence(&self, ctx: &Context, replies: &[(Arc<str>, Response)], verdict: &Verdict)
                -> Vec<(Arc<str>, Evidence)> {
        let policy = &ctx.snapshot.evidence;
        let wanted = verdict.winner.iter().chain(&verdict.dissented).chain(&verdict.failed);
        wanted.filter_map(|name| {
            let (_, response) = replies.iter().find(|(n, _)| n == name)?;
            let body = policy.bodies.then(|| {
                response.body.slice(..response.body.len().min(policy.max_body))
            });
            Some((name.clone(), Evidence { status: response.status,
                                           headers: response.headers.clone(), body }))
        }).collect()
    }
}
