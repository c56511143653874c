//! One round of the request path, whatever the protocol, as phases over a per-request context:
//! fan out to every voter and shadow (and, for a write, every level follower) -> canonicalise
//! each reply as it comes -> vote, answering the client the moment the verdict is certain ->
//! judge the stragglers -> settle -> report (counters, the recent-verdicts ring, and an event
//! for anything but a clean agreement).
//!
//! A protocol supplies its [`Phases`]: how to ask one executor, what a reply means to the
//! arbiter, what the client gets, and what to release once everyone answered. The round owns
//! the ballot and the order of things, so HTTP and DNS judge executors the same way.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};

use crate::ballot::{Ballot, Output, Verdict};
use crate::canon::BodyRule;
use crate::ballot::Strategy;
use crate::events::{Event, Evidence, VerdictEvent};
use crate::immune::{Memory, Response};
use crate::model::{push_hex, ErrorKind, Outcome};
use crate::plane::{Recent, Shared};
use crate::snapshot::{Executor, Snapshot};
use crate::stats::lag_route;
use crate::upstream::Asked;

/// What one request carries through its phases, whatever the protocol.
pub struct Context {
    /// The request's id: what a refusal gives the client, and its events carry.
    pub id: u64,
    /// What events call the request's kind: the HTTP method, the DNS question type.
    pub label: String,
    /// What events call its subject: the HTTP path, the DNS name.
    pub key: String,
    pub client: Option<SocketAddr>,
    pub started: Instant,
    /// Read once: a published change never applies to half a request.
    pub snapshot: Arc<Snapshot>,
    /// The immune memory the request matched: its response decides who votes and how.
    pub memory: Option<Arc<Memory>>,
    /// The request's features, when they were computed before the round.
    pub features: Option<Arc<[u64]>>,
    /// Its features go into the self sketch if every executor agrees.
    pub sample: bool,
}

/// A protocol's part of a round.
pub trait Phases: Send + 'static {
    /// One executor's reply, as the protocol reads it.
    type Reply: Send + 'static;
    /// What the client gets.
    type Answer: Send + 'static;

    /// Ask one executor (timeouts included); failures come back as values.
    fn ask(&self, ctx: &Context, executor: Arc<Executor>) -> BoxFuture<'static, Asked<Self::Reply>>;

    /// The arbiter's view of one reply.
    fn output(&self, ctx: &Context, executor: Arc<str>, reply: &Self::Reply, latency: f64)
              -> Output;

    /// The rule failures carry (they agree with nothing, whatever the rule).
    fn failure_rule(&self, ctx: &Context) -> Arc<BodyRule>;

    /// The client's answer: the winner's reply (with the body rule it was judged by)
    /// re-encoded, or a fail-closed refusal.
    fn answer(&mut self, ctx: &Context, verdict: &Verdict,
              winner: Option<(&Self::Reply, &BodyRule)>) -> Self::Answer;

    /// Every executor answered or timed out: release what the round held.
    fn settle(&mut self) {}

    /// The request's features (for the self sketch and for an antigen's event).
    fn features(&self, _ctx: &Context) -> Vec<u64> {
        Vec::new()
    }

    /// The winner's and the dissenters' replies, for the verdict event.
    fn evidence(&self, _ctx: &Context, _replies: &[(Arc<str>, Self::Reply)], _verdict: &Verdict)
                -> Vec<(Arc<str>, Evidence)> {
        Vec::new()
    }
}

/// Fail closed without fanning out when fewer executors than the floor can vote: count it,
/// report it, and say why (the protocol words the client's refusal).
pub fn below_floor(shared: &Shared, ctx: &Context) -> Option<String> {
    let snapshot = &ctx.snapshot;
    if snapshot.voters.len() >= snapshot.floor {
        return None;
    }
    let reason = format!("only {} executors can vote; at least {} are needed",
                         snapshot.voters.len(), snapshot.floor);
    shared.stats.outcome(Outcome::NoQuorum);
    shared.events.push(Event::Verdict(Box::new(VerdictEvent {
        method: ctx.label.clone(), path: ctx.key.clone(), client: ctx.client,
        request: ctx.id, outcome: Outcome::NoQuorum, agreed: vec![], dissented: vec![],
        failed: vec![], reason: reason.clone(), digests: vec![], errors: vec![], shadows: vec![],
        refused: true, evidence: vec![], features: vec![], memory: None })), &shared.stats);
    Some(reason)
}

/// Who a round asks: the voters and shadows, and for a write every level follower too.
pub enum Fanout {
    /// Nothing changes on the executors; ``head`` is the journal position they must be at.
    Read { head: u64 },
    /// The write with this journal sequence number.
    Write { seq: u64 },
}

/// Rounds under way (this one included) up to which a round's timings are the executors':
/// with more, replies queue in the gateway and their lags say more about it than about them.
const QUIET_ROUNDS: u64 = 4;

