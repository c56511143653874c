//! Canonicalisers: what may legitimately differ between heterogeneous executors' replies.
//!
//! Mirrors `endosec.core.canonicalise` (the Python reference): the same configuration, the
//! same validation messages, the same canonical keys and heads byte for byte, so an output's
//! digest here equals Python's `Output.digest`.
//!
//! * Exact bytes: the key is the body.
//! * JSON (`json`): parsed as Python parses it (orjson, or `json.loads` when a run of 19
//!   digits may be an integer beyond 64 bits), edited by pointer or glob path, lists sorted,
//!   encoded as ``orjson.dumps(v, option=OPT_SORT_KEYS)`` (or Python's `json.dumps` fallback
//!   for such integers); invalid documents get ``INVALID_PREFIX + raw``.
//! * Text (`text`): regex matches replaced by ``<masked>``.
//! * Headers (`headers`): the ``head`` is ``repr((status, canonical_headers))``.
//! * DNS (`dns`): lines ``SECTION owner ttl class type rdata`` compared with the TTL column
//!   masked, then TTLs within a tolerance (see [`crate::dns`]).
//!
//! Where this port cannot follow Python:
//!
//! * Mask patterns run on the `regex` crate, not `re`. Lookaround, backreferences, atomic
//!   groups, possessive quantifiers and some spellings of Python's own (``\Z``, ``{,n}``, a
//!   literal ``{``) are configuration errors here, and an error's detail (after ``masks[i]:
//!   invalid regular expression '...':``) is the crate's. Of what both accept, ``$`` matches
//!   only at the very end (not also before a final newline); ``\w``, ``\d``, ``\s``, ``\b`` and
//!   case folding use the crate's Unicode tables (``\w`` takes in marks, Python's takes in
//!   ``²``; ``\s`` leaves out U+001C..U+001F); and a pattern that prefers an empty match where
//!   Python refuses one (``a*?`` right after an empty match) searches on from the next
//!   character instead of trying its longer alternatives. Bytes that are not UTF-8 match as
//!   Python's lone surrogates do: ``.`` and negated classes only.
//! * Documents nested deeper than `value::MAX_DEPTH` (254, the deepest orjson encodes) are
//!   invalid; Python accepts them up to its recursion limit and encodes them with `json.dumps`.
//! * Under a tolerance, comparing an integer beyond float range with a float is "not
//!   equivalent"; Python raises OverflowError there.
//! * A configuration given as a `serde_json::Value` has its mappings in key order, so with
//!   several faults the one named may differ from Python's (which reads them in file order);
//!   [`RuleSet::compile_json`] keeps the file's order. Unicode tables (``repr`` escapes,
//!   ``str.isdigit`` statuses, whitespace, lower case) are Rust's and the crate's, not those
//!   of Python's Unicode version; statuses spelled with digits that are not decimal (``²``)
//!   are "not an HTTP status" rather than Python's ``int()`` error; a lone surrogate in an
//!   unknown field's name prints as U+FFFD.

mod config;
mod dns;
mod encode;
mod glob;
mod headers;
mod json;
mod num;
mod pyrepr;
mod text;
mod value;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};
use bytes::Bytes;

use self::dns::DnsRule;
use self::glob::Glob;
use self::headers::HeaderRule;
use self::json::JsonRule;
use self::text::TextRule;
use self::value::{parse, Dialect, Text, Value};

/// Key prefix for output a rule cannot parse; a valid JSON encoding never starts with NUL.
pub const INVALID_PREFIX: &[u8] = b"\x00invalid\x00";

/// What masked JSON values and masked text become.
pub const MASK_TOKEN: &str = "<masked>";

/// The comparable form of one output's body: equal keys mean agreement.
#[derive(Clone, Debug)]
pub struct Canonical {
    pub key: Vec<u8>,
    /// The edited document, kept only where a tolerance compares values.
    value: Option<Arc<Value>>,
    /// A DNS reply's TTLs, in the order of its lines.
    ttls: Vec<u32>,
}

impl Canonical {
    /// A canonical form that is just bytes (exact and text rules).
    pub fn bytes(key: Vec<u8>) -> Canonical {
        Canonical { key, value: None, ttls: Vec::new() }
    }
}

/// One compiled body rule (exact bytes, JSON, or text masks).
#[derive(Debug)]
pub struct BodyRule {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Exact,
    Json(JsonRule),
    Text(TextRule),
    Dns(DnsRule),
}

impl BodyRule {
    /// The rule for DNS replies: TTLs may differ by ``ttl_tolerance`` seconds; None: TTLs
    /// are not compared.
    pub fn dns(ttl_tolerance: Option<u32>) -> BodyRule {
        BodyRule { kind: Kind::Dns(DnsRule { tolerance: ttl_tolerance }) }
    }

    /// The canonical form of ``raw`` under this rule.
    pub fn canonicalise(&self, raw: &[u8]) -> Canonical {
        match &self.kind {
            Kind::Exact => Canonical::bytes(raw.to_vec()),
            Kind::Json(rule) => rule.canonicalise(raw),
            Kind::Text(rule) => Canonical::bytes(rule.canonicalise(raw)),
            Kind::Dns(rule) => rule.canonicalise(raw),
        }
    }

