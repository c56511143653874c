//! Immune memory's native parts, for the differential tests against the Python reference.

use endosec_dataplane::immune::{self, Detector, DetectorSpec, Response};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(request_features, m)?)?;
    m.add_function(wrap_pyfunction!(query_features, m)?)?;
    m.add_function(wrap_pyfunction!(detector_score, m)?)?;
    Ok(())
}

/// A request's immune features, as the data plane computes them.
#[pyfunction]
fn request_features(method: &[u8], target: &[u8], headers: Vec<(Vec<u8>, Vec<u8>)>, body: &[u8])
                    -> Vec<u64> {
    immune::request_features(method, target, &headers, body)
}

/// A DNS query's immune features, as the data plane computes them.
#[pyfunction]
fn query_features(qtype: &str, name: &str) -> Vec<u64> {
    immune::query_features(qtype, name)
}

/// A learned detector's score of ``features``, as the data plane computes it.
#[pyfunction]
fn detector_score(weights: Vec<f64>, bias: f64, features: Vec<u64>) -> PyResult<f64> {
    let spec = DetectorSpec { id: String::new(), weights, bias, threshold: 0.5,
                              response: Response::Unanimity };
    Ok(Detector::compile(spec).map_err(PyValueError::new_err)?.score(&features))
}
