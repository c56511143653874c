//! The write journal: every forwarded write, in the order it was forwarded, so that a cleansed
//! executor can be brought level before it votes.
//!
//! Consistency model: an executor's state is a function of the sequence of writes it has
//! received. Writes are forwarded one at a time (see [`crate::order`]), each appended here first;
//! an executor whose ``synced`` equals the head has seen them all. The journal is bounded by
//! entry count and bytes: an executor that fell behind its oldest entry cannot be brought level.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;

/// One forwarded write, byte for byte as every executor received it.
#[derive(Debug)]
pub struct Entry {
    pub seq: u64,
    pub payload: Bytes,
    pub method: Bytes,
}

/// The entries an executor needs were already dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gap {
    pub needed: u64,
    pub oldest: u64,
    pub head: u64,
}

impl std::fmt::Display for Gap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "needs writes from #{} but the journal keeps only #{}..#{}; raise \
                   journal.max_entries/max_bytes or declare it stateless",
               self.needed, self.oldest, self.head)
    }
}

#[derive(Debug)]
pub struct Journal {
    entries: VecDeque<Arc<Entry>>,
    bytes: usize,
    head: u64,
    max_entries: usize,
    max_bytes: usize,
}

impl Journal {
    pub fn new(max_entries: usize, max_bytes: usize) -> Journal {
        Journal { entries: VecDeque::new(), bytes: 0, head: 0, max_entries: max_entries.max(1),
                  max_bytes: max_bytes.max(1) }
    }

    /// Change the bounds (a new snapshot); takes effect at the next append.
    pub fn set_bounds(&mut self, max_entries: usize, max_bytes: usize) {
        self.max_entries = max_entries.max(1);
        self.max_bytes = max_bytes.max(1);
    }

    /// The seq of the newest entry; 0 when nothing was ever written.
    pub fn head(&self) -> u64 {
        self.head
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn append(&mut self, payload: Bytes, method: Bytes) -> u64 {
        self.head += 1;
        self.bytes += payload.len();
        self.entries.push_back(Arc::new(Entry { seq: self.head, payload, method }));
        while self.entries.len() > self.max_entries
            || (self.bytes > self.max_bytes && self.entries.len() > 1)
        {
            if let Some(dropped) = self.entries.pop_front() {
                self.bytes -= dropped.payload.len();
            }
        }
        self.head
    }

    /// The entries after ``synced``, or the gap that makes that impossible.
    pub fn since(&self, synced: u64) -> Result<Vec<Arc<Entry>>, Gap> {
        if synced >= self.head {
            return Ok(Vec::new());
        }
        let oldest = self.entries.front().map_or(self.head + 1, |e| e.seq);
        if synced + 1 < oldest {
            return Err(Gap { needed: synced + 1, oldest, head: self.head });
        }
        let skip = usize::try_from(synced + 1 - oldest).unwrap_or(usize::MAX);
        Ok(self.entries.iter().skip(skip).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(j: &mut Journal, body: &'static [u8]) -> u64 {
        j.append(Bytes::from_static(body), Bytes::from_static(b"POST"))
    }

    #[test]
    fn entries_since_a_point_in_order() {
        let mut j = Journal::new(10, 1000);
        for _ in 0..4 {
            write(&mut j, b"x");
        }
        let seqs: Vec<u64> = j.since(1).unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![2, 3, 4]);
        assert!(j.since(4).unwrap().is_empty());
    }

    #[test]
    fn bounded_by_count_and_bytes_and_reports_the_gap() {
        let mut j = Journal::new(3, 1000);
        for _ in 0..5 {
            write(&mut j, b"x");
        }
        assert_eq!(j.len(), 3);
        assert_eq!(j.since(0).unwrap_err(), Gap { needed: 1, oldest: 3, head: 5 });
        assert_eq!(j.since(2).unwrap().len(), 3);
        let mut k = Journal::new(100, 5);
        write(&mut k, b"abc");
        write(&mut k, b"abc");
        assert_eq!(k.len(), 1);
        write(&mut k, b"0123456789");
        assert_eq!(k.len(), 1, "one oversized entry is still kept");
    }
}
