//! The access log: one JSON line per request (never a body), written off the request path.
//!
//! Requests hand a record to a bounded channel; one thread formats and writes them, flushing
//! when the channel runs dry. When the writer falls behind, records are dropped and counted
//! rather than slowing a request down.

use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One request as the log records it.
#[derive(Clone, Debug)]
pub struct Record {
    pub time: SystemTime,
    pub client: Option<SocketAddr>,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub bytes: usize,
    pub latency: Duration,
    /// The verdict's outcome, or ``refused`` when the input agent refused the request.
    pub outcome: &'static str,
}

impl Record {
    pub fn json(&self) -> String {
        let time = self.time.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
        serde_json::json!({
            "ts": (time * 1e6).round() / 1e6,
            "client": self.client.map(|c| c.to_string()),
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "bytes": self.bytes,
            "latency": (self.latency.as_secs_f64() * 1e6).round() / 1e6,
            "outcome": self.outcome,
        }).to_string()
    }
}

/// Where the log goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Stderr,
    File(String),
}

impl Target {
    pub fn parse(text: &str) -> Target {
        if text == "stderr" { Target::Stderr } else { Target::File(text.to_owned()) }
    }
}

/// A running access log.
#[derive(Debug)]
pub struct AccessLog {
    pub target: Target,
    tx: SyncSender<Record>,
    pub dropped: Arc<AtomicU64>,
}

const CAPACITY: usize = 65536;

impl AccessLog {
    /// Open ``target`` (appending) and start its writer thread.
    pub fn open(target: Target) -> Result<AccessLog, String> {
        let out: Box<dyn Write + Send> = match &target {
            Target::Stderr => Box::new(io::stderr()),
            Target::File(path) => Box::new(OpenOptions::new().create(true).append(true)
                .open(path).map_err(|e| format!("gateway.access_log: cannot open {path}: {e}"))?),
        };
        let (tx, rx) = sync_channel(CAPACITY);
        std::thread::Builder::new().name("endosec-access-log".into())
            .spawn(move || write_all(rx, BufWriter::new(out)))
            .map_err(|e| format!("gateway.access_log: {e}"))?;
        Ok(AccessLog { target, tx, dropped: Arc::new(AtomicU64::new(0)) })
    }

    pub fn log(&self, record: Record) {
        if let Err(TrySendError::Full(_)) = self.tx.try_send(record) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn write_all(rx: Receiver<Record>, mut out: BufWriter<Box<dyn Write + Send>>) {
    // Ends when every sender is gone (the log was replaced or the plane stopped).
    while let Ok(record) = rx.recv() {
        let _ = writeln!(out, "{}", record.json());
        while let Ok(more) = rx.try_recv() {
            let _ = writeln!(out, "{}", more.json());
        }
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_json_lines_in_a_file() {
        let dir = std::env::temp_dir().join(format!("endosec-access-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("access.log");
        let log = AccessLog::open(Target::File(path.to_string_lossy().into_owned())).unwrap();
        for status in [200u16, 502] {
            log.log(Record { time: SystemTime::now(), client: "127.0.0.1:5".parse().ok(),
                             method: "GET".into(), path: "/x\"y".into(), status, bytes: 12,
                             latency: Duration::from_micros(1500), outcome: "accepted" });
        }
        drop(log);
        for _ in 0..100 {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if text.lines().count() == 2 {
                let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap())
                    .unwrap();
                assert_eq!(first["path"], "/x\"y");
                assert_eq!(first["status"], 200);
                assert_eq!(first["client"], "127.0.0.1:5");
                assert_eq!(first["latency"], 0.0015);
                std::fs::remove_dir_all(&dir).unwrap();
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the log was not written");
    }
}
