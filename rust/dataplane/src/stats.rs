//! Counters and histograms kept by the request path, read by the control plane at scrape time.
//!
//! Everything is a relaxed atomic: the request path never locks for a figure, and a scrape
//! sees each number as of some moment (Prometheus counters need no more).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use parking_lot::Mutex;

use crate::model::Outcome;

/// Upper bounds (seconds) of the latency buckets, as the Python metrics declare them.
pub const LATENCY_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Upper bounds (seconds) of the arbiter-time buckets.
pub const ARBITER_BUCKETS: [f64; 8] = [1e-6, 5e-6, 1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 1e-2];
/// Upper bounds (seconds) of the journal catch-up buckets (Prometheus' defaults).
pub const REPLAY_BUCKETS: [f64; 14] = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75,
                                       1.0, 2.5, 5.0, 7.5, 10.0];

/// A cumulative histogram: per-bucket counts (not cumulative), the count and the sum.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

/// A histogram's figures at one moment: cumulative bucket counts, as Prometheus wants them.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramView {
    pub bounds: Vec<f64>,
    pub cumulative: Vec<u64>,
    pub count: u64,
    pub sum: f64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram { bounds, buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
                    count: AtomicU64::new(0), sum_nanos: AtomicU64::new(0) }
    }

    pub fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let i = self.bounds.iter().position(|b| secs <= *b).unwrap_or(self.bounds.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        self.sum_nanos.fetch_add(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX), Relaxed);
    }

    pub fn view(&self) -> HistogramView {
        let mut running = 0;
        let mut cumulative = Vec::with_capacity(self.buckets.len());
        for b in &self.buckets {
            running += b.load(Relaxed);
            cumulative.push(running);
        }
        HistogramView { bounds: self.bounds.to_vec(), cumulative,
                        count: self.count.load(Relaxed),
                        sum: self.sum_nanos.load(Relaxed) as f64 / 1e9 }
    }
}

/// Width (microseconds) of one lag bin.
pub const LAG_BIN_US: i64 = 25;
/// Bins on each side of 0; lags beyond land in the outermost bin.
pub const LAG_SIDE: usize = 80;
/// Routes one executor's lags are kept apart for; later ones share [`OTHER_ROUTES`].
pub const LAG_ROUTES: usize = 64;
/// The route of requests beyond the first [`LAG_ROUTES`].
pub const OTHER_ROUTES: &str = "*";

/// What a request's lag is compared within: its kind (the HTTP method, the DNS question type)
/// and its subject (the path, the name) with each run of digits as ``#`` (``/notes/17`` and
/// ``/notes/18`` are one route), at most 120 bytes of it. A stack serves some routes slower
/// than others, so a workload that moves between them must not look like a slowed executor.
pub fn lag_route(label: &str, key: &str) -> String {
    let mut route = String::with_capacity(label.len() + key.len() + 1);
    route.push_str(label);
    route.push(' ');
    let mut digits = false;
    for c in key.chars() {
        if route.len() >= 120 {
            break;
        }
        if c.is_ascii_digit() {
            if !digits {
                route.push('#');
            }
        } else {
            route.push(c);
        }
        digits = c.is_ascii_digit();
    }
    route
}

/// How far behind the fastest of the others an executor answered, in unanimous rounds, per
/// route: bin ``i`` holds lags in ``[(i - LAG_SIDE) * LAG_BIN_US, +LAG_BIN_US)``
/// microseconds. Counts since the control plane last took them (the behaviour judge reads one
/// window at a time). The first [`LAG_ROUTES`] routes seen keep their place for good, so a
/// route's counts always mean the same requests.
#[derive(Debug, Default)]
pub struct Lags {
    routes: Mutex<HashMap<String, Vec<u64>>>,
}

