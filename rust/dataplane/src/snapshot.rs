//! The down channel: immutable snapshots the control plane publishes, swapped between requests.
//!
//! A snapshot says who votes (with trust weights), who shadows, who is kept level with the
//! journal, where each executor listens, and every rule and limit the request path applies.
//! Each request reads the current snapshot once and uses it throughout, so a change never
//! applies to half a request. Executors persist across snapshots while their address and
//! epoch stay the same (the control plane bumps the epoch whenever it restarts one), so their
//! pools and journal positions survive a publish.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::immune::{Detector, DetectorSpec, Memories, Memory};
use crate::ballot::Strategy;
use crate::canon::RuleSet;
use crate::dns;
use crate::http::{self, Admission, Face, Limits};
use crate::pool::{Datagrams, Pool, PoolLimits};
use crate::stats::ExecutorStats;

/// One executor as the request path knows it.
#[derive(Debug)]
pub struct Executor {
    pub name: Arc<str>,
    pub epoch: u64,
    pub read_timeout: Duration,
    pub stateless: bool,
    /// The seq of the last journal entry this executor received.
    pub synced: AtomicU64,
    pub pool: Pool,
    /// UDP sockets for DNS queries (made on first use).
    pub datagrams: Datagrams,
    pub stats: Arc<ExecutorStats>,
}

impl Executor {
    /// Whether it has received every write up to ``head``.
    pub fn level(&self, head: u64) -> bool {
        self.stateless || self.synced.load(Ordering::Acquire) == head
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutorSpec {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub epoch: u64,
    pub connect_timeout: f64,
    pub read_timeout: f64,
    #[serde(default)]
    pub stateless: bool,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_request_body: usize,
    pub max_response_body: usize,
    pub client_header_timeout: f64,
    pub client_idle_timeout: f64,
    pub max_connections: usize,
    pub upstream_max_requests: u32,
    pub upstream_max_age: f64,
    #[serde(default = "default_upstream_connections")]
    pub upstream_max_connections: usize,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArbiterSpec {
    pub strategy: String,
    #[serde(default)]
    pub k: Option<u32>,
    #[serde(default)]
    pub min_support: Option<u32>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalSpec {
    pub max_entries: usize,
    pub max_bytes: usize,
    /// Seconds a write's `Idempotency-Key` is remembered, and how many keys at most.
    #[serde(default = "default_key_window")]
    pub idempotency_window: f64,
    #[serde(default = "default_keys")]
    pub idempotency_keys: usize,
}

fn default_upstream_connections() -> usize {
    PoolLimits::default().max_connections
}

fn default_key_window() -> f64 {
    86_400.0
}

fn default_keys() -> usize {
    100_000
}

/// The wire protocol of the mimic boundary: which listener may serve this snapshot.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Http,
    Dns,
}

/// What the control plane sends, as JSON.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotSpec {
    #[serde(default)]
    pub protocol: Protocol,
    /// How DNS replies are compared and sized (read when the protocol is DNS).
    #[serde(default)]
    pub dns: dns::Spec,
    /// The methods served and what becomes of paths not in normal form (HTTP).
    #[serde(default)]
    pub http: http::Spec,
    /// Clients held responsible for repeated dissent: refused over TCP (their address cannot
    /// be forged there; a UDP source can, so UDP never refuses by address).
    #[serde(default)]
    pub refused_clients: Vec<IpAddr>,
    pub limits: LimitsSpec,
    pub canonicalise: serde_json::Value,
    pub arbiter: ArbiterSpec,
    pub journal: JournalSpec,
    pub floor: usize,
    #[serde(default)]
    pub verdict_headers: bool,
    /// Verdict headers name the executors (a debugging aid: it tells a client who voted).
    #[serde(default)]
    pub verdict_names: bool,
    /// What replies show of the executors behind them.
    #[serde(default)]
    pub face: http::face::Spec,
    #[serde(default = "default_recent")]
    pub recent_verdicts: usize,
    pub executors: Vec<ExecutorSpec>,
    pub voters: Vec<String>,
    #[serde(default)]
    pub weights: Option<HashMap<String, f64>>,
    /// Voters heard without support (strict voting: flagged by behaviour).
    #[serde(default)]
    pub discounted: Vec<String>,
    #[serde(default)]
    pub shadows: Vec<String>,
    #[serde(default)]
    pub keep_level: Vec<String>,
    /// Where writes go instead of to the executors: the boundary's leading gateway, which
    /// orders, journals and judges every write of the boundary (this gateway follows it).
    #[serde(default)]
    pub writes_to: Option<ExecutorSpec>,
    /// ``stderr``, a file path, or None: one JSON line per request.
    #[serde(default)]
    pub access_log: Option<String>,
    #[serde(default)]
    pub evidence: EvidenceSpec,
    /// Paths only the control plane may use on executors (state export): 404 to clients.
    #[serde(default)]
    pub reserved_paths: Vec<String>,
    /// Immune memory: requests that match one are judged by its response.
    #[serde(default)]
    pub memories: Vec<Memory>,
    /// The boundary's learned detector: a request it flags is met by its response.
    #[serde(default)]
    pub detector: Option<DetectorSpec>,
    /// Keep sampled self requests whole for the control plane (while detectors learn).
    #[serde(default)]
    pub keep_samples: bool,
}

/// What verdict events carry of the replies (see [`crate::events::Evidence`]).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceSpec {
    pub bodies: bool,
    pub max_body: usize,
}

impl Default for EvidenceSpec {
    fn default() -> EvidenceSpec {
        EvidenceSpec { bodies: false, max_body: 64 * 1024 }
    }
}

fn default_recent() -> usize {
    50
}

/// A published snapshot, compiled.
#[derive(Debug)]
pub struct Snapshot {
    pub generation: u64,
    pub protocol: Protocol,
    pub dns: Arc<dns::Settings>,
    pub admission: Admission,
    pub refused_clients: Vec<IpAddr>,
    pub limits: Limits,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub rules: Arc<RuleSet>,
    pub strategy: Strategy,
    pub floor: usize,
    pub verdict_headers: bool,
    pub verdict_names: bool,
    pub face: Face,
    pub recent_verdicts: usize,
    pub journal: JournalSpec,
    pub voters: Vec<Arc<Executor>>,
    /// Aligned with ``voters``; None unless the strategy is weighted.
    pub weights: Option<Vec<f64>>,
    pub discounted: Vec<Arc<str>>,
    pub shadows: Vec<Arc<Executor>>,
    pub keep_level: Vec<Arc<Executor>>,
    pub writes_to: Option<Arc<Executor>>,
    pub executors: HashMap<Arc<str>, Arc<Executor>>,
    pub access_log: Option<String>,
    pub evidence: EvidenceSpec,
    pub reserved_paths: Vec<String>,
    pub memories: Memories,
    pub detector: Option<Detector>,
    pub keep_samples: bool,
}

fn seconds(name: &str, value: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| format!("{name}: expected a non-negative number of seconds, got {value}"))
}