/// One request's fan-out and ballot.
pub struct Round<P: Phases> {
    shared: Arc<Shared>,
    ctx: Context,
    /// Few rounds were under way when it started: its lags are measured.
    quiet: bool,
    phases: P,
    ballot: Ballot,
    replies: Vec<(Arc<str>, P::Reply)>,
    /// Who shadows this request (a memory's response may change it).
    shadows: Vec<Arc<str>>,
    shadow_outputs: Vec<Output>,
    errors: Vec<(Arc<str>, String)>,
    targets: Vec<Arc<Executor>>,
    reply: Option<Respond<P::Answer>>,
}

/// Hands the client its answer, once (a channel to the connection, or a datagram).
pub type Respond<A> = Box<dyn FnOnce(A) + Send>;

impl<P: Phases> Round<P> {
    pub fn new(shared: Arc<Shared>, ctx: Context, phases: P, fanout: Fanout) -> Round<P> {
        let snap = ctx.snapshot.clone();
        // A write reaches every executor kept level; it was level before this write if its
        // journal position is the entry just before this one.
        let (write, head, level_at) = match fanout {
            Fanout::Read { head } => (false, head, head),
            Fanout::Write { seq } => (true, seq, seq - 1),
        };
        let judged = Judged::new(&snap, ctx.memory.as_deref(), level_at);
        let names = judged.voters.iter().map(|e| e.name.clone()).collect();
        let mut ballot = Ballot::new(judged.strategy, names, judged.weights.as_deref())
            .expect("a published snapshot has a valid ballot");
        ballot.discount(&snap.discounted);
        let quiet = shared.stats.rounds.fetch_add(1, Relaxed) < QUIET_ROUNDS;
        let shadows = judged.shadows.iter().map(|e| e.name.clone()).collect();
        let mut round = Round { shared, ctx, quiet, phases, ballot, replies: Vec::new(),
                                shadows, shadow_outputs: Vec::new(), errors: Vec::new(),
                                targets: Vec::new(), reply: None };
        let mut seen: Vec<&str> = Vec::new(); // a handful of executors: no hashing
        // An executor a memory leaves out of the vote still gets writes, to stay level.
        let everyone: Vec<&Arc<Executor>> = if write {
            snap.voters.iter().chain(&snap.shadows).chain(&snap.keep_level).collect()
        } else {
            Vec::new()
        };
        let candidates = judged.voters.iter().chain(&judged.shadows).chain(everyone);
        for executor in candidates {
            if seen.contains(&&*executor.name) {
                continue;
            }
            seen.push(&executor.name);
            if executor.level(level_at) {
                if write && !executor.stateless {
                    executor.synced.store(head, std::sync::atomic::Ordering::Release);
                }
                round.targets.push(executor.clone());
            } else if round.ballot.is_pending(&executor.name) {
                round.errors.push((executor.name.clone(), "behind the write journal".into()));
                let rule = round.phases.failure_rule(&round.ctx);
                let out = Output::failure(executor.name.clone(), ErrorKind::Crash, rule, 0.0);
                round.add_vote(out);
            }
        }
        round
    }

    /// Ask everyone, ``respond`` at the verdict, judge the rest, report.
    pub async fn run(mut self, respond: Respond<P::Answer>) {
        self.reply = Some(respond);
        if let Some(early) = self.ballot.decided_verdict() {
            self.respond(&early);
        }
        let mut pending: FuturesUnordered<_> = self.targets.iter().cloned()
            .map(|executor| {
                let asked = self.phases.ask(&self.ctx, executor.clone());
                async move { (executor, asked.await) }
            })
            .collect();
        while let Some((executor, asked)) = pending.next().await {
            self.answered(&executor, asked);
        }
        drop(pending);
        let verdict = self.ballot.close();
        self.respond(&verdict);
        self.phases.settle();
        self.report(&verdict);
    }

