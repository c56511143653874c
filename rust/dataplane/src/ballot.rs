//! The arbiter: outputs in, a verdict out as early as it is certain (mirrors
//! `endosec.core.arbiter`, the reference: same quorum arithmetic, same reasons, same verdicts).
//!
//! Every strategy is an integer quorum ``need`` on a value class's support (head counts, or
//! trust weights in millionths so sums are exact whatever the arrival order). With ``s1`` the
//! best support, ``s2`` the second best and ``p`` the weight still pending, a class wins once
//! ``s1 >= need`` and ``s1 > s2 + p``; no class can win once ``s1 + p < need`` or
//! ``s1 + p <= s2``, which is no-quorum if some value was seen (else the pending voters decide
//! between no-quorum and all-failed), so an early verdict always equals the final one.
//! A discounted voter (strict voting: one flagged by behaviour) is heard but lends no support:
//! the quorum stays that of every voter, so its class must win without it.

use std::cell::OnceCell;
use std::sync::Arc;

use bytes::Bytes;

use crate::canon::{self, BodyRule, Canonical};
use crate::model::{ErrorKind, Outcome};

/// Weights are held as integers in millionths: exact sums, so arrival order never matters.
pub const WEIGHT_SCALE: u64 = 1_000_000;

/// One executor's answer to one request.
#[derive(Debug)]
pub struct Output {
    pub executor: Arc<str>,
    /// The eagerly canonicalised part (for HTTP: status and canonical headers).
    pub head: Vec<u8>,
    /// The bulk (for HTTP: the body), canonicalised only when raw bytes differ.
    pub raw: Bytes,
    pub rule: Arc<BodyRule>,
    pub error: Option<ErrorKind>,
    /// Seconds the executor had the request (see `upstream::Asked::service`).
    pub latency: f64,
    canonical: OnceCell<Canonical>,
}

impl Output {
    pub fn value(executor: Arc<str>, head: Vec<u8>, raw: Bytes, rule: Arc<BodyRule>,
                 latency: f64) -> Output {
        Output { executor, head, raw, rule, error: None, latency, canonical: OnceCell::new() }
    }

    pub fn failure(executor: Arc<str>, error: ErrorKind, rule: Arc<BodyRule>,
                   latency: f64) -> Output {
        Output { executor, head: Vec::new(), raw: Bytes::new(), rule, error: Some(error),
                 latency, canonical: OnceCell::new() }
    }

    /// The canonical form of ``raw``, computed on first use.
    pub fn canonical(&self) -> &Canonical {
        self.canonical.get_or_init(|| self.rule.canonicalise(&self.raw))
    }

    /// BLAKE2b-256 of the head and canonical key (or of the error kind): what the ledger keeps.
    pub fn digest(&self) -> [u8; 32] {
        match self.error {
            Some(kind) => {
                use blake2::Digest;
                let mut h = blake2::Blake2b::<blake2::digest::consts::U32>::new();
                h.update(b"error:");
                h.update(kind.as_str());
                h.finalize().into()
            }
            None => canon::digest(&self.head, &self.canonical().key),
        }
    }

    /// Whether two outputs carry the same value. Errors agree with nothing.
    pub fn agrees_with(&self, other: &Output) -> bool {
        if self.error.is_some() || other.error.is_some() || self.head != other.head {
            return false;
        }
        self.raw == other.raw || self.rule.equivalent(self.canonical(), other.canonical())
    }
}

/// How much support a value class needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    Majority,
    Threshold(u32),
    Plurality(u32),
    Unanimity,
    TrustWeighted,
}

impl Strategy {
    /// Build a strategy from its configured name; a parameter it does not take is an error.
    pub fn from_config(name: &str, k: Option<u32>, min_support: Option<u32>)
        -> Result<Strategy, String> {
        if k.is_some() && name != "threshold" {
            return Err(format!("k: only the threshold strategy takes k (strategy is '{name}')"));
        }
        if min_support.is_some() && name != "plurality" {
            return Err(format!("min_support: only the plurality strategy takes min_support \
                                (strategy is '{name}')"));
        }
        Ok(match name {
            "majority" => Strategy::Majority,
            "threshold" => match k {
                None => return Err("k: the threshold strategy needs k".into()),
                Some(0) => return Err("k: threshold needs an integer k >= 1, got 0".into()),
                Some(k) => Strategy::Threshold(k),
            },
            "plurality" => match min_support.unwrap_or(1) {
                0 => return Err("min_support: plurality needs an integer >= 1, got 0".into()),
                m => Strategy::Plurality(m),
            },
            "unanimity" => Strategy::Unanimity,
            "trust-weighted" => Strategy::TrustWeighted,
            _ => return Err(format!("strategy: unknown '{name}' (expected majority, threshold, \
                                     plurality, unanimity or trust-weighted)")),
        })
    }

