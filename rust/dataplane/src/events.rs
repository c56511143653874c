//! The up channel: what the control plane must hear about, bounded and never blocking.
//!
//! Clean agreements are not events (they are counted in [`crate::stats`]); every other verdict
//! is, with digests and failure details, and so is the end of every catch-up. When the queue is
//! full the event is dropped and counted: a slow control plane never holds up a request. The
//! first event after a drain writes one byte to a pipe so that the control plane's event loop
//! wakes up without polling.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;

use crate::model::Outcome;
use crate::stats::PlaneStats;

/// A verdict that was not a clean agreement of every voter (or that involved a shadow).
#[derive(Clone, Debug)]
pub struct VerdictEvent {
    pub method: String,
    pub path: String,
    pub client: Option<SocketAddr>,
    /// The request's id (the one its refusal, if any, gave the client).
    pub request: u64,
    pub outcome: Outcome,
    pub agreed: Vec<Arc<str>>,
    pub dissented: Vec<Arc<str>>,
    pub failed: Vec<Arc<str>>,
    pub reason: String,
    /// Every output's digest, hex, in ballot order.
    pub digests: Vec<(Arc<str>, String)>,
    /// What went wrong for each executor that failed, in words.
    pub errors: Vec<(Arc<str>, String)>,
    /// Each shadow's agreement with the winner (only when there was a winner).
    pub shadows: Vec<(Arc<str>, bool)>,
    /// True when the fan-out never happened (fewer voters than the floor).
    pub refused: bool,
    /// The winner's and the dissenters' replies.
    pub evidence: Vec<(Arc<str>, Evidence)>,
    /// The request's features, when an executor dissented (an antigen) or a memory matched.
    pub features: Vec<u64>,
    /// The immune memory the request matched.
    pub memory: Option<String>,
}

/// One executor's reply as evidence: status, headers, and the body when enabled.
#[derive(Clone, Debug)]
pub struct Evidence {
    pub status: u16,
    pub headers: crate::http::Headers,
    pub body: Option<bytes::Bytes>,
}

/// The end of one catch-up ordered by the control plane.
#[derive(Clone, Debug)]
pub struct CatchUpEvent {
    pub ticket: u64,
    pub executor: Arc<str>,
    pub result: Result<u64, String>,
    pub seconds: f64,
}

#[derive(Clone, Debug)]
pub enum Event {
    Verdict(Box<VerdictEvent>),
    CatchUp(CatchUpEvent),
    /// Writes are held back for a checkpoint; ``seq`` is the last one forwarded.
    Paused { ticket: u64, seq: u64 },
    /// Write ``seq`` was answered with ``status`` but no consensus: it stays in the journal and
    /// will reach every executor, though some may have applied it already.
    InDoubt { seq: u64, request: u64, method: String, path: String, status: u16,
              reason: String },
}

/// The bounded queue and its wake-up pipe.
pub struct EventQueue {
    queue: ArrayQueue<Event>,
    armed: AtomicBool,
    wake: Option<OwnedFd>,
}

impl EventQueue {
    /// ``wake`` is the write end of a pipe the control plane watches (None: no wake-ups).
    pub fn new(capacity: usize, wake: Option<OwnedFd>) -> EventQueue {
        EventQueue { queue: ArrayQueue::new(capacity.max(1)), armed: AtomicBool::new(true), wake }
    }

    pub fn push(&self, event: Event, stats: &PlaneStats) {
        if self.queue.push(event).is_err() {
            stats.events_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self.armed.swap(false, Ordering::AcqRel) {
            if let Some(fd) = &self.wake {
                // A full pipe already holds a wake-up; any other failure only delays a drain.
                // SAFETY: writing one byte from a valid buffer to a descriptor we own.
                unsafe { libc::write(fd.as_raw_fd(), b"!".as_ptr().cast(), 1) };
            }
        }
    }

    /// Everything queued, up to ``max`` events; re-arms the wake-up first so that an event
    /// pushed during the drain wakes the control plane again.
    pub fn drain(&self, max: usize) -> Vec<Event> {
        self.armed.store(true, Ordering::Release);
        let mut out = Vec::with_capacity(self.queue.len().min(max));
        while out.len() < max {
            match self.queue.pop() {
                Some(e) => out.push(e),
                None => break,
            }
        }
        if !self.queue.is_empty() {
            self.armed.store(false, Ordering::Release);
            if let Some(fd) = &self.wake {
                // SAFETY: as in `push`.
                unsafe { libc::write(fd.as_raw_fd(), b"!".as_ptr().cast(), 1) };
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catch_up(ticket: u64) -> Event {
        Event::CatchUp(CatchUpEvent { ticket, executor: Arc::from("a"), result: Ok(0),
                                      seconds: 0.0 })
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let stats = PlaneStats::default();
        let q = EventQueue::new(2, None);
        for t in 0..5 {
            q.push(catch_up(t), &stats);
        }
        assert_eq!(stats.events_dropped.load(Ordering::Relaxed), 3);
        let drained = q.drain(10);
        assert_eq!(drained.len(), 2);
        assert!(matches!(drained[0], Event::CatchUp(CatchUpEvent { ticket: 0, .. })));
    }

    #[test]
    fn the_first_event_after_a_drain_wakes_once() {
        let mut fds = [0; 2];
        // SAFETY: a pipe into a two-element array.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK) }, 0);
        // SAFETY: both descriptors were just created and are owned here.
        let (read, write) = unsafe {
            use std::os::fd::FromRawFd;
            (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
        };
        let stats = PlaneStats::default();
        let q = EventQueue::new(8, Some(write));
        q.push(catch_up(1), &stats);
        q.push(catch_up(2), &stats);
        let mut buf = [0u8; 8];
        // SAFETY: reading into a local buffer from a descriptor we own.
        let n = unsafe { libc::read(read.as_raw_fd(), buf.as_mut_ptr().cast(), 8) };
        assert_eq!(n, 1);
        assert_eq!(q.drain(1).len(), 1);
        // One event is left: the drain wakes the control plane again.
        // SAFETY: as above.
        let n = unsafe { libc::read(read.as_raw_fd(), buf.as_mut_ptr().cast(), 8) };
        assert_eq!(n, 1);
        assert_eq!(q.drain(8).len(), 1);
    }
}
