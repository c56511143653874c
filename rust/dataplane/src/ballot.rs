//! The arbiter: outputs in, a verdict out as early as it is certain (mirrors
//! `endosec.core.arbiter`).

use std::sync::Arc;

use bytes::Bytes;

use crate::canon::{BodyRule, Canonical};
use crate::model::{ErrorKind, Outcome};

/// One executor's answer to one request.
#[derive(Debug)]
pub struct Output {
    pub executor: Arc<str>,
    pub head: Vec<u8>,
    pub raw: Bytes,
    pub rule: Arc<BodyRule>,
    pub error: Option<ErrorKind>,
    pub latency: f64,
}

impl Output {
    pub fn value(executor: Arc<str>, head: Vec<u8>, raw: Bytes, rule: Arc<BodyRule>,
                 latency: f64) -> Output {
        Output { executor, head, raw, rule, error: None, latency }
    }

    pub fn failure(executor: Arc<str>, error: ErrorKind, rule: Arc<BodyRule>,
                   latency: f64) -> Output {
        Output { executor, head: Vec::new(), raw: Bytes::new(), rule, error: Some(error),
                 latency }
    }

    pub fn canonical(&self) -> &Canonical {
        todo!()
    }

    /// BLAKE2b-256 of the head and canonical key (or of the error kind).
    pub fn digest(&self) -> [u8; 32] {
        todo!()
    }

    pub fn agrees_with(&self, _other: &Output) -> bool {
        todo!()
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
    pub fn from_config(_name: &str, _k: Option<u32>, _min_support: Option<u32>)
        -> Result<Strategy, String> {
        todo!()
    }
}

/// What the arbiter decided about one request.
#[derive(Clone, Debug)]
pub struct Verdict {
    pub outcome: Outcome,
    pub winner: Option<Arc<str>>,
    pub agreed: Vec<Arc<str>>,
    pub dissented: Vec<Arc<str>>,
    pub failed: Vec<Arc<str>>,
    pub reason: String,
}

/// One request's vote.
#[derive(Debug)]
pub struct Ballot {}

impl Ballot {
    /// ``weights`` are aligned with ``voters`` and count only for a weighted strategy.
    pub fn new(_strategy: Strategy, _voters: Vec<Arc<str>>, _weights: Option<&[f64]>)
        -> Result<Ballot, String> {
        todo!()
    }

    /// Record one output; the verdict the first time it is certain.
    pub fn add(&mut self, _output: Output) -> Result<Option<Verdict>, String> {
        todo!()
    }

    /// The final verdict; voters still pending count as failed. Idempotent.
    pub fn close(&mut self) -> Verdict {
        todo!()
    }

    /// The verdict `add` announced once it became certain (None until then).
    pub fn decided_verdict(&self) -> Option<Verdict> {
        todo!()
    }

    pub fn is_pending(&self, _name: &str) -> bool {
        todo!()
    }

    /// The output recorded for ``name``, if any.
    pub fn output(&self, _name: &str) -> Option<&Output> {
        todo!()
    }

    /// Every output recorded: value classes in order of appearance, then failures.
    pub fn outputs(&self) -> Vec<&Output> {
        todo!()
    }
}
