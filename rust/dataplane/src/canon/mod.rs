//! Canonicalisers: what may legitimately differ between heterogeneous executors' replies.
//!
//! Mirrors `endosec.core.canonicalise` (the Python reference): the same configuration, the
//! same validation messages, the same canonical keys byte for byte.

use std::sync::Arc;

use bytes::Bytes;

/// The comparable form of one output's body: equal keys mean agreement.
#[derive(Clone, Debug)]
pub struct Canonical {
    pub key: Vec<u8>,
}

/// One compiled body rule (exact bytes, JSON, or text masks).
#[derive(Debug)]
pub struct BodyRule {}

impl BodyRule {
    /// The canonical form of ``raw`` under this rule.
    pub fn canonicalise(&self, _raw: &[u8]) -> Canonical {
        todo!("canon: port JsonRule / TextRule / ExactBytes")
    }

    /// Whether two canonical forms agree (equal keys, or within a tolerance).
    pub fn equivalent(&self, _a: &Canonical, _b: &Canonical) -> bool {
        todo!()
    }
}

/// The compiled `canonicalise` configuration: header rule plus ordered body rules.
#[derive(Debug, Default)]
pub struct RuleSet {}

impl RuleSet {
    /// Compile the ``canonicalise`` mapping; the error names the field as Python's does.
    pub fn compile(_config: &serde_json::Value) -> Result<RuleSet, String> {
        todo!()
    }

    /// Status and canonical headers encoded as the ``head`` bytes of an output.
    pub fn canonical_head(&self, _status: u16, _headers: &[(Bytes, Bytes)]) -> Vec<u8> {
        todo!()
    }

    /// The first body rule matching the request path and the response's Content-Type.
    pub fn body_rule(&self, _path: &str, _content_type: &[u8]) -> &Arc<BodyRule> {
        todo!()
    }
}