    fn weighted(self) -> bool {
        self == Strategy::TrustWeighted
    }

    /// The least support that reaches the quorum, given the ballot's total weight.
    pub fn quorum(self, total: u64) -> u64 {
        match self {
            Strategy::Majority | Strategy::TrustWeighted => total / 2 + 1,
            Strategy::Threshold(k) => u64::from(k),
            Strategy::Plurality(m) => u64::from(m),
            Strategy::Unanimity => total,
        }
    }
}

/// How reasons name the strategy.
impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Strategy::Majority => f.write_str("majority"),
            Strategy::Threshold(k) => write!(f, "threshold k={k}"),
            Strategy::Plurality(m) => write!(f, "plurality min_support={m}"),
            Strategy::Unanimity => f.write_str("unanimity"),
            Strategy::TrustWeighted => f.write_str("trust-weighted majority"),
        }
    }
}

/// What the arbiter decided about one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub outcome: Outcome,
    /// The executor whose reply is served (the class member most others agree with to the byte).
    pub winner: Option<Arc<str>>,
    pub agreed: Vec<Arc<str>>,
    pub dissented: Vec<Arc<str>>,
    pub failed: Vec<Arc<str>>,
    pub reason: String,
}

/// Where a voter stands: not heard yet, in a value class, or failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Heard {
    Pending,
    Class(usize),
    Failed,
}

/// One request's vote. One owner adds outputs and closes it.
#[derive(Debug)]
pub struct Ballot {
    strategy: Strategy,
    voters: Vec<Arc<str>>,
    weight: Vec<u64>,
    heard: Vec<Heard>,
    unit: u64,
    total: u64,
    need: u64,
    pending_weight: u64,
    /// Value classes: member outputs in arrival order, the first compared against.
    classes: Vec<Vec<Output>>,
    support: Vec<u64>,
    failed: Vec<Output>,
    top: Option<usize>,
    s1: u64,
    s2: u64,
    /// Shared, not copied: the round hands each verdict on and keeps it for its report.
    decided: Option<Arc<Verdict>>,
    closed: Option<Arc<Verdict>>,
    discounted: Vec<Arc<str>>,
}

impl Ballot {
    /// ``weights`` are aligned with ``voters`` and count only for a weighted strategy.
    pub fn new(strategy: Strategy, voters: Vec<Arc<str>>, weights: Option<&[f64]>)
        -> Result<Ballot, String> {
        if voters.is_empty() {
            return Err("voters: a ballot needs at least one voter".into());
        }
        for (i, v) in voters.iter().enumerate() {
            if voters[..i].contains(v) {
                return Err("voters: a voter is listed twice".into());
            }
        }
        let (weight, unit) = match weights {
            Some(w) if strategy.weighted() => {
                if w.len() != voters.len() {
                    return Err(format!("weights: {} weights for {} voters", w.len(),
                                       voters.len()));
                }
                let fixed = voters.iter().zip(w).map(|(name, &w)| {
                    if !w.is_finite() || w < 0.0 {
                        return Err(format!("weights: weight for '{name}' must be a finite \
                                            number >= 0, got {w}"));
                    }
                    // Python's round(): half to even.
                    Ok((w * WEIGHT_SCALE as f64).round_ties_even() as u64)
                }).collect::<Result<Vec<u64>, String>>()?;
                (fixed, WEIGHT_SCALE)
            }
            _ => (vec![1; voters.len()], 1),
        };
        let total: u64 = weight.iter().sum();
        Ok(Ballot {
            need: strategy.quorum(total), strategy, heard: vec![Heard::Pending; voters.len()],
            voters, weight, unit, total, pending_weight: total, classes: Vec::new(),
            support: Vec::new(), failed: Vec::new(), top: None, s1: 0, s2: 0, decided: None,
            closed: None, discounted: Vec::new(),
        })
    }

