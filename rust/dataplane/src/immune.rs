//! Immune memory on the request path: a request's features, the memories the control plane
//! publishes, and a sketch of self traffic to tell rare features from common ones.
//!
//! The features are those of `endosec.core.antigen` (the reference, held equal by a
//! differential property): FNV-1a ids of the method, the path template and segments, query
//! names and value tokens, header names and value tokens, and the body's first tokens. A
//! memory matches a request carrying at least ``need`` of its features; the round then judges
//! it by the memory's response before any executor answers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

use serde::Deserialize;

/// How much of a body is read for tokens.
pub const BODY_BYTES: usize = 4096;
/// Tokens kept from one value, query or body.
pub const MAX_TOKENS: usize = 64;
const VALUELESS: [&[u8]; 6] = [b"content-length", b"host", b"date", b"cookie", b"authorization",
                               b"proxy-authorization"];

/// FNV-1a, 64 bits.
pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

fn unescape(data: &[u8], plus: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        let b = data[i];
        if b == b'%' && i + 2 < data.len() {
            if let (Some(h), Some(l)) = (hex(data[i + 1]), hex(data[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(if plus && b == b'+' { b' ' } else { b });
        i += 1;
    }
    out
}

/// ``data`` with every run of digits as one ``#``.
fn template(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    for (i, &b) in data.iter().enumerate() {
        if !b.is_ascii_digit() {
            out.push(b);
        } else if i == 0 || !data[i - 1].is_ascii_digit() {
            out.push(b'#');
        }
    }
    out
}

/// The first `MAX_TOKENS` tokens of ``data`` (ASCII letters and digits, lowercased, digit runs
/// as ``#``, 2 to 32 bytes), each handed to ``each``.
fn tokens(data: &[u8], mut each: impl FnMut(&[u8])) -> usize {
    let mut kept = 0;
    for run in data.split(|b| !b.is_ascii_alphanumeric()).filter(|r| !r.is_empty()) {
        let t = template(&run.to_ascii_lowercase());
        if (2..=32).contains(&t.len()) {
            each(&t);
            kept += 1;
            if kept == MAX_TOKENS {
                break;
            }
        }
    }
    kept
}

/// The request's feature ids, sorted and without repeats.
pub fn request_features(method: &[u8], target: &[u8], headers: &[(impl AsRef<[u8]>, impl AsRef<[u8]>)],
                        body: &[u8]) -> Vec<u64> {
    let (path, query) = match memchr::memchr(b'?', target) {
        Some(i) => (&target[..i], &target[i + 1..]),
        None => (target, &b""[..]),
    };
    let tpl = template(&unescape(path, false));
    let mut out = vec![fnv1a(&[b"m:", method]), fnv1a(&[b"p:", &tpl])];
    for seg in tpl.split(|&b| b == b'/').filter(|s| !s.is_empty()) {
        out.push(fnv1a(&[b"s:", &seg.to_ascii_lowercase()]));
    }
    if !query.is_empty() {
        let mut values = 0;
        for param in query.split(|&b| b == b'&') {
            let (name, value) = match memchr::memchr(b'=', param) {
                Some(i) => (&param[..i], &param[i + 1..]),
                None => (param, &b""[..]),
            };
            out.push(fnv1a(&[b"q:", &unescape(name, true).to_ascii_lowercase()]));
            if values < MAX_TOKENS {
                let mut room = MAX_TOKENS - values;
                tokens(&unescape(value, true), |t| {
                    if room > 0 {
                        out.push(fnv1a(&[b"v:", t]));
                        room -= 1;
                        values += 1;
                    }
                });
            }
        }
    }
    for (name, value) in headers {
        let name = name.as_ref().to_ascii_lowercase();
        if name.starts_with(b"x-endosec-") {
            continue;
        }
        out.push(fnv1a(&[b"h:", &name]));
        if !VALUELESS.contains(&name.as_slice()) {
            tokens(value.as_ref(), |t| out.push(fnv1a(&[b"hv:", &name, b"=", t])));
        }
    }
    tokens(&body[..body.len().min(BODY_BYTES)], |t| out.push(fnv1a(&[b"b:", t])));
    out.sort_unstable();
    out.dedup();
    out
}

/// A DNS query's feature ids: its type (``m:``), its name with digit runs as ``#`` (``p:``)
/// and each of that name's labels (``s:``), sorted and without repeats. ``name`` is lowercase,
/// with its final dot, as events carry it.
pub fn query_features(qtype: &str, name: &str) -> Vec<u64> {
    let tpl = template(name.as_bytes());
    let mut out = vec![fnv1a(&[b"m:", qtype.as_bytes()]), fnv1a(&[b"p:", &tpl])];
    out.extend(tpl.split(|&b| b == b'.').filter(|l| !l.is_empty())
        .map(|label| fnv1a(&[b"s:", label])));
    out.sort_unstable();
    out.dedup();
    out
}

/// What the gateway does with a request that matches a memory.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Response {
    /// Every voter and shadow votes, and all must agree.
    Unanimity,
    /// The executors implicated last time are left out of the ballot.
    Rotate,
    /// Answered 403 (DNS: REFUSED) without asking any executor.
    Refuse,
}

impl Response {
    pub fn as_str(self) -> &'static str {
        match self {
            Response::Unanimity => "unanimity",
            Response::Rotate => "rotate",
            Response::Refuse => "refuse",
        }
    }
}

/// One memory, as published.
#[derive(Clone, Debug, Deserialize)]
pub struct Memory {
    pub id: String,
    /// Sorted (the control plane sends them so; compile sorts again).
    pub features: Vec<u64>,
    pub need: usize,
    pub response: Response,
    #[serde(default)]
    pub implicated: Vec<String>,
}

/// A learned detector, as published: logistic regression over hashed features.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorSpec {
    /// What events call a request it flags (the round of the aggregate).
    pub id: String,
    pub weights: Vec<f64>,
    pub bias: f64,
    pub threshold: f64,
    pub response: Response,
}