    fn answered(&mut self, executor: &Executor, asked: Asked<P::Reply>) {
        executor.stats.latency.observe(asked.latency);
        let latency = asked.service.as_secs_f64();
        let output = match asked.outcome {
            Ok(reply) => {
                let out = self.phases.output(&self.ctx, executor.name.clone(), &reply, latency);
                self.replies.push((executor.name.clone(), reply));
                out
            }
            Err(e) => {
                self.errors.push((executor.name.clone(), format!("{}: {}", e.kind, e.reason)));
                let rule = self.phases.failure_rule(&self.ctx);
                Output::failure(executor.name.clone(), e.kind, rule, latency)
            }
        };
        if self.ballot.is_pending(&executor.name) {
            self.add_vote(output);
        } else if self.shadows.contains(&executor.name) {
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
        let Some(respond) = self.reply.take() else { return };
        let winner = verdict.winner.as_ref().and_then(|w| {
            let (_, reply) = self.replies.iter().find(|(n, _)| n == w)?;
            Some((reply, &*self.ballot.output(w)?.rule))
        });
        let answer = self.phases.answer(&self.ctx, verdict, winner);
        self.shared.stats.latency.observe(self.ctx.started.elapsed());
        respond(answer);
    }

    fn report(&mut self, verdict: &Verdict) {
        let shared = &self.shared;
        shared.stats.outcome(verdict.outcome);
        shared.remember(Recent { method: self.ctx.label.clone(), path: self.ctx.key.clone(),
                                 outcome: verdict.outcome, agreed: verdict.agreed.clone(),
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
            // A request a memory met is no sample of self, however it went.
            if self.ctx.sample && self.ctx.memory.is_none() {
                let features = self.ctx.features.as_deref().map(<[u64]>::to_vec)
                    .unwrap_or_else(|| self.phases.features(&self.ctx));
                shared.sketch.add(features, self.ctx.snapshot.keep_samples);
            }
            let outputs = self.ballot.outputs();
            // Against the fastest of the others, so one slow peer does not make the rest look
            // fast; and three voters or more: with two, a lag cannot say which one is slow.
            let route = (outputs.len() >= 3 && self.quiet)
                .then(|| lag_route(&self.ctx.label, &self.ctx.key));
            let fastest = |me: usize| outputs.iter().enumerate().filter(|(i, _)| *i != me)
                .map(|(_, o)| o.latency).fold(f64::INFINITY, f64::min);
            for (i, o) in outputs.iter().enumerate() {
                if let Some(e) = self.ctx.snapshot.executors.get(&o.executor) {
                    e.stats.agreed();
                    if let Some(route) = &route {
                        e.stats.lags.observe(route, o.latency - fastest(i));
                    }
                }
            }
            return;
        }
        let digests = self.ballot.outputs().iter()
            .map(|o| (o.executor.clone(), hex(&o.digest()))).collect();
        let evidence = self.phases.evidence(&self.ctx, &self.replies, verdict);
        let errors = std::mem::take(&mut self.errors);
        let features = match &self.ctx.features {
            Some(f) => f.to_vec(),
            None if verdict.dissented.is_empty() => Vec::new(),
            None => self.phases.features(&self.ctx),
        };
        shared.events.push(Event::Verdict(Box::new(VerdictEvent {
            method: self.ctx.label.clone(), path: self.ctx.key.clone(), client: self.ctx.client,
            request: self.ctx.id, outcome: verdict.outcome, agreed: verdict.agreed.clone(),
            dissented: verdict.dissented.clone(), failed: verdict.failed.clone(),
            reason: verdict.reason.clone(), digests, errors, shadows, refused: false,
            evidence, features,
            memory: self.ctx.memory.as_ref().map(|m| m.id.clone()) })), &shared.stats);
    }
}

impl<P: Phases> Drop for Round<P> {
    fn drop(&mut self) {
        self.shared.stats.rounds.fetch_sub(1, Relaxed);
    }
}

/// Who votes on a request and how: the snapshot's ballot, or a memory's response to it.
struct Judged {
    voters: Vec<Arc<Executor>>,
    shadows: Vec<Arc<Executor>>,
    strategy: Strategy,
    weights: Option<Vec<f64>>,
}

impl Judged {
    /// ``level_at``: the journal position a shadow must be at to vote with the voters.
    fn new(snap: &Snapshot, memory: Option<&Memory>, level_at: u64) -> Judged {
        let plain = || Judged { voters: snap.voters.clone(), shadows: snap.shadows.clone(),
                                strategy: snap.strategy, weights: snap.weights.clone() };
        let Some(memory) = memory else { return plain() };
        // Voters flagged by behaviour lend no support: in a vote where all must agree they
        // would make agreement impossible, so they are left out of it.
        let supports = |e: &Arc<Executor>| !snap.discounted.contains(&e.name);
        let implicated = |e: &Arc<Executor>| memory.implicated.iter().any(|n| **n == *e.name);
        match memory.response {
            Response::Refuse => plain(),
            Response::Unanimity => {
                let mut voters: Vec<Arc<Executor>> =
                    snap.voters.iter().filter(|e| supports(e)).cloned().collect();
                for s in snap.shadows.iter().filter(|s| supports(s) && s.level(level_at)) {
                    if !voters.iter().any(|v| v.name == s.name) {
                        voters.push(s.clone());
                    }
                }
                if voters.is_empty() {
                    return plain();
                }
                Judged { voters, shadows: Vec::new(), strategy: Strategy::Unanimity,
                         weights: None }
            }
            Response::Rotate => {
                // Everyone left must agree, and they must be at least as many as the whole
                // ballot's quorum: leaving executors out never lets fewer of them decide.
                let kept: Vec<Arc<Executor>> = snap.voters.iter()
                    .filter(|e| !implicated(e) && supports(e)).cloned().collect();
                let quorum = usize::try_from(snap.strategy.quorum(snap.voters.len() as u64))
                    .unwrap_or(usize::MAX);
                if !snap.voters.iter().any(implicated) || kept.len() < quorum.max(snap.floor)
                    || kept.is_empty() {
                    return plain();  // nobody to leave out, or too few left to decide
                }
                Judged { voters: kept,
                         shadows: snap.shadows.iter().filter(|e| !implicated(e)).cloned()
                             .collect(),
                         strategy: Strategy::Unanimity, weights: None }
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::new();
    push_hex(&mut out, bytes);
    out
}
