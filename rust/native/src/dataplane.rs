//! `DataPlane`: the running data plane, as the Python control plane drives it.
//!
//! Every call is short and never waits on a request; the runtime's threads never take the GIL.
//! Blocking calls (stopping, dropping the runtime) release the GIL while they wait.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use endosec_dataplane::events::{Event, VerdictEvent};
use endosec_dataplane::journal::Sync;
use endosec_dataplane::listener::Tls;
use endosec_dataplane::plane::Plane;
use endosec_dataplane::stats::HistogramView;
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("LAG_BIN_US", endosec_dataplane::stats::LAG_BIN_US)?;
    m.add("LAG_SIDE", endosec_dataplane::stats::LAG_SIDE)?;
    m.add_class::<DataPlane>()
}

#[pyclass(module = "endosec._native", frozen)]
pub struct DataPlane {
    plane: parking_lot::Mutex<Option<Arc<Plane>>>,
}

impl DataPlane {
    fn plane(&self) -> PyResult<Arc<Plane>> {
        self.plane.lock().clone()
            .ok_or_else(|| PyRuntimeError::new_err("the data plane is closed"))
    }
}

#[pymethods]
impl DataPlane {
    /// ``wake_fd`` is the write end of a pipe the caller watches; it is duplicated here.
    #[new]
    #[pyo3(signature = (threads, event_capacity, wake_fd))]
    fn new(threads: usize, event_capacity: usize, wake_fd: i32) -> PyResult<DataPlane> {
        // SAFETY: dup returns a new descriptor that nothing else owns.
        let dup = unsafe { libc::dup(wake_fd) };
        if dup < 0 {
            return Err(PyOSError::new_err(format!("wake_fd: {}", std::io::Error::last_os_error())));
        }
        // SAFETY: `dup` is a valid descriptor owned by nobody else.
        let wake = unsafe { OwnedFd::from_raw_fd(dup) };
        let plane = Plane::new(threads, event_capacity, Some(wake)).map_err(PyRuntimeError::new_err)?;
        Ok(DataPlane { plane: parking_lot::Mutex::new(Some(Arc::new(plane))) })
    }

    /// Swap in a snapshot (JSON); returns its generation. A bad one is refused, the old kept.
    fn publish(&self, snapshot: &str) -> PyResult<u64> {
        self.plane()?.publish(snapshot).map_err(PyValueError::new_err)
    }

    /// Serve HTTP on ``host:port`` (TLS with ``cert`` and ``key``); the bound address.
    #[pyo3(signature = (host, port, cert=None, key=None))]
    fn listen_http(&self, host: &str, port: u16, cert: Option<PathBuf>, key: Option<PathBuf>)
                   -> PyResult<(String, u16)> {
        let ip: IpAddr = host.parse()
            .map_err(|_| PyValueError::new_err(format!("listen: {host:?} is not an IP address")))?;
        let tls = match (cert, key) {
            (Some(c), Some(k)) => Some(Tls::load(&c, &k).map_err(PyValueError::new_err)?),
            (None, None) => None,
            _ => return Err(PyValueError::new_err("tls: needs both cert and key")),
        };
        let bound = self.plane()?.listen_http(SocketAddr::new(ip, port), tls)
            .map_err(PyOSError::new_err)?;
        Ok((bound.ip().to_string(), bound.port()))
    }

    /// Serve DNS over UDP and TCP on ``host:port`` (port 0: one port free for both); the
    /// bound address.
    fn listen_dns(&self, host: &str, port: u16) -> PyResult<(String, u16)> {
        let ip: IpAddr = host.parse()
            .map_err(|_| PyValueError::new_err(format!("listen: {host:?} is not an IP address")))?;
        let bound = self.plane()?.listen_dns(SocketAddr::new(ip, port))
            .map_err(PyOSError::new_err)?;
        Ok((bound.ip().to_string(), bound.port()))
    }

