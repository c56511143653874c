//! `Idempotency-Key`: a retried write is answered from the recorded outcome, never applied twice.
//!
//! The first write with a key claims it; a retry arriving while it runs waits for its outcome;
//! a retry after it is answered with the same outcome (the same consensus reply, or the same
//! in-doubt refusal), until the key is older than the window or pushed out by newer keys. Keys
//! of writes recovered from the journal after a restart have no recorded reply: a retry of one
//! is refused with 409 rather than applied again.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::http::Response;

/// What a keyed write came to, for answering its retries.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// The consensus reply (re-encoded for each retry's connection).
    Reply(Box<Response>),
    /// Refused with this status and reason (e.g. a write in doubt).
    Refused { status: u16, reason: String, seq: u64 },
    /// Applied before a gateway restart; its reply was not kept.
    Applied { seq: u64 },
}

enum State {
    Running(watch::Receiver<Option<Outcome>>),
    Done(Outcome),
}

/// A key's state and when it was claimed (an expired entry of a reused key is not this one).
struct Slot {
    at: Instant,
    state: State,
}

/// What a write with a key should do.
pub enum Claim {
    /// It is the first: run it and `record` the outcome.
    First(watch::Sender<Option<Outcome>>),
    /// Another request with this key is running: wait for its outcome.
    Wait(watch::Receiver<Option<Outcome>>),
    /// It was done already.
    Done(Outcome),
}

struct Inner {
    slots: HashMap<Bytes, Slot>,
    order: VecDeque<(Instant, Bytes)>,
}

pub struct Keys {
    inner: Mutex<Inner>,
    window: Mutex<(Duration, usize)>,
}

/// The longest key accepted; a longer one is refused with 400.
pub const MAX_KEY: usize = 256;

impl Keys {
    pub fn new(window: Duration, max_keys: usize) -> Keys {
        Keys { inner: Mutex::new(Inner { slots: HashMap::new(), order: VecDeque::new() }),
               window: Mutex::new((window, max_keys)) }
    }

    pub fn set_window(&self, window: Duration, max_keys: usize) {
        *self.window.lock() = (window, max_keys);
    }

    pub fn claim(&self, key: &Bytes, now: Instant) -> Claim {
        let (window, max_keys) = *self.window.lock();
        let mut inner = self.inner.lock();
        expire(&mut inner, now, window, max_keys);
        match inner.slots.get(key).map(|s| &s.state) {
            Some(State::Done(outcome)) => return Claim::Done(outcome.clone()),
            Some(State::Running(rx)) => return Claim::Wait(rx.clone()),
            None => {}
        }
        let (tx, rx) = watch::channel(None);
        inner.slots.insert(key.clone(), Slot { at: now, state: State::Running(rx) });
        inner.order.push_back((now, key.clone()));
        Claim::First(tx)
    }

    /// The first request's outcome: kept for retries, and sent to those waiting.
    pub fn record(&self, key: &Bytes, claim: watch::Sender<Option<Outcome>>, outcome: Outcome) {
        if let Some(slot) = self.inner.lock().slots.get_mut(key) {
            slot.state = State::Done(outcome.clone());
        }
        let _ = claim.send(Some(outcome));
    }

    /// The first request ended without an outcome (nothing was applied): free the key.
    pub fn forget(&self, key: &Bytes) {
        let mut inner = self.inner.lock();
        if inner.slots.get(key).is_some_and(|s| matches!(s.state, State::Running(_))) {
            inner.slots.remove(key);
        }
    }

    /// Keys found in the journal at start: applied, reply unknown.
    pub fn recovered(&self, key: Bytes, seq: u64, now: Instant) {
        let mut inner = self.inner.lock();
        inner.slots.insert(key.clone(), Slot { at: now, state: State::Done(Outcome::Applied { seq }) });
        inner.order.push_back((now, key));
    }
}

fn expire(inner: &mut Inner, now: Instant, window: Duration, max_keys: usize) {
    while let Some((at, key)) = inner.order.front() {
        let (at, key) = (*at, key.clone());
        let old = now.duration_since(at) > window;
        if !old && inner.order.len() <= max_keys {
            break;
        }
        let slot = inner.slots.get(&key).filter(|s| s.at == at);
        if slot.is_some_and(|s| matches!(s.state, State::Running(_))) {
            break; // never forget a key whose write is still running
        }
        inner.order.pop_front();
        if slot.is_some() {
            inner.slots.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> Bytes {
        Bytes::from(k.to_owned())
    }

    #[test]
    fn the_first_runs_retries_wait_then_get_the_recorded_outcome() {
        let keys = Keys::new(Duration::from_secs(60), 100);
        let now = Instant::now();
        let Claim::First(tx) = keys.claim(&key("a"), now) else { panic!("first") };
        let Claim::Wait(mut rx) = keys.claim(&key("a"), now) else { panic!("wait") };
        keys.record(&key("a"), tx, Outcome::Refused { status: 502, reason: "x".into(),
                                                      seq: 3 });
        assert!(matches!(&*rx.borrow_and_update(), Some(Outcome::Refused { seq: 3, .. })));
        assert!(matches!(keys.claim(&key("a"), now), Claim::Done(Outcome::Refused { .. })));
        assert!(matches!(keys.claim(&key("b"), now), Claim::First(_)));
    }

    #[test]
    fn keys_expire_by_age_and_count_but_not_while_running() {
        let keys = Keys::new(Duration::from_secs(10), 2);
        let t0 = Instant::now();
        let Claim::First(tx) = keys.claim(&key("a"), t0) else { panic!() };
        keys.record(&key("a"), tx, Outcome::Applied { seq: 1 });
        let _running = keys.claim(&key("b"), t0);
        let later = t0 + Duration::from_secs(11);
        assert!(matches!(keys.claim(&key("a"), later), Claim::First(_)), "a expired");
        assert!(matches!(keys.claim(&key("b"), later), Claim::Wait(_)), "b is still running");
        keys.recovered(key("c"), 9, later);
        keys.recovered(key("d"), 10, later);
        assert!(matches!(keys.claim(&key("d"), later), Claim::Done(Outcome::Applied { seq: 10 })));
    }
}