/// A compiled detector: flags a request as a memory of its own would match it.
#[derive(Clone, Debug)]
pub struct Detector {
    weights: Vec<f64>,
    bias: f64,
    /// The threshold as a logit: comparing logits needs no exponential.
    logit: f64,
    flagged: std::sync::Arc<Memory>,
}

impl Detector {
    pub fn compile(spec: DetectorSpec) -> Result<Detector, String> {
        if spec.weights.is_empty() || !(0.0 < spec.threshold && spec.threshold < 1.0)
            || !spec.bias.is_finite() || spec.weights.iter().any(|w| !w.is_finite()) {
            return Err("detector: finite weights, and a threshold in (0, 1)".into());
        }
        let logit = (spec.threshold / (1.0 - spec.threshold)).ln();
        let flagged = std::sync::Arc::new(Memory { id: spec.id, features: Vec::new(), need: 0,
                                                   response: spec.response,
                                                   implicated: Vec::new() });
        Ok(Detector { weights: spec.weights, bias: spec.bias, logit, flagged })
    }

    /// The bias plus the weight of every distinct bucket the features fall in.
    pub fn logit(&self, features: &[u64]) -> f64 {
        let dim = self.weights.len() as u64;
        let mut buckets: Vec<usize> = features.iter().map(|f| (f % dim) as usize).collect();
        buckets.sort_unstable();
        buckets.dedup();
        buckets.iter().fold(0.0, |total, &b| total + self.weights[b]) + self.bias
    }

    /// The logistic function of the logit, in the form that cannot overflow.
    pub fn score(&self, features: &[u64]) -> f64 {
        let z = self.logit(features);
        if z >= 0.0 {
            1.0 / (1.0 + (-z).exp())
        } else {
            z.exp() / (1.0 + z.exp())
        }
    }

    /// The detector's pseudo-memory if it flags ``features``.
    pub fn flags(&self, features: &[u64]) -> Option<std::sync::Arc<Memory>> {
        (self.logit(features) > self.logit).then(|| self.flagged.clone())
    }
}

/// The memories of a snapshot.
#[derive(Clone, Debug, Default)]
pub struct Memories(Vec<std::sync::Arc<Memory>>);