    /// Hear ``names`` without counting their support (before any output is added); the
    /// quorum does not change. Names that do not vote here are ignored.
    pub fn discount(&mut self, names: &[Arc<str>]) {
        assert!(self.heard.iter().all(|h| *h == Heard::Pending), "discount before any output");
        for (i, v) in self.voters.iter().enumerate() {
            if names.contains(v) && !self.discounted.contains(v) {
                self.pending_weight -= self.weight[i];
                self.weight[i] = 0;
                self.discounted.push(v.clone());
            }
        }
    }

    /// Record one output; the verdict the first time it is certain.
    pub fn add(&mut self, output: Output) -> Result<Option<Arc<Verdict>>, String> {
        if self.closed.is_some() {
            return Err("ballot is closed".into());
        }
        let Some(i) = self.voters.iter().position(|v| *v == output.executor) else {
            return Err(format!("unknown executor '{}'", output.executor));
        };
        if self.heard[i] != Heard::Pending {
            return Err(format!("duplicate output from '{}'", output.executor));
        }
        let w = self.weight[i];
        self.pending_weight -= w;
        if output.error.is_some() {
            self.heard[i] = Heard::Failed;
            self.failed.push(output);
        } else {
            let class = self.classes.iter().position(|members| members[0].agrees_with(&output));
            let (c, s) = match class {
                Some(c) => {
                    self.classes[c].push(output);
                    self.support[c] += w;
                    (c, self.support[c])
                }
                None => {
                    self.classes.push(vec![output]);
                    self.support.push(w);
                    (self.classes.len() - 1, w)
                }
            };
            self.heard[i] = Heard::Class(c);
            if self.top == Some(c) {
                self.s1 = s;
            } else if s > self.s1 {
                self.s2 = self.s1;
                self.s1 = s;
                self.top = Some(c);
            } else if s > self.s2 {
                self.s2 = s;
            }
        }
        if self.decided.is_some() {
            return Ok(None);
        }
        let (s1, p, need) = (self.s1, self.pending_weight, self.need);
        if s1 >= need && s1 > self.s2 + p {
            self.decided = Some(Arc::new(self.verdict(Outcome::Accepted, false)));
        } else if s1 + p < need || s1 + p <= self.s2 {
            if !self.classes.is_empty() {
                self.decided = Some(Arc::new(self.verdict(Outcome::NoQuorum, false)));
            } else if p == 0 && self.heard.iter().all(|h| *h != Heard::Pending) {
                self.decided = Some(Arc::new(self.verdict(Outcome::AllFailed, false)));
            }
        }
        Ok(self.decided.clone())
    }

    /// The final verdict; voters still pending count as failed (timed out). Idempotent.
    pub fn close(&mut self) -> Arc<Verdict> {
        if self.closed.is_none() {
            let outcome = if self.classes.is_empty() {
                Outcome::AllFailed
            } else if self.s1 >= self.need && self.s1 > self.s2 {
                Outcome::Accepted
            } else {
                Outcome::NoQuorum
            };
            self.closed = Some(Arc::new(self.verdict(outcome, true)));
        }
        self.closed.clone().expect("just set")
    }

    /// The verdict `add` announced once it became certain (None until then).
    pub fn decided_verdict(&self) -> Option<Arc<Verdict>> {
        self.decided.clone()
    }

    pub fn is_pending(&self, name: &str) -> bool {
        self.voters.iter().position(|v| &**v == name)
            .is_some_and(|i| self.heard[i] == Heard::Pending)
    }

    /// The output recorded for ``name``, if any.
    pub fn output(&self, name: &str) -> Option<&Output> {
        self.classes.iter().flatten().chain(&self.failed).find(|o| &*o.executor == name)
    }

    /// Every output recorded: value classes in order of appearance, then failures.
    pub fn outputs(&self) -> Vec<&Output> {
        self.classes.iter().flatten().chain(&self.failed).collect()
    }