    /// Bring ``name`` level with the journal; a ``catch-up`` event with ``ticket`` follows.
    fn catch_up(&self, name: &str, ticket: u64) -> PyResult<()> {
        self.plane()?.catch_up(name, ticket);
        Ok(())
    }

    /// Up to ``max`` queued events, as dicts.
    fn drain<'py>(&self, py: Python<'py>, max: usize) -> PyResult<Bound<'py, PyList>> {
        let events = self.plane()?.drain(max);
        let out = PyList::empty(py);
        for event in events {
            out.append(event_dict(py, event)?)?;
        }
        Ok(out)
    }

    /// Requests sampled into the self sketch, and how many of them carried each feature.
    fn self_counts(&self, features: Vec<u64>) -> PyResult<(u64, Vec<u32>)> {
        Ok(self.plane()?.shared().sketch.counts(&features))
    }

    /// Requests that met each immune memory's response since the last call.
    fn take_matches<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        self.plane()?.shared().matches.take().into_iter().map(|(memory, m)| {
            let d = PyDict::new(py);
            d.set_item("memory", memory)?;
            d.set_item("response", m.response)?;
            d.set_item("count", m.count)?;
            d.set_item("request", format!("{:016x}", m.request))?;
            d.set_item("method", m.method)?;
            d.set_item("path", m.path)?;
            d.set_item("client", m.client.map(|c| c.to_string()))?;
            Ok(d)
        }).collect()
    }

    /// The features of self requests sampled since the last call.
    fn take_self_samples(&self) -> PyResult<Vec<Vec<u64>>> {
        Ok(self.plane()?.shared().sketch.take_samples())
    }

    /// Clean agreements per executor since the last call.
    fn take_agreements<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (name, stats) in self.plane()?.executor_stats() {
            let n = stats.take_agreements();
            if n > 0 {
                d.set_item(&*name, n)?;
            }
        }
        Ok(d)
    }

    /// Per executor and route, its lags behind the fastest of its peers in unanimous rounds
    /// since the last call, as counts per bin (see ``LAG_BIN_US``); executors and routes with
    /// none are left out.
    fn take_lags<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (name, stats) in self.plane()?.executor_stats() {
            let routes = stats.lags.take();
            if !routes.is_empty() {
                let r = PyDict::new(py);
                for (route, counts) in routes {
                    r.set_item(route, counts)?;
                }
                d.set_item(&*name, r)?;
            }
        }
        Ok(d)
    }

    /// Error answers per client address since the last call (clients beyond the data plane's
    /// bound together under ``"*"``).
    fn take_client_errors<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        let (counts, others) = self.plane()?.shared().stats.client_errors.take();
        for (ip, n) in counts {
            d.set_item(ip.to_string(), n)?;
        }
        if others > 0 {
            d.set_item("*", others)?;
        }
        Ok(d)
    }

    /// Every counter and histogram, for the metrics endpoint.
    fn metrics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let plane = self.plane()?;
        let stats = &plane.shared().stats;
        let d = PyDict::new(py);
        let outcomes = PyDict::new(py);
        for (o, n) in stats.outcomes() {
            outcomes.set_item(o.as_str(), n)?;
        }
        d.set_item("outcomes", outcomes)?;
        let rejected = PyDict::new(py);
        for (label, n) in stats.rejections() {
            rejected.set_item(label, n)?;
        }
        d.set_item("rejected", rejected)?;
        d.set_item("latency", histogram(py, &stats.latency.view())?)?;
        d.set_item("arbiter", histogram(py, &stats.arbiter.view())?)?;
        d.set_item("replay", histogram(py, &stats.replay.view())?)?;
        d.set_item("events_dropped", stats.events_dropped.load(std::sync::atomic::Ordering::Relaxed))?;
        d.set_item("connections", stats.connections.load(std::sync::atomic::Ordering::Relaxed))?;
        let executors = PyDict::new(py);
        for (name, s) in plane.executor_stats() {
            let e = PyDict::new(py);
            e.set_item("latency", histogram(py, &s.latency.view())?)?;
            e.set_item("replays", s.replays.load(std::sync::atomic::Ordering::Relaxed))?;
            executors.set_item(&*name, e)?;
        }
        d.set_item("executors", executors)?;
        Ok(d)
    }

    /// The last verdicts, oldest first.
    fn recent<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        for r in self.plane()?.recent() {
            let d = PyDict::new(py);
            d.set_item("method", r.method)?;
            d.set_item("path", r.path)?;
            d.set_item("outcome", r.outcome.as_str())?;
            d.set_item("agreed", names(&r.agreed))?;
            d.set_item("dissented", names(&r.dissented))?;
            d.set_item("failed", names(&r.failed))?;
            out.append(d)?;
        }
        Ok(out)
    }

    /// ``(head, entries in memory, oldest seq kept, writes in doubt)`` of the write journal.
    fn journal(&self) -> PyResult<(u64, usize, u64, Vec<u64>)> {
        Ok(self.plane()?.journal())
    }

    /// Keep the journal in ``directory``, recovering what is there; ``sync_interval`` None
    /// syncs before forwarding (group commit), else syncs at that interval. Returns what was
    /// recovered: ``entries``, ``head``, ``cut_bytes`` (a torn tail cut off).
    #[pyo3(signature = (directory, sync_interval, segment_bytes))]
    fn open_journal<'py>(&self, py: Python<'py>, directory: PathBuf, sync_interval: Option<f64>,
                         segment_bytes: u64) -> PyResult<Bound<'py, PyDict>> {
        let sync = match sync_interval {
            None => Sync::Always,
            Some(s) => Sync::Interval(Duration::try_from_secs_f64(s).map_err(|_| {
                PyValueError::new_err("journal.sync_interval: expected seconds > 0")
            })?),
        };
        let plane = self.plane()?;
        let recovery = py.detach(|| plane.open_journal(&directory, sync, segment_bytes))
            .map_err(PyOSError::new_err)?;
        let d = PyDict::new(py);
        d.set_item("entries", recovery.entries)?;
        d.set_item("head", recovery.head)?;
        d.set_item("cut_bytes", recovery.cut_bytes)?;
        Ok(d)
    }

    /// Hold writes back (at most ``hold`` seconds) for a checkpoint; a ``paused`` event with
    /// ``ticket`` and the last forwarded ``seq`` follows.
    fn pause_writes(&self, ticket: u64, hold: f64) -> PyResult<()> {
        let hold = Duration::try_from_secs_f64(hold)
            .map_err(|_| PyValueError::new_err("hold: expected seconds >= 0"))?;
        self.plane()?.pause_writes(ticket, hold);
        Ok(())
    }

    fn resume_writes(&self) -> PyResult<()> {
        self.plane()?.resume_writes();
        Ok(())
    }

    /// ``name`` was restored from a checkpoint taken at ``seq``.
    fn restored(&self, name: &str, seq: u64) -> PyResult<()> {
        self.plane()?.restored(name, seq).map_err(PyValueError::new_err)
    }

    /// Forget the journal before ``seq``.
    fn truncate_journal(&self, seq: u64) -> PyResult<()> {
        self.plane()?.truncate_journal(seq);
        Ok(())
    }

    /// Each executor's journal position.
    fn synced<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (name, seq) in self.plane()?.executors() {
            d.set_item(&*name, seq)?;
        }
        Ok(d)
    }

    /// Stop accepting; wait up to ``timeout`` seconds for requests in flight. True if drained.
    fn stop(&self, py: Python<'_>, timeout: f64) -> PyResult<bool> {
        let plane = self.plane()?;
        let timeout = Duration::try_from_secs_f64(timeout)
            .map_err(|_| PyValueError::new_err("timeout: expected seconds >= 0"))?;
        Ok(py.detach(|| plane.stop(timeout)))
    }

    /// Shut the runtime down (idempotent); the GIL is released meanwhile.
    fn close(&self, py: Python<'_>) {
        let plane = self.plane.lock().take();
        py.detach(move || drop(plane));
    }
}