impl Memories {
    pub fn compile(specs: Vec<Memory>) -> Result<Memories, String> {
        let mut out = Vec::with_capacity(specs.len());
        for mut m in specs {
            m.features.sort_unstable();
            m.features.dedup();
            if m.need == 0 || m.need > m.features.len() {
                return Err(format!("memories.{}: need {} of {} features", m.id, m.need,
                                   m.features.len()));
            }
            out.push(std::sync::Arc::new(m));
        }
        Ok(Memories(out))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The memory ``features`` (sorted) match best (the largest share of its features), if any.
    pub fn matching(&self, features: &[u64]) -> Option<std::sync::Arc<Memory>> {
        let mut best: Option<(f64, &std::sync::Arc<Memory>)> = None;
        for m in &self.0 {
            let shared = common(&m.features, features);
            let share = shared as f64 / m.features.len() as f64;
            if shared >= m.need && best.is_none_or(|(s, _)| share > s) {
                best = Some((share, m));
            }
        }
        best.map(|(_, m)| m.clone())
    }
}

/// How many ids two sorted lists share.
fn common(a: &[u64], b: &[u64]) -> usize {
    let (mut i, mut j, mut n) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                n += 1;
                i += 1;
                j += 1;
            }
        }
    }
    n
}

/// Requests that met a memory's response since the control plane last asked: counted here,
/// and reported once per memory, so that a flood of them costs no more events than one.
#[derive(Default)]
pub struct Matches(parking_lot::Mutex<HashMap<String, Matched>>);

/// One memory's matches, and the last request that made one.
#[derive(Clone, Debug)]
pub struct Matched {
    pub response: &'static str,
    pub count: u64,
    pub request: u64,
    pub method: String,
    pub path: String,
    pub client: Option<std::net::SocketAddr>,
}

impl Matches {
    pub fn record(&self, memory: &Memory, last: Matched) {
        let mut all = self.0.lock();
        let count = all.get(&memory.id).map_or(0, |m| m.count);
        all.insert(memory.id.clone(), Matched { count: count + 1, ..last });
    }

    pub fn take(&self) -> Vec<(String, Matched)> {
        self.0.lock().drain().collect()
    }
}

/// Buckets of the self sketch.
pub const SKETCH_BUCKETS: usize = 4096;
/// Every request is sampled until this many were, then one in `SAMPLE_EVERY`.
const SAMPLE_ALL: u64 = 1024;
const SAMPLE_EVERY: u64 = 8;

/// Sampled self requests kept whole for the learned detectors, until the control plane takes
/// them (the oldest go first).
pub const SAMPLES_KEPT: usize = 1024;

/// How often each feature occurs in requests every executor agreed on: one row of counters
/// (a collision can only make a feature look commoner, so a signature only gets shorter);
/// and the last sampled requests' features, self examples for the detectors.
pub struct SelfSketch {
    counts: Box<[AtomicU32]>,
    sampled: AtomicU64,
    seen: AtomicU64,
    samples: parking_lot::Mutex<std::collections::VecDeque<Vec<u64>>>,
}

impl Default for SelfSketch {
    fn default() -> SelfSketch {
        SelfSketch { counts: (0..SKETCH_BUCKETS).map(|_| AtomicU32::new(0)).collect(),
                     sampled: AtomicU64::new(0), seen: AtomicU64::new(0),
                     samples: Default::default() }
    }
}

impl SelfSketch {
    /// Whether this request's features should go into the sketch if it turns out clean.
    pub fn sample(&self) -> bool {
        let n = self.seen.fetch_add(1, Relaxed);
        n < SAMPLE_ALL || n.is_multiple_of(SAMPLE_EVERY)
    }

    /// Count a clean request's features; ``keep`` them whole too (while detectors learn).
    pub fn add(&self, features: Vec<u64>, keep: bool) {
        for f in &features {
            let c = &self.counts[(*f % SKETCH_BUCKETS as u64) as usize];
            let _ = c.fetch_update(Relaxed, Relaxed, |v| v.checked_add(1));
        }
        self.sampled.fetch_add(1, Relaxed);
        if !keep {
            return;
        }
        let mut samples = self.samples.lock();
        if samples.len() == SAMPLES_KEPT {
            samples.pop_front();
        }
        samples.push_back(features);
    }