/// The compiled rules of the last snapshot, reused when the configuration did not change.
#[derive(Debug, Default)]
pub struct Compiled {
    rules: Option<(serde_json::Value, Arc<RuleSet>)>,
}

impl Snapshot {
    /// Compile ``spec``; executors whose address and epoch are unchanged are taken from
    /// ``previous`` so that their pools and journal positions carry over.
    pub fn compile(spec: SnapshotSpec, generation: u64,
                   previous: &HashMap<Arc<str>, Arc<Executor>>, compiled: &mut Compiled,
                   stats: &mut HashMap<Arc<str>, Arc<ExecutorStats>>)
                   -> Result<Snapshot, String> {
        let l = &spec.limits;
        let limits = Limits { max_header_bytes: l.max_header_bytes, max_headers: l.max_headers,
                              max_body_bytes: l.max_request_body,
                              max_target_bytes: Limits::default().max_target_bytes,
                              max_response_bytes: l.max_response_body };
        let connections = l.upstream_max_connections.max(1);
        let pool_limits = PoolLimits { max_connections: connections, max_idle: connections,
                                       max_requests: l.upstream_max_requests.max(1),
                                       max_age: seconds("upstream_max_age",
                                                        l.upstream_max_age)? };
        let rules = match &compiled.rules {
            Some((config, rules)) if *config == spec.canonicalise => rules.clone(),
            _ => {
                let rules = Arc::new(RuleSet::compile(&spec.canonicalise)?);
                compiled.rules = Some((spec.canonicalise.clone(), rules.clone()));
                rules
            }
        };
        let dns = Arc::new(dns::Settings::compile(&spec.dns)?);
        let admission = Admission::compile(&spec.http)?;
        let a = &spec.arbiter;
        let strategy = Strategy::from_config(&a.strategy, a.k, a.min_support)?;
        let mut executors = HashMap::new();
        for e in &spec.executors {
            let stats = stats.entry(Arc::from(e.name.as_str())).or_default().clone();
            let executor = upstream(e, previous, pool_limits, stats)?;
            executors.insert(executor.name.clone(), executor);
        }
        let writes_to = match &spec.writes_to {
            None => None,
            Some(e) => Some(upstream(e, previous, pool_limits, Arc::default())?),
        };
        let pick = |names: &[String], role: &str| -> Result<Vec<Arc<Executor>>, String> {
            names.iter().map(|n| executors.get(n.as_str()).cloned()
                .ok_or_else(|| format!("{role}: unknown executor {n:?}"))).collect()
        };
        let voters = pick(&spec.voters, "voters")?;
        let shadows = pick(&spec.shadows, "shadows")?;
        let keep_level = pick(&spec.keep_level, "keep_level")?;
        let weights = match (&spec.weights, strategy) {
            (Some(w), Strategy::TrustWeighted) => Some(
                spec.voters.iter().map(|n| w.get(n).copied()
                    .ok_or_else(|| format!("weights: no weight for voter {n:?}")))
                    .collect::<Result<Vec<f64>, String>>()?),
            _ => None,
        };
        Ok(Snapshot {
            generation, protocol: spec.protocol, dns, admission,
            refused_clients: spec.refused_clients.clone(), limits,
            header_timeout: seconds("client_header_timeout", l.client_header_timeout)?,
            idle_timeout: seconds("client_idle_timeout", l.client_idle_timeout)?,
            max_connections: l.max_connections, rules, strategy, floor: spec.floor,
            verdict_headers: spec.verdict_headers, verdict_names: spec.verdict_names,
            face: Face::compile(&spec.face)?, recent_verdicts: spec.recent_verdicts,
            discounted: spec.discounted.iter().map(|n| Arc::from(n.as_str())).collect(),
            journal: spec.journal, voters, weights, shadows, keep_level, writes_to, executors,
            access_log: spec.access_log, evidence: spec.evidence,
            reserved_paths: spec.reserved_paths, memories: Memories::compile(spec.memories)?,
            detector: spec.detector.map(Detector::compile).transpose()?,
            keep_samples: spec.keep_samples,
        })
    }
}