fn names(list: &[Arc<str>]) -> Vec<String> {
    list.iter().map(|n| n.to_string()).collect()
}

fn histogram<'py>(py: Python<'py>, h: &HistogramView) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    let mut buckets: Vec<(f64, u64)> = h.bounds.iter().copied().zip(h.cumulative.iter().copied())
        .collect();
    buckets.push((f64::INFINITY, h.count));
    d.set_item("buckets", buckets)?;
    d.set_item("count", h.count)?;
    d.set_item("sum", h.sum)?;
    Ok(d)
}

fn event_dict(py: Python<'_>, event: Event) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    match event {
        Event::Verdict(v) => verdict_dict(&d, *v)?,
        Event::Paused { ticket, seq } => {
            d.set_item("kind", "paused")?;
            d.set_item("ticket", ticket)?;
            d.set_item("seq", seq)?;
        }
        Event::InDoubt { seq, request, method, path, status, reason } => {
            d.set_item("kind", "in-doubt")?;
            d.set_item("seq", seq)?;
            d.set_item("request", format!("{request:016x}"))?;
            d.set_item("method", method)?;
            d.set_item("path", path)?;
            d.set_item("status", status)?;
            d.set_item("reason", reason)?;
        }
        Event::CatchUp(c) => {
            d.set_item("kind", "catch-up")?;
            d.set_item("ticket", c.ticket)?;
            d.set_item("executor", &*c.executor)?;
            d.set_item("seconds", c.seconds)?;
            match c.result {
                Ok(n) => {
                    d.set_item("ok", true)?;
                    d.set_item("replayed", n)?;
                    d.set_item("detail", "")?;
                }
                Err(why) => {
                    d.set_item("ok", false)?;
                    d.set_item("replayed", 0)?;
                    d.set_item("detail", why)?;
                }
            }
        }
    }
    Ok(d)
}

