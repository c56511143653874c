//! The write journal: every forwarded write, in the order it was forwarded, durable before it
//! is forwarded, so that a cleansed executor, or every executor after a gateway crash, can be
//! brought level before it votes.
//!
//! Consistency model: an executor's state is a function of the sequence of writes it has
//! received. Each write gets the next seq when it is admitted, is appended here, and is
//! forwarded only once it is durable and every earlier write has been forwarded (see
//! [`crate::proxy`]); an executor whose journal position equals the forwarded head has seen them
//! all. Memory holds only a window of recent entries; older ones are read back from the
//! segment files ([`segment`]). Nothing is dropped except by [`Journal::truncate_before`]
//! (after a checkpoint that covers it).

mod commit;
pub mod segment;

use std::collections::{BTreeSet, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

pub use commit::Sync;
use commit::Committer;
use segment::Record;

/// One forwarded write, byte for byte as every executor received it.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    pub payload: Bytes,
    pub method: Bytes,
    /// The client's `Idempotency-Key`, empty when it sent none.
    pub key: Bytes,
}

/// The entries an executor needs were truncated (a checkpoint covers them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gap {
    pub needed: u64,
    pub oldest: u64,
    pub head: u64,
}

impl std::fmt::Display for Gap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "needs writes from #{} but the journal keeps only #{}..#{}; restore it from a \
                   checkpoint", self.needed, self.oldest, self.head)
    }
}

/// What opening a journal found on disk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    pub entries: u64,
    pub head: u64,
    /// Bytes of a torn last record cut off (a crash during an append).
    pub cut_bytes: u64,
    /// The idempotency keys of the writes recovered, with their seqs.
    pub keys: Vec<(Bytes, u64)>,
}

/// How many recent entries stay in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub entries: usize,
    pub bytes: usize,
}

pub struct Journal {
    window: VecDeque<Arc<Entry>>,
    window_bytes: usize,
    bounds: Window,
    head: u64,
    /// The oldest seq still available (everything before it was truncated).
    base: u64,
    in_doubt: BTreeSet<u64>,
    disk: Option<Committer>,
}

/// Where the entries a catch-up asked for are.
pub enum Since {
    Ready(Vec<Arc<Entry>>),
    Disk(DiskRead),
}

/// Entries to read back from the segment files (a blocking read).
pub struct DiskRead {
    reader: commit::Reader,
    from: u64,
    until: u64,
    max: usize,
}

impl DiskRead {
    pub fn read(self) -> Result<Vec<Arc<Entry>>, String> {
        self.reader.read(self.from, self.until, self.max).map_err(|e| e.to_string())
    }
}

impl Since {
    /// The entries, reading the disk here if need be (blocking).
    pub fn entries(self) -> Result<Vec<Arc<Entry>>, String> {
        match self {
            Since::Ready(entries) => Ok(entries),
            Since::Disk(read) => read.read(),
        }
    }
}

/// Entries read back from disk at most per call, so a long catch-up never holds them all.
pub const READ_BATCH: usize = 4096;

impl Journal {
    /// A journal in memory only: nothing survives the process, and a write older than the
    /// window cannot be replayed (for tests and for configurations without a state directory).
    pub fn memory(bounds: Window) -> Journal {
        Journal { window: VecDeque::new(), window_bytes: 0, bounds, head: 0, base: 1,
                  in_doubt: BTreeSet::new(), disk: None }
    }