    fn verdict(&self, outcome: Outcome, last: bool) -> Verdict {
        let accepted = outcome == Outcome::Accepted;
        let top = if accepted { self.top } else { None };
        let (mut agreed, mut dissented, mut failed) = (Vec::new(), Vec::new(), Vec::new());
        for (v, heard) in self.voters.iter().zip(&self.heard) {
            match *heard {
                Heard::Pending if last => failed.push(v.clone()),
                Heard::Pending => {}
                Heard::Failed => failed.push(v.clone()),
                Heard::Class(c) if Some(c) == top => agreed.push(v.clone()),
                Heard::Class(_) if accepted => dissented.push(v.clone()),
                Heard::Class(_) => {}
            }
        }
        let winner = top.map(|c| representative(&self.classes[c]).executor.clone());
        let reason = self.reason(outcome, &dissented, &failed);
        Verdict { outcome, winner, agreed, dissented, failed, reason }
    }

    /// Written into one string: every decided ballot builds one, most of them clean.
    fn reason(&self, outcome: Outcome, dissented: &[Arc<str>], failed: &[Arc<str>]) -> String {
        use std::fmt::Write;
        let label = self.strategy;
        let mut text = String::with_capacity(96);
        // (Writing to a String cannot fail.)
        if outcome == Outcome::AllFailed {
            let n = self.voters.len();
            let _ = write!(text, "{label}: no value from any of {n} executors (");
            self.failures(&mut text, n);
            text.push(')');
            return text;
        }
        let _ = if outcome == Outcome::Accepted {
            write!(text, "{label}: accepted with support {} of {} (quorum {})",
                   self.amount(self.s1), self.amount(self.total), self.amount(self.need))
        } else {
            let classes = self.classes.len();
            let tie = if classes > 1 && self.s1 == self.s2 { " tied" } else { "" };
            write!(text, "{label}: no quorum; {classes} distinct value(s), best support \
                          {}{tie}, quorum {} of {}", self.amount(self.s1),
                   self.amount(self.need), self.amount(self.total))
        };
        if outcome == Outcome::Accepted && !dissented.is_empty() {
            text.push_str("; dissented: ");
            join(&mut text, dissented);
        }
        if !failed.is_empty() {
            text.push_str("; failed: ");
            join(&mut text, failed);
            text.push_str(" (");
            self.failures(&mut text, failed.len());
            text.push(')');
        }
        if !self.discounted.is_empty() {
            text.push_str("; discounted: ");
            join(&mut text, &self.discounted);
        }
        text
    }

    fn amount(&self, units: u64) -> Amount {
        Amount { units, unit: self.unit }
    }

    /// Failure kinds in order of first appearance, then voters never heard.
    fn failures(&self, text: &mut String, count: usize) {
        use std::fmt::Write;
        let mut kinds: Vec<(&str, usize)> = Vec::new();
        for o in &self.failed {
            let kind = o.error.map_or("none", ErrorKind::as_str);
            match kinds.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, n)) => *n += 1,
                None => kinds.push((kind, 1)),
            }
        }
        if count > self.failed.len() {
            kinds.push(("no answer", count - self.failed.len()));
        }
        for (i, (k, n)) in kinds.iter().enumerate() {
            let _ = write!(text, "{}{k}: {n}", if i == 0 { "" } else { ", " });
        }
    }
}

/// Support as reasons show it: a head count, or a weight to three decimals.
struct Amount {
    units: u64,
    unit: u64,
}

impl std::fmt::Display for Amount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.unit == 1 {
            write!(f, "{}", self.units)
        } else {
            write!(f, "{:.3}", self.units as f64 / self.unit as f64)
        }
    }
}

/// ``names`` joined by ", ", appended to ``text``.
fn join(text: &mut String, names: &[Arc<str>]) {
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            text.push_str(", ");
        }
        text.push_str(name);
    }
}

