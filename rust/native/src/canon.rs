//! The canonicaliser's Python face: configuration checks for the control plane, and the
//! compiled rules themselves, so that Python can hold the port to its reference.

use bytes::Bytes;
use endosec_dataplane::canon::{self, BodyRule, RuleSet};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(compile_rules, m)?)?;
    m.add_class::<Rules>()
}

fn compile(config_json: &str) -> PyResult<RuleSet> {
    RuleSet::compile_json(config_json).map_err(PyValueError::new_err)
}

/// Check a ``canonicalise`` configuration (JSON); ValueError with Python's message if bad.
#[pyfunction]
fn compile_rules(config_json: &str) -> PyResult<()> {
    compile(config_json).map(drop)
}

/// Compiled rules.
#[pyclass(module = "endosec._native", frozen)]
pub struct Rules {
    rules: RuleSet,
}

fn to_headers(headers: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<(Bytes, Bytes)> {
    headers.into_iter().map(|(n, v)| (Bytes::from(n), Bytes::from(v))).collect()
}

impl Rules {
    fn rule(&self, path: &str, content_type: &[u8], status: u16) -> &BodyRule {
        self.rules.body_rule(path, content_type, status)
    }
}

#[pymethods]
impl Rules {
    #[new]
    fn new(config_json: &str) -> PyResult<Rules> {
        Ok(Rules { rules: compile(config_json)? })
    }

    /// ``repr((status, canonical_headers)).encode()``.
    fn head<'py>(&self, py: Python<'py>, status: u16, headers: Vec<(Vec<u8>, Vec<u8>)>)
                 -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.rules.canonical_head(status, &to_headers(headers)))
    }

    /// The canonical key of ``body`` under the rule for ``path``, ``content_type`` and
    /// ``status``.
    fn key<'py>(&self, py: Python<'py>, path: &str, content_type: &[u8], status: u16,
                body: &[u8]) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.rule(path, content_type, status).canonicalise(body).key)
    }

    /// Whether two bodies agree under the rule for ``path``, ``content_type`` and ``status``.
    fn equivalent(&self, path: &str, content_type: &[u8], status: u16, a: &[u8], b: &[u8])
                  -> bool {
        let rule = self.rule(path, content_type, status);
        a == b || rule.equivalent(&rule.canonicalise(a), &rule.canonicalise(b))
    }

    /// The output's digest: BLAKE2b-256 of the head, a NUL and the body's canonical key.
    fn digest<'py>(&self, py: Python<'py>, status: u16, headers: Vec<(Vec<u8>, Vec<u8>)>,
                   path: &str, body: &[u8]) -> Bound<'py, PyBytes> {
        let headers = to_headers(headers);
        let content_type = headers.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(b"content-type"))
            .map(|(_, v)| v.clone()).unwrap_or_default();
        let head = self.rules.canonical_head(status, &headers);
        let key = self.rule(path, &content_type, status).canonicalise(body).key;
        PyBytes::new(py, &canon::digest(&head, &key))
    }
}