fn verdict_dict(d: &Bound<'_, PyDict>, v: VerdictEvent) -> PyResult<()> {
    let py = d.py();
    d.set_item("kind", "verdict")?;
    d.set_item("method", v.method)?;
    d.set_item("path", v.path)?;
    d.set_item("client", v.client.map(|c| c.to_string()))?;
    d.set_item("request", format!("{:016x}", v.request))?;
    d.set_item("outcome", v.outcome.as_str())?;
    d.set_item("agreed", names(&v.agreed))?;
    d.set_item("dissented", names(&v.dissented))?;
    d.set_item("failed", names(&v.failed))?;
    d.set_item("reason", v.reason)?;
    d.set_item("refused", v.refused)?;
    d.set_item("features", v.features)?;
    d.set_item("memory", v.memory)?;
    let digests = PyDict::new(py);
    for (name, hex) in v.digests {
        digests.set_item(&*name, hex)?;
    }
    d.set_item("digests", digests)?;
    let errors = PyDict::new(py);
    for (name, detail) in v.errors {
        errors.set_item(&*name, detail)?;
    }
    d.set_item("errors", errors)?;
    let shadows = PyDict::new(py);
    for (name, agreed) in v.shadows {
        shadows.set_item(&*name, agreed)?;
    }
    d.set_item("shadows", shadows)?;
    let evidence = PyDict::new(py);
    for (name, e) in v.evidence {
        let item = PyDict::new(py);
        item.set_item("status", e.status)?;
        let headers: Vec<(String, String)> = e.headers.iter()
            .map(|(n, v)| (latin1(n), latin1(v))).collect();
        item.set_item("headers", headers)?;
        item.set_item("body", e.body.as_ref().map(|b| PyBytes::new(py, b)))?;
        evidence.set_item(&*name, item)?;
    }
    d.set_item("evidence", evidence)?;
    Ok(())
}

/// Header bytes as Python's ``bytes.decode("latin-1")`` gives them: every byte kept.
fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}