impl Lags {
    pub fn observe(&self, route: &str, lag_seconds: f64) {
        let bin = (lag_seconds * 1e6 / LAG_BIN_US as f64).floor() as i64 + LAG_SIDE as i64;
        let bin = bin.clamp(0, 2 * LAG_SIDE as i64) as usize;
        let mut routes = self.routes.lock();
        let key = if routes.contains_key(route) || routes.len() < LAG_ROUTES {
            route
        } else {
            OTHER_ROUTES
        };
        if let Some(bins) = routes.get_mut(key) {
            bins[bin] += 1;
        } else {
            let mut bins = vec![0; 2 * LAG_SIDE + 1];
            bins[bin] = 1;
            routes.insert(key.to_owned(), bins);
        }
    }

    /// The counts per route since the last take (routes with none are left out).
    pub fn take(&self) -> Vec<(String, Vec<u64>)> {
        let mut routes = self.routes.lock();
        routes.iter_mut().filter(|(_, bins)| bins.iter().any(|&n| n > 0))
            .map(|(route, bins)| (route.clone(), std::mem::replace(bins, vec![0; bins.len()])))
            .collect()
    }
}

/// Addresses whose error answers one window keeps apart; more share one count.
pub const ERROR_CLIENTS: usize = 4096;

/// Error answers (HTTP 400 or more, a DNS rcode other than NOERROR) per client since the
/// control plane last took them: many from one client is a scan (`core/threat.py`).
#[derive(Debug, Default)]
pub struct ClientErrors {
    counts: Mutex<HashMap<IpAddr, u64>>,
    others: AtomicU64,
}

impl ClientErrors {
    pub fn error(&self, client: IpAddr) {
        let mut counts = self.counts.lock();
        if counts.len() < ERROR_CLIENTS || counts.contains_key(&client) {
            *counts.entry(client).or_insert(0) += 1;
        } else {
            self.others.fetch_add(1, Relaxed);
        }
    }

    /// The counts since the last take, and how many errors went to clients beyond the first
    /// [`ERROR_CLIENTS`].
    pub fn take(&self) -> (Vec<(IpAddr, u64)>, u64) {
        let counts = std::mem::take(&mut *self.counts.lock());
        (counts.into_iter().collect(), self.others.swap(0, Relaxed))
    }
}

/// What one executor did, across restarts (its name is the key, not its process).
#[derive(Debug)]
pub struct ExecutorStats {
    pub latency: Histogram,
    /// Clean agreements since the control plane last took them (it feeds them to trust).
    agreements: AtomicU64,
    pub replays: AtomicU64,
    pub lags: Lags,
}

impl Default for ExecutorStats {
    fn default() -> ExecutorStats {
        ExecutorStats { latency: Histogram::new(&LATENCY_BUCKETS),
                        agreements: AtomicU64::new(0), replays: AtomicU64::new(0),
                        lags: Lags::default() }
    }
}

impl ExecutorStats {
    pub fn agreed(&self) {
        self.agreements.fetch_add(1, Relaxed);
    }

    pub fn take_agreements(&self) -> u64 {
        self.agreements.swap(0, Relaxed)
    }
}

/// The data plane's own figures.
#[derive(Debug)]
pub struct PlaneStats {
    outcomes: [AtomicU64; 3],
    rejected: Mutex<BTreeMap<String, u64>>,
    pub latency: Histogram,
    pub arbiter: Histogram,
    pub replay: Histogram,
    pub events_dropped: AtomicU64,
    pub connections: AtomicU64,
    /// Rounds under way (a round counts itself from its start to its end).
    pub rounds: AtomicU64,
    pub client_errors: ClientErrors,
}

impl Default for PlaneStats {
    fn default() -> PlaneStats {
        PlaneStats { outcomes: Default::default(), rejected: Mutex::new(BTreeMap::new()),
                     latency: Histogram::new(&LATENCY_BUCKETS),
                     arbiter: Histogram::new(&ARBITER_BUCKETS),
                     replay: Histogram::new(&REPLAY_BUCKETS),
                     events_dropped: AtomicU64::new(0), connections: AtomicU64::new(0),
                     rounds: AtomicU64::new(0), client_errors: ClientErrors::default() }
    }
}

fn slot(outcome: Outcome) -> usize {
    match outcome {
        Outcome::Accepted => 0,
        Outcome::NoQuorum => 1,
        Outcome::AllFailed => 2,
    }
}

