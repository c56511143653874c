//! The data plane's HTTP/1.1 reader and writers, for the Python control plane (the admin
//! listener, the red team, state transfer): one implementation of the input agent.
//!
//! Results come back as tagged tuples; `endosec.protocols.http` turns them into its frozen
//! messages and its exception tree, so no Python type is built on this side.

use bytes::Bytes;
use endosec_dataplane::http::{self, Limits, Next, Request, Response, Version};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let methods: Vec<&str> = http::KNOWN_METHODS.iter()
        .map(|m| std::str::from_utf8(m).expect("methods are ASCII")).collect();
    m.add("HTTP_METHODS", PyTuple::new(m.py(), methods)?)?;
    m.add_class::<RequestReader>()?;
    m.add_class::<ResponseReader>()?;
    m.add_function(wrap_pyfunction!(upstream_request_bytes, m)?)?;
    m.add_function(wrap_pyfunction!(encode_response, m)?)?;
    m.add_function(wrap_pyfunction!(error_response, m)?)?;
    Ok(())
}

type PyHeaders = Vec<(Vec<u8>, Vec<u8>)>;

fn limits(l: (usize, usize, usize, usize, usize)) -> Limits {
    Limits { max_header_bytes: l.0, max_headers: l.1, max_body_bytes: l.2, max_target_bytes: l.3,
             max_response_bytes: l.4 }
}

fn headers_in(headers: PyHeaders) -> http::Headers {
    headers.into_iter().map(|(n, v)| (Bytes::from(n), Bytes::from(v))).collect()
}

fn headers_out<'py>(py: Python<'py>, headers: &http::Headers) -> PyResult<Bound<'py, PyTuple>> {
    PyTuple::new(py, headers.iter().map(|(n, v)| (PyBytes::new(py, n), PyBytes::new(py, v))))
}

/// ``limits``: (max_header_bytes, max_headers, max_body_bytes, max_target_bytes,
/// max_response_bytes).
#[pyclass(module = "endosec._native")]
pub struct RequestReader {
    inner: http::RequestReader,
}

#[pymethods]
impl RequestReader {
    #[new]
    fn new(limits_: (usize, usize, usize, usize, usize)) -> RequestReader {
        RequestReader { inner: http::RequestReader::new(limits(limits_)) }
    }

    /// Bytes from the client; ``b""`` means it closed its side.
    fn receive_data(&mut self, data: &[u8]) {
        if data.is_empty() {
            self.inner.receive_eof();
        } else {
            self.inner.receive(data);
        }
    }

    /// ``("request", method, target, headers, body, keep_alive, version)``, ``("need-data",)``,
    /// ``("closed",)`` or ``("refused", status, reason)``.
    fn next_event<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let tuple = match self.inner.next_event() {
            Ok(Next::Request(r)) => {
                let version: &[u8] = match r.version { Version::Http10 => b"1.0",
                                                       Version::Http11 => b"1.1" };
                ("request", PyBytes::new(py, &r.method), PyBytes::new(py, &r.target),
                 headers_out(py, &r.headers)?, PyBytes::new(py, &r.body), r.keep_alive,
                 PyBytes::new(py, version)).into_pyobject(py)?.into_any()
            }
            Ok(Next::NeedData) => return PyTuple::new(py, ["need-data"]),
            Ok(Next::Closed) => return PyTuple::new(py, ["closed"]),
            Err(refusal) => ("refused", refusal.status, refusal.reason).into_pyobject(py)?
                .into_any(),
        };
        Ok(tuple.cast_into::<PyTuple>().expect("a tuple"))
    }

    #[getter]
    fn expects_continue(&self) -> bool {
        self.inner.expects_continue()
    }

    #[getter]
    fn buffered(&self) -> usize {
        self.inner.buffered()
    }
}

#[pyclass(module = "endosec._native")]
pub struct ResponseReader {
    inner: http::ResponseReader,
}

#[pymethods]
impl ResponseReader {
    #[new]
    fn new(limits_: (usize, usize, usize, usize, usize), request_method: &[u8])
           -> ResponseReader {
        ResponseReader { inner: http::ResponseReader::new(limits(limits_), request_method) }
    }

    /// Bytes from the executor; ``b""`` means it closed the connection.
    fn receive_data(&mut self, data: &[u8]) {
        if data.is_empty() {
            self.inner.receive_eof();
        } else {
            self.inner.receive(data);
        }
    }

    /// ``("response", status, reason, headers, body, keep_alive)``, ``("need-data",)`` or
    /// ``("failed", kind, reason)``.
    fn next_event<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let tuple = match self.inner.next_event() {
            Ok(Some(r)) => ("response", r.status, PyBytes::new(py, &r.reason),
                            headers_out(py, &r.headers)?, PyBytes::new(py, &r.body),
                            r.keep_alive).into_pyobject(py)?.into_any(),
            Ok(None) => return PyTuple::new(py, ["need-data"]),
            Err(e) => ("failed", e.kind.as_str(), e.reason).into_pyobject(py)?.into_any(),
        };
        Ok(tuple.cast_into::<PyTuple>().expect("a tuple"))
    }
}

/// The bytes every executor receives for this request (ValueError if a field cannot be
/// written out).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn upstream_request_bytes<'py>(py: Python<'py>, method: Vec<u8>, target: Vec<u8>,
                               headers: PyHeaders, body: Vec<u8>, keep_alive: bool, http11: bool,
                               host: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
    let request = Request { method: Bytes::from(method), target: Bytes::from(target),
                            headers: headers_in(headers), body: Bytes::from(body), keep_alive,
                            version: if http11 { Version::Http11 } else { Version::Http10 } };
    http::upstream_request_bytes(&request, host).map(|b| PyBytes::new(py, &b))
        .map_err(PyValueError::new_err)
}

/// The response as sent to the client (ValueError for an interim status or a bad field).
#[pyfunction]
#[pyo3(signature = (status, headers, body, keep_alive, head_only, extra_headers))]
fn encode_response<'py>(py: Python<'py>, status: u16, headers: PyHeaders, body: Vec<u8>,
                        keep_alive: bool, head_only: bool, extra_headers: PyHeaders)
                        -> PyResult<Bound<'py, PyBytes>> {
    let response = Response { status, reason: Bytes::new(), headers: headers_in(headers),
                              body: Bytes::from(body), keep_alive: true };
    http::encode_response(&response, keep_alive, head_only, &headers_in(extra_headers))
        .map(|b| PyBytes::new(py, &b)).map_err(PyValueError::new_err)
}

/// A JSON error answered by the gateway itself.
#[pyfunction]
fn error_response<'py>(py: Python<'py>, status: u16, payload: Vec<(String, String)>,
                       keep_alive: bool) -> PyResult<Bound<'py, PyBytes>> {
    if !(400..=599).contains(&status) {
        return Err(PyValueError::new_err(format!(
            "error status must be 4xx or 5xx, got {status}")));
    }
    let pairs: Vec<(&str, &str)> = payload.iter().map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    Ok(PyBytes::new(py, &http::error_response(status, &pairs, keep_alive)))
}
