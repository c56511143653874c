//! The data plane's DNS boundary, for Python: the same query checks, reply outputs and client
//! encodings the listeners apply, so tests can hold them to their specification.

use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use endosec_dataplane::ballot::Output;
use endosec_dataplane::dns::{self, Settings, Spec};
use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

create_exception!(_native, DnsReplyError, PyValueError,
                  "An executor's message that is not a well-formed reply to the query it was sent.");

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<DnsSettings>()?;
    m.add_class::<DnsQuery>()?;
    m.add_class::<DnsRefusal>()?;
    m.add_class::<DnsReply>()?;
    m.add_class::<DnsOutput>()?;
    m.add("DnsReplyError", m.py().get_type::<DnsReplyError>())?;
    m.add_function(wrap_pyfunction!(dns_parse_query, m)?)?;
    m.add_function(wrap_pyfunction!(dns_parse_reply, m)?)?;
    m.add_function(wrap_pyfunction!(dns_encode_reply, m)?)?;
    m.add_function(wrap_pyfunction!(dns_servfail, m)?)?;
    Ok(())
}

/// The ``dns`` settings; ValueError naming the field if one is wrong.
#[pyclass(module = "endosec._native", frozen)]
pub struct DnsSettings {
    inner: Settings,
}

#[pymethods]
impl DnsSettings {
    #[new]
    #[pyo3(signature = (flags=None, ttl="compare", ttl_tolerance=0, additional="all",
                        udp_payload=1232, max_udp_inflight=1024, refuse_types=Vec::new()))]
    fn new(flags: Option<Vec<String>>, ttl: &str, ttl_tolerance: i64, additional: &str,
           udp_payload: u32, max_udp_inflight: usize, refuse_types: Vec<u16>)
           -> PyResult<DnsSettings> {
        let spec = Spec { flags: flags.unwrap_or_else(|| Spec::default().flags), ttl: ttl.into(),
                          ttl_tolerance, additional: additional.into(), udp_payload,
                          max_udp_inflight, refuse_types };
        Ok(DnsSettings { inner: Settings::compile(&spec).map_err(PyValueError::new_err)? })
    }

    /// The gateway's EDNS UDP payload size.
    #[getter]
    fn udp_payload(&self) -> u16 {
        self.inner.udp_payload
    }
}

/// An accepted client query.
#[pyclass(module = "endosec._native", frozen)]
pub struct DnsQuery {
    inner: dns::Query,
}

#[pymethods]
impl DnsQuery {
    #[getter]
    fn id(&self) -> u16 {
        self.inner.id
    }

    /// The name as the client spelled it, with its final dot.
    #[getter]
    fn qname(&self) -> String {
        let name = self.inner.qname();
        if name.is_root() { ".".into() } else { format!("{name}.") }
    }

    #[getter]
    fn qtype(&self) -> u16 {
        self.inner.qtype.to_int()
    }

    #[getter]
    fn edns(&self) -> bool {
        self.inner.edns
    }

    #[getter]
    fn payload(&self) -> u16 {
        self.inner.payload
    }

    #[getter]
    fn dnssec_ok(&self) -> bool {
        self.inner.dnssec_ok
    }

    /// The question type's name, as events carry it.
    #[getter]
    fn label(&self) -> String {
        self.inner.label()
    }

    /// The name in lower case, as events carry it.
    #[getter]
    fn key(&self) -> String {
        self.inner.key()
    }

    fn udp_limit(&self, settings: &DnsSettings) -> usize {
        self.inner.udp_limit(&settings.inner)
    }

    fn upstream_wire<'py>(&self, py: Python<'py>, settings: &DnsSettings) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.upstream_wire(&settings.inner))
    }
}

/// A client message that is not forwarded: its reason, rcode (None: dropped) and reply.
#[pyclass(module = "endosec._native", frozen)]
pub struct DnsRefusal {
    inner: dns::Refusal,
}

#[pymethods]
impl DnsRefusal {
    #[getter]
    fn reason(&self) -> &str {
        &self.inner.reason
    }

    #[getter]
    fn rcode(&self) -> Option<u16> {
        self.inner.rcode.map(|r| r.to_int())
    }

    /// How the refusal is counted: the rcode's name, or ``dropped``.
    #[getter]
    fn label(&self) -> String {
        self.inner.label()
    }

    /// The client's answer, or None when it gets none.
    fn reply<'py>(&self, py: Python<'py>, settings: &DnsSettings)
                  -> Option<Bound<'py, PyBytes>> {
        self.inner.reply(&settings.inner).map(|wire| PyBytes::new(py, &wire))
    }
}

/// An executor's reply, checked against its query.
#[pyclass(module = "endosec._native", frozen)]
pub struct DnsReply {
    inner: dns::Reply,
}

#[pymethods]
impl DnsReply {
    /// The arbiter's view of this reply from ``executor``.
    fn output(&self, executor: &str, settings: &DnsSettings) -> DnsOutput {
        DnsOutput { inner: Mutex::new(self.inner.output(Arc::from(executor), &settings.inner,
                                                        0.0)) }
    }
}

/// One output as the arbiter compares it (its canonical form is computed once, on first use:
/// hence the lock).
#[pyclass(module = "endosec._native", frozen)]
pub struct DnsOutput {
    inner: Mutex<Output>,
}

#[pymethods]
impl DnsOutput {
    #[getter]
    fn head<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.lock().head)
    }

    #[getter]
    fn raw<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.lock().raw)
    }

    /// The canonical form: the lines with their TTLs masked.
    #[getter]
    fn key<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.lock().canonical().key)
    }

    #[getter]
    fn digest<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.lock().digest())
    }

    fn agrees_with(&self, other: &DnsOutput) -> bool {
        if std::ptr::eq(self, other) {
            return self.inner.lock().error.is_none();
        }
        self.inner.lock().agrees_with(&other.inner.lock())
    }
}

/// Check one client message under ``settings``: a `DnsQuery` to forward, or a `DnsRefusal`.
#[pyfunction]
fn dns_parse_query(py: Python<'_>, wire: &[u8], settings: &DnsSettings) -> PyResult<Py<PyAny>> {
    Ok(match dns::parse_query(Bytes::copy_from_slice(wire), &settings.inner) {
        Ok(query) => Py::new(py, DnsQuery { inner: query })?.into_any(),
        Err(refusal) => Py::new(py, DnsRefusal { inner: refusal })?.into_any(),
    })
}

/// An executor's reply to ``query``; DnsReplyError if it is not one.
#[pyfunction]
fn dns_parse_reply(wire: &[u8], query: &DnsQuery) -> PyResult<DnsReply> {
    dns::parse_reply(Bytes::copy_from_slice(wire), &query.inner)
        .map(|inner| DnsReply { inner })
        .map_err(DnsReplyError::new_err)
}

/// The winning reply under the client's ID and question, at most ``max_size`` bytes.
#[pyfunction]
fn dns_encode_reply<'py>(py: Python<'py>, query: &DnsQuery, winner: &DnsReply,
                         settings: &DnsSettings, max_size: usize) -> Bound<'py, PyBytes> {
    PyBytes::new(py, &dns::encode_reply(&query.inner, &winner.inner, &settings.inner, max_size))
}

/// SERVFAIL for ``query``, naming ``reason`` in an Extended DNS Error when it uses EDNS.
#[pyfunction]
fn dns_servfail<'py>(py: Python<'py>, query: &DnsQuery, settings: &DnsSettings, reason: &str)
                     -> Bound<'py, PyBytes> {
    PyBytes::new(py, &dns::servfail(&query.inner, &settings.inner, reason))
}