    /// Open (or create) the journal in ``dir``, recovering what a previous run left.
    pub fn open(dir: &Path, bounds: Window, sync: Sync, segment_bytes: u64)
                -> Result<(Journal, Recovery), String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut journal = Journal::memory(bounds);
        let mut recovery = Recovery::default();
        let paths = segment::list(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut segments = Vec::new();
        for (i, path) in paths.iter().enumerate() {
            let (records, intact, len) = segment::read(path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            if intact < len {
                if i + 1 < paths.len() {
                    return Err(format!("{}: damaged at byte {intact} (not the last segment: \
                                        refusing to guess)", path.display()));
                }
                segment::cut(path, intact).map_err(|e| format!("{}: {e}", path.display()))?;
                recovery.cut_bytes = len - intact;
            }
            let first = path.file_name().and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".journal")).and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
            let mut last = first.saturating_sub(1);
            for record in records {
                match record {
                    Record::Write { seq, method, key, payload } => {
                        if journal.head != 0 && seq != journal.head + 1 {
                            return Err(format!("{}: write #{seq} follows #{}: the journal has \
                                                a hole", path.display(), journal.head));
                        }
                        if journal.head == 0 {
                            journal.base = seq;
                        }
                        if !key.is_empty() {
                            recovery.keys.push((key.clone(), seq));
                        }
                        journal.push(Arc::new(Entry { seq, payload, method, key }));
                        recovery.entries += 1;
                        last = seq;
                    }
                    Record::Mark { seq, flags } => {
                        if flags & segment::IN_DOUBT != 0 {
                            journal.in_doubt.insert(seq);
                        }
                    }
                }
            }
            segments.push(segment::Segment { path: path.clone(), first, last });
        }
        if journal.head == 0 {
            journal.base = segments.last().map_or(1, |s| s.last + 1);
            journal.head = journal.base - 1;
        }
        recovery.head = journal.head;
        journal.disk = Some(Committer::start(dir, segments, journal.head, sync, segment_bytes)?);
        Ok((journal, recovery))
    }

    /// Change the memory window (a new snapshot).
    pub fn set_window(&mut self, bounds: Window) {
        self.bounds = bounds;
        self.trim();
    }

    /// The seq of the newest entry; 0 when nothing was ever written.
    pub fn head(&self) -> u64 {
        self.head
    }

    /// The oldest seq still available.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Entries in memory.
    pub fn len(&self) -> usize {
        self.window.len()
    }

    pub fn is_empty(&self) -> bool {
        self.head < self.base
    }

    /// Writes that got no quorum: some executors may have applied them.
    pub fn in_doubt(&self) -> Vec<u64> {
        self.in_doubt.iter().copied().collect()
    }

    /// Seqs of the writes being made durable reach this channel once they are.
    pub fn durable(&self) -> Option<watch::Receiver<u64>> {
        self.disk.as_ref().map(Committer::durable)
    }

    /// Admit one write: it gets the next seq and is handed to the disk.
    pub fn append(&mut self, payload: Bytes, method: Bytes, key: Bytes) -> u64 {
        let seq = self.head + 1;
        if let Some(disk) = &self.disk {
            disk.submit(&Record::Write { seq, method: method.clone(), key: key.clone(),
                                         payload: payload.clone() }, seq);
        }
        self.push(Arc::new(Entry { seq, payload, method, key }));
        seq
    }

    /// Mark ``seq`` as in doubt (it got no quorum).
    pub fn mark_in_doubt(&mut self, seq: u64) {
        self.in_doubt.insert(seq);
        if let Some(disk) = &self.disk {
            disk.submit(&Record::Mark { seq, flags: segment::IN_DOUBT }, self.head);
        }
    }

    fn push(&mut self, entry: Arc<Entry>) {
        self.head = entry.seq;
        self.window_bytes += entry.payload.len();
        self.window.push_back(entry);
        self.trim();
    }

    fn trim(&mut self) {
        while self.window.len() > self.bounds.entries.max(1)
            || (self.window_bytes > self.bounds.bytes && self.window.len() > 1)
        {
            if let Some(dropped) = self.window.pop_front() {
                self.window_bytes -= dropped.payload.len();
            }
        }
    }

    /// Up to ``max`` entries after ``synced`` and up to ``until``: from memory, or a reader
    /// for the disk (to use without holding the journal, so appends never wait on a read).
    pub fn since(&self, synced: u64, until: u64, max: usize) -> Result<Since, Gap> {
        let until = until.min(self.head);
        if synced >= until {
            return Ok(Since::Ready(Vec::new()));
        }
        let from = synced + 1;
        if from < self.base {
            return Err(Gap { needed: from, oldest: self.base, head: self.head });
        }
        let in_memory = self.window.front().map_or(self.head + 1, |e| e.seq);
        if from >= in_memory {
            let skip = usize::try_from(from - in_memory).unwrap_or(usize::MAX);
            return Ok(Since::Ready(self.window.iter().skip(skip).take_while(|e| e.seq <= until)
                .take(max).cloned().collect()));
        }
        match &self.disk {
            Some(disk) => Ok(Since::Disk(DiskRead { reader: disk.reader(), from, until, max })),
            None => Err(Gap { needed: from, oldest: in_memory, head: self.head }),
        }
    }

    /// Forget everything before ``seq`` (a durable checkpoint covers it), on disk too.
    pub fn truncate_before(&mut self, seq: u64) {
        let seq = seq.min(self.head + 1);
        if seq <= self.base {
            return;
        }
        self.base = seq;
        while self.window.front().is_some_and(|e| e.seq < seq) {
            if let Some(dropped) = self.window.pop_front() {
                self.window_bytes -= dropped.payload.len();
            }
        }
        self.in_doubt = self.in_doubt.split_off(&seq);
        if let Some(disk) = &self.disk {
            disk.truncate_before(seq);
        }
    }

    /// Write out and sync what is pending, then stop the disk thread (waits at most ``wait``).
    pub fn close(&mut self, wait: Duration) {
        if let Some(disk) = self.disk.take() {
            disk.close(wait);
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.close(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WIDE: Window = Window { entries: 1000, bytes: 1 << 20 };

    fn write(j: &mut Journal, body: &str) -> u64 {
        j.append(Bytes::from(body.to_owned()), Bytes::from_static(b"POST"), Bytes::new())
    }

    /// Append and wait until the disk has it (so every write is its own group).
    fn write_durably(j: &mut Journal, body: &str) -> u64 {
        let seq = write(j, body);
        let mut durable = j.durable().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(durable.wait_for(|d| *d >= seq)).unwrap();
        seq
    }

    fn seqs(entries: &[Arc<Entry>]) -> Vec<u64> {
        entries.iter().map(|e| e.seq).collect()
    }

    fn tmp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("endosec-journal-{name}-{}",
                                                    std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn entries_since_a_point_up_to_a_bound() {
        let mut j = Journal::memory(WIDE);
        for i in 0..5 {
            write(&mut j, &i.to_string());
        }
        assert_eq!(seqs(&j.since(1, 5, 100).unwrap().entries().unwrap()), vec![2, 3, 4, 5]);
        assert_eq!(seqs(&j.since(1, 3, 100).unwrap().entries().unwrap()), vec![2, 3]);
        assert_eq!(seqs(&j.since(0, 5, 2).unwrap().entries().unwrap()), vec![1, 2]);
        assert!(j.since(5, 5, 100).unwrap().entries().unwrap().is_empty());
    }

    #[test]
    fn memory_only_entries_outside_the_window_are_a_gap() {
        let mut j = Journal::memory(Window { entries: 2, bytes: 1 << 20 });
        for i in 0..5 {
            write(&mut j, &i.to_string());
        }
        assert_eq!(j.len(), 2);
        assert_eq!(j.since(0, 5, 100).err(), Some(Gap { needed: 1, oldest: 4, head: 5 }));
    }

    #[test]
    fn the_disk_holds_what_the_window_does_not_and_survives_a_reopen() {
        let dir = tmp("reopen");
        let small = Window { entries: 3, bytes: 1 << 20 };
        {
            let (mut j, rec) = Journal::open(&dir, small, Sync::Always, 200).unwrap();
            assert_eq!(rec, Recovery::default());
            for i in 0..20 {
                write_durably(&mut j, &format!("write {i}"));
            }
            j.mark_in_doubt(7);
            let old = j.since(0, 20, 100).unwrap().entries().unwrap();
            assert_eq!(seqs(&old), (1..=20).collect::<Vec<_>>());
            assert_eq!(old[4].payload, Bytes::from("write 4"));
        }
        assert!(segment::list(&dir).unwrap().len() > 1, "small segments rotate");
        let (j, rec) = Journal::open(&dir, small, Sync::Always, 200).unwrap();
        assert_eq!(rec.entries, 20);
        assert_eq!(j.head(), 20);
        assert_eq!(j.in_doubt(), vec![7]);
        assert_eq!(j.len(), 3);
        let entries = j.since(10, 20, 5).unwrap().entries().unwrap();
        assert_eq!(seqs(&entries), vec![11, 12, 13, 14, 15]);
        drop(j);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_torn_append_is_cut_and_the_journal_continues() {
        let dir = tmp("torn");
        {
            let (mut j, _) = Journal::open(&dir, WIDE, Sync::Always, 1 << 20).unwrap();
            for i in 0..3 {
                write(&mut j, &i.to_string());
            }
        }
        let last = segment::list(&dir).unwrap().pop().unwrap();
        let mut bytes = std::fs::read(&last).unwrap();
        let mut torn = Vec::new();
        Record::Write { seq: 4, method: Bytes::from_static(b"POST"), key: Bytes::new(),
                        payload: Bytes::from_static(b"half") }.encode(&mut torn);
        bytes.extend_from_slice(&torn[..torn.len() - 2]);
        std::fs::write(&last, &bytes).unwrap();
        let (mut j, rec) = Journal::open(&dir, WIDE, Sync::Always, 1 << 20).unwrap();
        assert_eq!(rec.head, 3);
        assert_eq!(rec.cut_bytes, (torn.len() - 2) as u64);
        assert_eq!(write(&mut j, "next"), 4);
        drop(j);
        let (j, rec) = Journal::open(&dir, WIDE, Sync::Always, 1 << 20).unwrap();
        assert_eq!((rec.head, rec.cut_bytes), (4, 0));
        assert_eq!(j.since(3, 4, 10).unwrap().entries().unwrap()[0].payload,
                   Bytes::from_static(b"next"));
        drop(j);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_write_synced_before_anyone_waits_on_it_is_seen_as_durable() {
        let dir = tmp("durable");
        let (mut j, _) = Journal::open(&dir, WIDE, Sync::Always, 1 << 20).unwrap();
        let seq = write(&mut j, "nobody waits yet");
        // Receivers come and go: the disk thread mostly finds none listening.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while *j.durable().unwrap().borrow() < seq {
            assert!(std::time::Instant::now() < deadline, "write #{seq} never became durable");
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(j);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn truncation_forgets_covered_writes_on_disk_too() {
        let dir = tmp("truncate");
        {
            let (mut j, _) = Journal::open(&dir, Window { entries: 2, bytes: 1 << 20 },
                                           Sync::Always, 150).unwrap();
            for i in 0..30 {
                write_durably(&mut j, &format!("w{i}"));
            }
            j.truncate_before(25);
            assert_eq!(j.base(), 25);
            assert_eq!(j.since(10, 30, 100).err().map(|g| g.oldest), Some(25));
            assert_eq!(seqs(&j.since(24, 30, 100).unwrap().entries().unwrap()),
                       vec![25, 26, 27, 28, 29, 30]);
        }
        let (j, _) = Journal::open(&dir, WIDE, Sync::Always, 150).unwrap();
        assert!(j.base() > 1 && j.base() <= 25, "old segments are gone: base {}", j.base());
        assert_eq!(j.head(), 30);
        drop(j);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