/// The class member whose exact bytes most members share (earliest on a tie), so an executor
/// that differs only in what canonicalisation forgives is not the one served.
fn representative(members: &[Output]) -> &Output {
    let mut best = &members[0];
    if members.len() < 3 {
        return best;
    }
    let mut best_count = 0;
    for m in members {
        let count = members.iter().filter(|o| o.raw == m.raw && o.head == m.head).count();
        if count > best_count {
            best = m;
            best_count = count;
            if count * 2 > members.len() {
                break;
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canon::RuleSet;

    fn exact() -> Arc<BodyRule> {
        RuleSet::default().body_rule("/", b"", 200).clone()
    }

    fn val(name: &str, body: &str) -> Output {
        Output::value(Arc::from(name), b"h".to_vec(), Bytes::from(body.to_owned()), exact(), 0.0)
    }

    fn err(name: &str, kind: ErrorKind) -> Output {
        Output::failure(Arc::from(name), kind, exact(), 0.0)
    }

    fn names(list: &[&str]) -> Vec<Arc<str>> {
        list.iter().map(|n| Arc::from(*n)).collect()
    }

    #[test]
    fn majority_answers_at_quorum_and_names_the_dissenter_at_close() {
        let mut b = Ballot::new(Strategy::Majority, names(&["a", "b", "c"]), None).unwrap();
        assert_eq!(b.add(val("a", "x")).unwrap(), None);
        let early = b.add(val("b", "x")).unwrap().expect("2 of 3 is certain");
        assert_eq!(early.outcome, Outcome::Accepted);
        assert_eq!(early.agreed, names(&["a", "b"]));
        assert!(early.failed.is_empty(), "c is still pending, not failed");
        assert_eq!(b.add(val("c", "y")).unwrap(), None, "announced once");
        let last = b.close();
        assert_eq!(last.dissented, names(&["c"]));
        assert_eq!(last.reason, "majority: accepted with support 2 of 3 (quorum 2); \
                                 dissented: c");
    }

    #[test]
    fn no_quorum_is_announced_as_soon_as_no_class_can_win() {
        let mut b = Ballot::new(Strategy::Majority, names(&["a", "b", "c"]), None).unwrap();
        b.add(val("a", "x")).unwrap();
        let v = b.add(val("b", "y")).unwrap();
        assert_eq!(v, None, "c could still side with either");
        let v = b.add(err("c", ErrorKind::Timeout)).unwrap().unwrap();
        assert_eq!(v.outcome, Outcome::NoQuorum);
        assert_eq!(v.winner, None);
        assert_eq!(v.reason, "majority: no quorum; 2 distinct value(s), best support 1 tied, \
                              quorum 2 of 3; failed: c (timeout: 1)");
    }

    #[test]
    fn a_discounted_voter_lends_no_support_and_the_quorum_stays() {
        let mut b = Ballot::new(Strategy::Majority, names(&["a", "b", "c"]), None).unwrap();
        b.discount(&names(&["c", "z"]));
        assert_eq!(b.add(val("c", "x")).unwrap(), None, "c's vote alone decides nothing");
        let v = b.add(val("a", "x")).unwrap();
        assert_eq!(v, None, "support 1 of quorum 2: b must agree");
        let v = b.add(val("b", "y")).unwrap().expect("no class can reach 2 now");
        assert_eq!(v.outcome, Outcome::NoQuorum);
        assert_eq!(v.reason, "majority: no quorum; 2 distinct value(s), best support 1 tied, \
                              quorum 2 of 3; discounted: c");
        let mut b = Ballot::new(Strategy::Majority, names(&["a", "b", "c"]), None).unwrap();
        b.discount(&names(&["c"]));
        b.add(val("a", "x")).unwrap();
        let v = b.add(val("b", "x")).unwrap().expect("a and b reach the quorum");
        assert_eq!((v.outcome, v.agreed.len()), (Outcome::Accepted, 2));
        b.add(val("c", "x")).unwrap();
        assert_eq!(b.close().agreed, names(&["a", "b", "c"]), "c is heard and agrees");
    }

    #[test]
    fn all_failed_waits_for_every_voter() {
        let mut b = Ballot::new(Strategy::Majority, names(&["a", "b"]), None).unwrap();
        assert_eq!(b.add(err("a", ErrorKind::Reset)).unwrap(), None);
        let v = b.add(err("b", ErrorKind::Reset)).unwrap().unwrap();
        assert_eq!(v.outcome, Outcome::AllFailed);
        assert_eq!(v.reason, "majority: no value from any of 2 executors (reset: 2)");
    }

    #[test]
    fn close_counts_silent_voters_as_failed() {
        let mut b = Ballot::new(Strategy::Majority, names(&["a", "b", "c", "d", "e"]), None)
            .unwrap();
        for n in ["a", "b", "c"] {
            b.add(val(n, "x")).unwrap();
        }
        let v = b.close();
        assert_eq!(v.failed, names(&["d", "e"]));
        assert!(v.reason.ends_with("failed: d, e (no answer: 2)"), "{}", v.reason);
        assert_eq!(b.close(), v);
        assert!(b.add(val("d", "x")).unwrap_err().contains("closed"));
    }

    #[test]
    fn trust_weights_outweigh_heads_and_reasons_show_them() {
        let mut b = Ballot::new(Strategy::TrustWeighted, names(&["a", "b", "c"]),
                                Some(&[0.9, 0.05, 0.05])).unwrap();
        let early = b.add(val("a", "x")).unwrap().unwrap();
        assert_eq!(early.outcome, Outcome::Accepted);
        b.add(val("b", "y")).unwrap();
        b.add(val("c", "y")).unwrap();
        let v = b.close();
        assert_eq!((&v.agreed, &v.dissented), (&names(&["a"]), &names(&["b", "c"])));
        assert!(v.reason.contains("0.900 of 1.000"), "{}", v.reason);
        assert!(Ballot::new(Strategy::TrustWeighted, names(&["a"]), Some(&[f64::NAN]))
            .unwrap_err().contains("weight for 'a'"));
    }

    #[test]
    fn unknown_duplicate_and_repeated_voters_are_errors() {
        assert!(Ballot::new(Strategy::Majority, vec![], None).is_err());
        assert!(Ballot::new(Strategy::Majority, names(&["a", "a"]), None).is_err());
        let mut b = Ballot::new(Strategy::Majority, names(&["a", "b"]), None).unwrap();
        assert_eq!(b.add(val("z", "x")).unwrap_err(), "unknown executor 'z'");
        b.add(val("a", "x")).unwrap();
        assert_eq!(b.add(val("a", "x")).unwrap_err(), "duplicate output from 'a'");
    }

    #[test]
    fn the_served_member_is_the_one_most_share_to_the_byte() {
        // Canonically equal under a JSON rule, byte-equal for b and c only.
        let rules = RuleSet::compile(&serde_json::json!({"bodies": [{"json": {}}]})).unwrap();
        let rule = rules.body_rule("/", b"application/json", 200).clone();
        let out = |n: &str, body: &str| Output::value(Arc::from(n), vec![], Bytes::from(
            body.to_owned()), rule.clone(), 0.0);
        let mut b = Ballot::new(Strategy::Majority, names(&["a", "b", "c"]), None).unwrap();
        b.add(out("a", r#"{"v": 1}"#)).unwrap();
        b.add(out("b", r#"{"v":1}"#)).unwrap();
        b.add(out("c", r#"{"v":1}"#)).unwrap();
        assert_eq!(b.close().winner.as_deref(), Some("b"));
    }

    #[test]
    fn reasons_name_each_strategy_as_the_python_arbiter_does() {
        let named = [(Strategy::Majority, "majority"), (Strategy::Threshold(2), "threshold k=2"),
                     (Strategy::Plurality(1), "plurality min_support=1"),
                     (Strategy::Unanimity, "unanimity"),
                     (Strategy::TrustWeighted, "trust-weighted majority")];
        for (strategy, label) in named {
            let mut b = Ballot::new(strategy, names(&["a", "b"]), None).unwrap();
            b.add(val("a", "x")).unwrap();
            b.add(val("b", "x")).unwrap();
            let reason = b.close().reason.clone();
            assert!(reason.starts_with(&format!("{label}: accepted with support 2 of 2")),
                    "{reason}");
        }
    }

    #[test]
    fn strategies_from_config_check_their_parameters() {
        assert_eq!(Strategy::from_config("threshold", Some(2), None), Ok(Strategy::Threshold(2)));
        assert_eq!(Strategy::from_config("plurality", None, None), Ok(Strategy::Plurality(1)));
        assert!(Strategy::from_config("majority", Some(2), None).unwrap_err().starts_with("k:"));
        assert!(Strategy::from_config("threshold", None, None).is_err());
        assert!(Strategy::from_config("nope", None, None).unwrap_err().starts_with("strategy:"));
    }

    #[test]
    fn errors_never_agree_and_digests_name_the_error() {
        let a = err("a", ErrorKind::Timeout);
        assert!(!a.agrees_with(&err("b", ErrorKind::Timeout)));
        assert_ne!(a.digest(), err("b", ErrorKind::Reset).digest());
        assert_eq!(val("a", "x").digest(), val("b", "x").digest());
        assert_ne!(val("a", "x").digest(), val("b", "y").digest());
    }
}