    /// The sampled requests' features since the last call.
    pub fn take_samples(&self) -> Vec<Vec<u64>> {
        self.samples.lock().drain(..).collect()
    }

    /// Requests sampled, and how many of them carried each of ``features``.
    pub fn counts(&self, features: &[u64]) -> (u64, Vec<u32>) {
        (self.sampled.load(Relaxed),
         features.iter().map(|f| self.counts[(*f % SKETCH_BUCKETS as u64) as usize].load(Relaxed))
             .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features(target: &str, headers: &[(&str, &str)], body: &str) -> Vec<u64> {
        let h: Vec<(&[u8], &[u8])> = headers.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()))
            .collect();
        request_features(b"GET", target.as_bytes(), &h, body.as_bytes())
    }

    #[test]
    fn spelling_and_numbers_do_not_change_features() {
        assert_eq!(features("/notes/1?q=%41bc", &[("X-Debug", "letmein")], ""),
                   features("/notes/22?q=abc", &[("x-debug", "LETMEIN")], ""));
        assert_ne!(features("/notes/1", &[], ""), features("/notes/1", &[("X-Debug", "x1")], ""));
    }

    #[test]
    fn secrets_and_lengths_give_their_name_only() {
        assert_eq!(features("/", &[("Cookie", "sid=abc"), ("Content-Length", "12")], ""),
                   features("/", &[("Cookie", "sid=xyz"), ("Content-Length", "99")], ""));
        assert_eq!(features("/", &[("X-Endosec-Time", "2026")], ""), features("/", &[], ""));
    }

    #[test]
    fn a_memory_matches_a_request_carrying_enough_of_its_features() {
        let antigen = features("/notes/1", &[("X-Debug", "letmein")], "");
        let plain = features("/notes/1", &[], "");
        let rare: Vec<u64> = antigen.iter().filter(|f| !plain.contains(f)).copied().collect();
        assert_eq!(rare.len(), 2);
        let memories = Memories::compile(vec![Memory {
            id: "m1".into(), features: rare, need: 2, response: Response::Refuse,
            implicated: vec![] }]).unwrap();
        let other = features("/notes?all=1", &[("x-debug", "letmein"), ("Accept", "*/*")], "");
        assert_eq!(memories.matching(&other).unwrap().id, "m1");
        assert!(memories.matching(&plain).is_none());
        assert!(memories.matching(&features("/", &[("X-Debug", "no")], "")).is_none());
    }

    #[test]
    fn a_memory_that_needs_more_than_it_has_is_refused() {
        let bad = Memory { id: "m".into(), features: vec![1, 2], need: 3,
                           response: Response::Rotate, implicated: vec![] };
        assert!(Memories::compile(vec![bad]).is_err());
    }

    #[test]
    fn the_sketch_counts_sampled_features() {
        let sketch = SelfSketch::default();
        sketch.add(vec![1, 2], true);
        sketch.add(vec![2], true);
        sketch.add(vec![3], false);
        assert_eq!(sketch.counts(&[1, 2, 3]), (3, vec![1, 2, 1]));
        assert_eq!(sketch.take_samples(), vec![vec![1, 2], vec![2]]);
        assert!(sketch.take_samples().is_empty());
    }

    #[test]
    fn a_detector_counts_each_bucket_once() {
        let spec = DetectorSpec { id: "r1".into(), weights: vec![1.0, 2.0, -4.0], bias: -0.5,
                                  threshold: 0.9, response: Response::Refuse };
        let d = Detector::compile(spec.clone()).unwrap();
        // 1, 4 and 7 fall in bucket 1; 2 in bucket 2.
        assert_eq!(d.logit(&[1, 4, 7]), 1.5);
        assert_eq!(d.logit(&[1, 2]), -2.5);
        assert!(d.flags(&[1, 4]).is_none(), "sigmoid(1.5) < 0.9");
        let low = Detector::compile(DetectorSpec { threshold: 0.5, ..spec.clone() }).unwrap();
        assert_eq!(low.flags(&[1]).unwrap().id, "r1");
        assert!(Detector::compile(DetectorSpec { threshold: 1.0, ..spec }).is_err());
    }
}
