//! Group commit: one thread writes what requests appended and syncs it, many writes per sync.
//!
//! Appends only copy their encoded record into a buffer; the thread takes the whole buffer,
//! writes it to the current segment, syncs it (under `Sync::Always`) and publishes the newest
//! seq that is durable. Writes admitted while a sync is running go out together in the next
//! one, so the disk's latency is paid once per group, not once per write. Under
//! `Sync::Interval` a write counts as durable once written to the operating system, and the
//! thread syncs at the given interval: a machine crash (not a gateway crash) may lose that
//! interval.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use tokio::sync::watch;

use super::segment::{self, Record, Segment};
use super::Entry;

/// When appended writes reach the disk.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sync {
    /// Synced before the write is forwarded (group commit).
    Always,
    /// Written before the write is forwarded, synced at this interval.
    Interval(Duration),
}

struct Pending {
    buf: Vec<u8>,
    /// The newest write seq in ``buf`` (or before it).
    seq: u64,
    /// The first write seq in ``buf``, when it holds one: a new segment starts there.
    first: Option<u64>,
    truncate: Option<u64>,
    closing: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
    segments: Mutex<Vec<Segment>>,
    durable: watch::Sender<u64>,
}

pub struct Committer {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Committer {
    pub fn start(dir: &Path, segments: Vec<Segment>, head: u64, sync: Sync, segment_bytes: u64)
                 -> Result<Committer, String> {
        let (durable, _) = watch::channel(head);
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending { buf: Vec::new(), seq: head, first: None,
                                          truncate: None, closing: false }),
            wake: Condvar::new(), segments: Mutex::new(segments), durable,
        });
        let writer = Writer::open(dir, shared.clone(), sync, segment_bytes.max(1))?;
        let thread = std::thread::Builder::new().name("endosec-journal".into())
            .spawn(move || writer.run())
            .map_err(|e| format!("journal: {e}"))?;
        Ok(Committer { shared, thread: Some(thread) })
    }

    pub fn durable(&self) -> watch::Receiver<u64> {
        self.shared.durable.subscribe()
    }

    /// Hand one record to the writer; ``seq`` is the newest write seq once it is written.
    pub fn submit(&self, record: &Record, seq: u64) {
        let mut p = self.shared.pending.lock();
        if matches!(record, Record::Write { .. }) && p.first.is_none() {
            p.first = Some(record.seq());
        }
        record.encode(&mut p.buf);
        p.seq = p.seq.max(seq);
        drop(p);
        self.shared.wake.notify_one();
    }

    pub fn truncate_before(&self, seq: u64) {
        self.shared.pending.lock().truncate = Some(seq);
        self.shared.wake.notify_one();
    }

    pub fn reader(&self) -> Reader {
        Reader { shared: self.shared.clone() }
    }

    pub fn close(mut self, wait: Duration) {
        self.shared.pending.lock().closing = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let deadline = Instant::now() + wait;
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
    }
}

/// Reads the segment files without the journal's lock.
pub struct Reader {
    shared: Arc<Shared>,
}

impl Reader {
    /// Read up to ``max`` writes from ``from`` to ``until`` back from the segment files.
    pub fn read(&self, from: u64, until: u64, max: usize) -> std::io::Result<Vec<Arc<Entry>>> {
        let segments = self.shared.segments.lock().clone();
        let mut out = Vec::new();
        for s in segments.iter().filter(|s| s.last >= from && s.first <= until) {
            let (records, _, _) = segment::read(&s.path)?;
            for r in records {
                if let Record::Write { seq, method, key, payload } = r {
                    if seq >= from && seq <= until {
                        out.push(Arc::new(Entry { seq, payload, method, key }));
                        if out.len() >= max {
                            return Ok(out);
                        }
                    }
                }
            }
        }
        if out.first().map(|e| e.seq) != Some(from) {
            return Err(std::io::Error::other(format!("write #{from} is not on disk")));
        }
        Ok(out)
    }
}

/// The thread's side: the current segment file.
struct Writer {
    dir: PathBuf,
    shared: Arc<Shared>,
    sync: Sync,
    segment_bytes: u64,
    file: File,
    size: u64,
    last_sync: Instant,
    dirty: bool,
}

impl Writer {
    fn open(dir: &Path, shared: Arc<Shared>, sync: Sync, segment_bytes: u64)
            -> Result<Writer, String> {
        let head = *shared.durable.borrow();
        let current = {
            let mut segments = shared.segments.lock();
            if segments.is_empty() {
                segments.push(Segment { path: segment::segment_path(dir, head + 1),
                                        first: head + 1, last: head });
            }
            segments.last().cloned().expect("a segment was just ensured")
        };
        let file = segment::open_append(&current.path)
            .map_err(|e| format!("{}: {e}", current.path.display()))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        segment::sync_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(Writer { dir: dir.to_owned(), shared, sync, segment_bytes, file, size,
                    last_sync: Instant::now(), dirty: false })
    }

    fn run(mut self) {
        loop {
            let (buf, seq, first, truncate, closing) = {
                let mut p = self.shared.pending.lock();
                while p.buf.is_empty() && p.truncate.is_none() && !p.closing {
                    match self.sync {
                        Sync::Always => self.shared.wake.wait(&mut p),
                        Sync::Interval(every) => {
                            if self.shared.wake.wait_for(&mut p, every).timed_out() {
                                break;
                            }
                        }
                    }
                }
                (std::mem::take(&mut p.buf), p.seq, p.first.take(), p.truncate.take(),
                 p.closing)
            };
            if !buf.is_empty() {
                self.write(&buf, seq, first);
            }
            if let Sync::Interval(every) = self.sync {
                if self.dirty && (closing || self.last_sync.elapsed() >= every) {
                    let _ = self.file.sync_data();
                    self.dirty = false;
                    self.last_sync = Instant::now();
                }
            }
            if let Some(before) = truncate {
                self.truncate(before);
            }
            if closing {
                let _ = self.file.sync_data();
                return;
            }
        }
    }

    fn write(&mut self, buf: &[u8], seq: u64, first: Option<u64>) {
        if let Some(first) = first {
            if self.size > 0 && self.size + buf.len() as u64 > self.segment_bytes {
                self.rotate(first);
            }
        }
        let always = self.sync == Sync::Always;
        // A failed write leaves the durable mark where it was: the writes waiting on it stay
        // unforwarded rather than being acknowledged without a record.
        if segment::write(&mut self.file, buf, always).is_err() {
            return;
        }
        self.size += buf.len() as u64;
        self.dirty = !always;
        if let Some(current) = self.shared.segments.lock().last_mut() {
            current.last = current.last.max(seq);
        }
        // Stored even when no write is waiting yet: one that subscribes after this group was
        // synced must still see it (`send` drops the value when nobody listens).
        self.shared.durable.send_replace(seq);
    }

    fn rotate(&mut self, first: u64) {
        let path = segment::segment_path(&self.dir, first);
        let Ok(file) = segment::open_append(&path) else { return };
        let _ = self.file.sync_data();
        let _ = segment::sync_dir(&self.dir);
        self.file = file;
        self.size = 0;
        self.shared.segments.lock().push(Segment { path, first, last: first - 1 });
    }

    fn truncate(&mut self, before: u64) {
        let mut segments = self.shared.segments.lock();
        let current = segments.len().saturating_sub(1);
        let mut removed = 0;
        for s in segments[..current].iter() {
            if s.last < before && std::fs::remove_file(&s.path).is_ok() {
                removed += 1;
            } else {
                break;
            }
        }
        segments.drain(..removed);
        drop(segments);
        let _ = segment::sync_dir(&self.dir);
    }
}