/// The upstream ``e`` names: the previous snapshot's when its address and epoch are unchanged
/// (its pool and journal position carry over), else a new one.
fn upstream(e: &ExecutorSpec, previous: &HashMap<Arc<str>, Arc<Executor>>,
            pool_limits: PoolLimits, stats: Arc<ExecutorStats>) -> Result<Arc<Executor>, String> {
    let addr = resolve(&e.host, e.port)
        .ok_or_else(|| format!("executors.{}: bad address {}:{}", e.name, e.host, e.port))?;
    let name: Arc<str> = Arc::from(e.name.as_str());
    let read_timeout = seconds("read_timeout", e.read_timeout)?;
    let connect_timeout = seconds("connect_timeout", e.connect_timeout)?;
    let kept = previous.get(&name).filter(|x| {
        x.epoch == e.epoch && x.pool.addr() == addr && x.read_timeout == read_timeout
            && x.stateless == e.stateless
    });
    if let Some(x) = kept {
        return Ok(x.clone());
    }
    let synced = previous.get(&name).filter(|x| x.epoch == e.epoch)
        .map_or(0, |x| x.synced.load(Ordering::Acquire));
    Ok(Arc::new(Executor {
        name, epoch: e.epoch, read_timeout, stateless: e.stateless,
        synced: AtomicU64::new(synced), pool: Pool::new(addr, connect_timeout, pool_limits),
        datagrams: Datagrams::new(addr, pool_limits.max_idle), stats,
    }))
}

fn resolve(host: &str, port: u16) -> Option<SocketAddr> {
    use std::net::ToSocketAddrs;
    (host, port).to_socket_addrs().ok()?.next()
}

impl Snapshot {
    /// Before the first publish: nobody votes, so every request fails closed.
    pub fn empty() -> Snapshot {
        Snapshot {
            generation: 0, protocol: Protocol::Http, dns: Arc::default(),
            admission: Admission::default(), refused_clients: Vec::new(),
            limits: Limits::default(), header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60), max_connections: 1024,
            rules: Arc::new(RuleSet::default()), strategy: Strategy::Majority, floor: 1,
            verdict_headers: false, verdict_names: false, face: Face::default(),
            recent_verdicts: 50,
            journal: JournalSpec { max_entries: 1, max_bytes: 1,
                                   idempotency_window: default_key_window(),
                                   idempotency_keys: default_keys() },
            voters: Vec::new(),
            weights: None, discounted: Vec::new(), shadows: Vec::new(),
            keep_level: Vec::new(), writes_to: None, executors: HashMap::new(), access_log: None, evidence: EvidenceSpec::default(),
            reserved_paths: Vec::new(), memories: Memories::default(), detector: None,
            keep_samples: false,
        }
    }
}