    /// ``raw`` spelled the one way JSON has here (keys sorted, no spaces), nothing edited out,
    /// where this is a JSON rule and ``raw`` parses; None otherwise. Every stack formats its
    /// JSON its own way, so a reply passed on as written would tell which one answered.
    pub fn reencode(&self, raw: &[u8]) -> Option<Vec<u8>> {
        match &self.kind {
            Kind::Json(rule) => rule.reencode(raw),
            Kind::Exact | Kind::Text(_) | Kind::Dns(_) => None,
        }
    }

    pub fn is_json(&self) -> bool {
        matches!(self.kind, Kind::Json(_))
    }

    /// Whether two canonical forms agree (equal keys, or within a tolerance).
    pub fn equivalent(&self, a: &Canonical, b: &Canonical) -> bool {
        match &self.kind {
            Kind::Json(rule) => rule.equivalent(a, b),
            Kind::Dns(rule) => rule.equivalent(a, b),
            Kind::Exact | Kind::Text(_) => a.key == b.key,
        }
    }
}

/// A body rule with the responses it applies to.
#[derive(Debug)]
struct BodyMatch {
    path: Glob,
    /// A prefix of the media type, stripped and lower-cased.
    content_type: Vec<u8>,
    /// The statuses it applies to; empty: any.
    statuses: Vec<u16>,
    rule: Arc<BodyRule>,
}

/// The compiled `canonicalise` configuration: header rule plus ordered body rules.
#[derive(Debug)]
pub struct RuleSet {
    headers: HeaderRule,
    bodies: Vec<BodyMatch>,
    default: Arc<BodyRule>,
}

impl Default for RuleSet {
    /// No rules: exact bytes and the default header rule.
    fn default() -> RuleSet {
        RuleSet { headers: HeaderRule::default(), bodies: Vec::new(),
                  default: Arc::new(BodyRule { kind: Kind::Exact }) }
    }
}

/// A configuration value as `json.loads` would have produced it.
fn from_serde(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => {
            let literal = n.to_string();
            parse(literal.as_bytes(), Dialect::Json, false)
                .unwrap_or_else(|_| Value::Float(n.as_f64().unwrap_or(f64::INFINITY)))
        }
        serde_json::Value::String(s) => Value::Str(Text::new(s)),
        serde_json::Value::Array(items) => Value::List(items.iter().map(from_serde).collect()),
        serde_json::Value::Object(m) => Value::Object(m.iter()
            .map(|(k, v)| (Text::new(k), from_serde(v))).collect()),
    }
}

impl RuleSet {
    /// Compile the ``canonicalise`` mapping; the error names the field as Python's does.
    pub fn compile(config: &serde_json::Value) -> Result<RuleSet, String> {
        config::compile(&from_serde(config))
    }

    /// Compile the ``canonicalise`` mapping from JSON text, reading mappings in file order.
    pub fn compile_json(config: &str) -> Result<RuleSet, String> {
        let value = parse(config.as_bytes(), Dialect::Json, false)
            .map_err(|_| "canonicalise: not valid JSON".to_string())?;
        config::compile(&value)
    }

    /// Status and canonical headers encoded as the ``head`` bytes of an output.
    pub fn canonical_head(&self, status: u16, headers: &[(Bytes, Bytes)]) -> Vec<u8> {
        self.headers.head(status, headers)
    }

    /// The rule for headers.
    pub fn headers(&self) -> &HeaderRule {
        &self.headers
    }

    /// The first body rule matching the request path, the response's Content-Type and its
    /// status (0 for an executor that gave no response: only rules without ``status``).
    pub fn body_rule(&self, path: &str, content_type: &[u8], status: u16) -> &Arc<BodyRule> {
        if self.bodies.is_empty() {
            return &self.default;
        }
        // Python reads the header as latin-1: ``partition(";")[0].strip().lower()``.
        let head = content_type.split(|&b| b == b';').next().unwrap_or_default();
        let space = |b: &u8| config::python_space(*b as u32);
        let start = head.iter().position(|b| !space(b)).unwrap_or(head.len());
        let end = head.iter().rposition(|b| !space(b)).map_or(start, |e| e + 1);
        let media = &head[start..end];
        self.bodies.iter()
            .find(|b| lowered_starts_with(media, &b.content_type)
                  && (b.statuses.is_empty() || b.statuses.contains(&status))
                  && b.path.matches(path.as_bytes()))
            .map_or(&self.default, |b| &b.rule)
    }
}

/// Whether latin-1 ``media``, lower-cased, starts with UTF-8 ``prefix`` (without allocating:
/// this runs for every reply).
fn lowered_starts_with(media: &[u8], prefix: &[u8]) -> bool {
    let mut rest = prefix;
    let mut buffer = [0; 4];
    for &b in media {
        if rest.is_empty() {
            return true;
        }
        for c in char::from(b).to_lowercase() {
            match rest.strip_prefix(c.encode_utf8(&mut buffer).as_bytes()) {
                Some(r) => rest = r,
                None => return false,
            }
        }
    }
    rest.is_empty()
}

/// BLAKE2b-256 of an output's head and canonical key: what the ledger records.
pub fn digest(head: &[u8], key: &[u8]) -> [u8; 32] {
    let mut h = Blake2b::<U32>::new();
    h.update(head);
    h.update(b"\x00");
    h.update(key);
    h.finalize().into()
}