impl PlaneStats {
    pub fn outcome(&self, outcome: Outcome) {
        self.outcomes[slot(outcome)].fetch_add(1, Relaxed);
    }

    /// A request the input agent refused, by status (or, for DNS, by reason).
    pub fn rejected(&self, label: &str) {
        *self.rejected.lock().entry(label.to_owned()).or_insert(0) += 1;
    }

    pub fn outcomes(&self) -> [(Outcome, u64); 3] {
        [Outcome::Accepted, Outcome::NoQuorum, Outcome::AllFailed]
            .map(|o| (o, self.outcomes[slot(o)].load(Relaxed)))
    }

    pub fn rejections(&self) -> Vec<(String, u64)> {
        self.rejected.lock().iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_inclusive_upper_bounds_and_cumulative() {
        let h = Histogram::new(&LATENCY_BUCKETS);
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_micros(501));
        h.observe(Duration::from_secs(11));
        let v = h.view();
        assert_eq!(v.cumulative[0], 1);
        assert_eq!(v.cumulative[1], 2);
        assert_eq!(*v.cumulative.last().unwrap(), 3);
        assert_eq!(v.cumulative[LATENCY_BUCKETS.len() - 1], 2);
        assert_eq!(v.count, 3);
        assert!((v.sum - 11.001001).abs() < 1e-9);
    }

    #[test]
    fn agreements_are_taken_once() {
        let s = ExecutorStats::default();
        s.agreed();
        s.agreed();
        assert_eq!(s.take_agreements(), 2);
        assert_eq!(s.take_agreements(), 0);
    }

    #[test]
    fn lags_land_in_their_bins_beyond_ones_in_the_last_and_are_taken_once() {
        let l = Lags::default();
        for lag in [0.0, -0.000_001, 0.000_210, 5.0, -5.0] {
            l.observe("GET /", lag);
        }
        let taken = l.take();
        assert_eq!(taken.len(), 1);
        let (route, bins) = &taken[0];
        assert_eq!((route.as_str(), bins.len()), ("GET /", 2 * LAG_SIDE + 1));
        let at = |us: i64| (us.div_euclid(LAG_BIN_US) + LAG_SIDE as i64) as usize;
        assert_eq!((bins[at(0)], bins[at(-1)], bins[at(210)]), (1, 1, 1));
        assert_eq!((bins[0], bins[2 * LAG_SIDE]), (1, 1));
        assert!(l.take().is_empty());
    }

    #[test]
    fn routes_beyond_the_first_ones_share_one_for_good() {
        let l = Lags::default();
        for i in 0..LAG_ROUTES {
            l.observe(&format!("GET /r{}", "x".repeat(i)), 0.0);
        }
        l.take();
        l.observe("GET /late", 0.0);
        l.observe("GET /r", 0.0);  // one of the first: still its own, though taken empty
        let mut taken: Vec<String> = l.take().into_iter().map(|(r, _)| r).collect();
        taken.sort();
        assert_eq!(taken, [OTHER_ROUTES, "GET /r"]);
    }

    #[test]
    fn errors_are_counted_per_client_up_to_a_bound_and_taken_once() {
        let e = ClientErrors::default();
        let one: IpAddr = "127.0.0.2".parse().unwrap();
        e.error(one);
        e.error(one);
        for i in 0..ERROR_CLIENTS as u32 {
            e.error(IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i)));
        }
        let (counts, others) = e.take();
        assert_eq!(counts.len(), ERROR_CLIENTS);
        assert_eq!(counts.iter().find(|(ip, _)| *ip == one).map(|(_, n)| *n), Some(2));
        assert_eq!(others, 1);
        assert_eq!(e.take(), (Vec::new(), 0));
    }

    #[test]
    fn a_route_is_the_kind_and_the_subject_with_digits_folded() {
        assert_eq!(lag_route("GET", "/notes/17/x2y"), "GET /notes/#/x#y");
        assert_eq!(lag_route("GET", "/notes/18/x335y"), "GET /notes/#/x#y");
        assert_eq!(lag_route("A", "host42.example."), "A host#.example.");
        assert_eq!(lag_route("GET", &"/a".repeat(200)).len(), 120);
    }
}
