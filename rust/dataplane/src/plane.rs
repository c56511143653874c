//! The data plane: a tokio runtime, the current snapshot, the journal, and the two channels.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use parking_lot::Mutex;
use tokio::sync::{watch, RwLock};

use crate::accesslog::{AccessLog, Target};
use crate::events::{CatchUpEvent, Event, EventQueue};
use crate::idempotency::Keys;
use crate::journal::{Journal, Recovery, Since, Sync, Window, READ_BATCH};
use crate::dns_listener;
use crate::listener::{self, Tls};
use crate::model::Outcome;
use crate::snapshot::{Compiled, Executor, Protocol, Snapshot, SnapshotSpec};
use crate::stats::{ExecutorStats, PlaneStats};
use crate::upstream::exchange;

/// A verdict as the status page lists it.
#[derive(Clone, Debug)]
pub struct Recent {
    pub method: String,
    pub path: String,
    pub outcome: Outcome,
    pub agreed: Vec<Arc<str>>,
    pub dissented: Vec<Arc<str>>,
    pub failed: Vec<Arc<str>>,
}

/// What every request and every control call shares.
pub struct Shared {
    pub snapshot: ArcSwap<Snapshot>,
    /// Reads in parallel, writes alone; a request holds its half until its last executor
    /// answered (tokio's lock is fair, so a stream of reads cannot starve a write).
    pub order: Arc<RwLock<()>>,
    pub events: EventQueue,
    pub stats: PlaneStats,
    /// How common each feature is in requests every executor agreed on.
    pub sketch: crate::immune::SelfSketch,
    /// Requests that met an immune memory's response, per memory.
    pub matches: crate::immune::Matches,
    pub journal: Mutex<Journal>,
    /// The seq of the last write forwarded: writes are forwarded in seq order, each once every
    /// earlier one was (see `proxy`), so executors level with this have seen them all.
    pub forwarded: watch::Sender<u64>,
    /// Idempotency keys of recent writes and their outcomes.
    pub keys: Keys,
    /// Releases the write pause of a checkpoint, while one is held.
    pause: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    recent: Mutex<VecDeque<Recent>>,
    publish: Mutex<Publish>,
    /// The access log, when one is configured.
    pub access: ArcSwapOption<AccessLog>,
    /// Requests being answered, for the drain at shutdown.
    pub inflight: AtomicU64,
    pub stopping: watch::Sender<bool>,
    /// Names requests in refusals and events without telling their count.
    pub ids: RequestIds,
}

/// Request ids: a counter under a keyed hash (std's random SipHash keys), so that ids are
/// unique in practice and say nothing of how many requests came before.
pub struct RequestIds {
    keys: std::collections::hash_map::RandomState,
    next: AtomicU64,
}

impl RequestIds {
    fn new() -> RequestIds {
        RequestIds { keys: std::collections::hash_map::RandomState::new(), next: AtomicU64::new(0) }
    }

    pub fn next(&self) -> u64 {
        use std::hash::BuildHasher;
        self.keys.hash_one(self.next.fetch_add(1, Ordering::Relaxed))
    }
}

struct Publish {
    generation: u64,
    compiled: Compiled,
    stats: HashMap<Arc<str>, Arc<ExecutorStats>>,
}

impl Shared {
    /// The seq of the last write forwarded.
    pub fn head(&self) -> u64 {
        *self.forwarded.borrow()
    }

    pub fn remember(&self, recent: Recent, keep: usize) {
        let mut ring = self.recent.lock();
        ring.push_back(recent);
        while ring.len() > keep {
            ring.pop_front();
        }
    }
}

/// The data plane as the control plane drives it.
pub struct Plane {
    runtime: Option<tokio::runtime::Runtime>,
    shared: Arc<Shared>,
}

impl Plane {
    /// Start a runtime on ``threads`` workers. Nothing is served until a snapshot is published
    /// and a listener started. ``wake`` is the write end of the control plane's wake-up pipe.
    pub fn new(threads: usize, event_capacity: usize, wake: Option<OwnedFd>)
               -> Result<Plane, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("endosec-dataplane")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the data plane's runtime: {e}"))?;
        let (stopping, _) = watch::channel(false);
        let placeholder = Snapshot::empty();
        let shared = Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(placeholder),
            order: Arc::new(RwLock::new(())),
            events: EventQueue::new(event_capacity, wake),
            stats: PlaneStats::default(), sketch: Default::default(),
            matches: Default::default(),
            journal: Mutex::new(Journal::memory(Window { entries: 1, bytes: 1 })),
            forwarded: watch::channel(0).0,
            keys: Keys::new(Duration::from_secs(86_400), 100_000),
            pause: Mutex::new(None),
            recent: Mutex::new(VecDeque::new()),
            publish: Mutex::new(Publish { generation: 0, compiled: Compiled::default(),
                                          stats: HashMap::new() }),
            access: ArcSwapOption::empty(),
            inflight: AtomicU64::new(0),
            stopping,
            ids: RequestIds::new(),
        });
        Ok(Plane { runtime: Some(runtime), shared })
    }

    /// Keep the journal in ``dir`` (recovering what is there) instead of in memory only.
    /// Call before serving: everything recovered counts as forwarded, and every executor
    /// (pristine after a restart) is caught up before it votes.
    pub fn open_journal(&self, dir: &Path, sync: Sync, segment_bytes: u64)
                        -> Result<Recovery, String> {
        let bounds = {
            let snapshot = self.shared.snapshot.load();
            Window { entries: snapshot.journal.max_entries, bytes: snapshot.journal.max_bytes }
        };
        let (journal, recovery) = Journal::open(dir, bounds, sync, segment_bytes)?;
        let now = Instant::now();
        for (key, seq) in &recovery.keys {
            self.shared.keys.recovered(key.clone(), *seq, now);
        }
        let mut current = self.shared.journal.lock();
        *current = journal;
        self.shared.forwarded.send_replace(recovery.head);
        Ok(recovery)
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime.as_ref().expect("the runtime lives until the plane is dropped")
    }

    /// Swap in a new snapshot (JSON, see [`SnapshotSpec`]); returns its generation.
    pub fn publish(&self, json: &str) -> Result<u64, String> {
        let spec: SnapshotSpec = serde_json::from_str(json).map_err(|e| e.to_string())?;
        let mut p = self.shared.publish.lock();
        let generation = p.generation + 1;
        let previous = self.shared.snapshot.load();
        let Publish { compiled, stats, .. } = &mut *p;
        let snapshot = Snapshot::compile(spec, generation, &previous.executors, compiled,
                                         stats)?;
        self.shared.journal.lock().set_window(Window { entries: snapshot.journal.max_entries,
                                                       bytes: snapshot.journal.max_bytes });
        self.shared.keys.set_window(
            Duration::try_from_secs_f64(snapshot.journal.idempotency_window)
                .map_err(|_| "journal.idempotency_window: expected seconds >= 0".to_owned())?,
            snapshot.journal.idempotency_keys);
        let wanted = snapshot.access_log.as_deref().map(Target::parse);
        let current = self.shared.access.load().as_ref().map(|log| log.target.clone());
        if wanted != current {
            let log = wanted.map(AccessLog::open).transpose()?;
            self.shared.access.store(log.map(Arc::new));
        }
        self.shared.snapshot.store(Arc::new(snapshot));
        p.generation = generation;
        Ok(generation)
    }

    /// Start serving HTTP on ``addr`` (TLS when given); returns the bound address.
    pub fn listen_http(&self, addr: SocketAddr, tls: Option<Tls>) -> Result<SocketAddr, String> {
        self.serves(Protocol::Http)?;
        let _enter = self.runtime().enter();
        listener::start_http(self.shared.clone(), addr, tls)
    }

    /// Start serving DNS over UDP and TCP on ``addr``; returns the bound address.
    pub fn listen_dns(&self, addr: SocketAddr) -> Result<SocketAddr, String> {
        self.serves(Protocol::Dns)?;
        let _enter = self.runtime().enter();
        dns_listener::start_dns(self.shared.clone(), addr)
    }

    /// A listener serves only the protocol the published snapshot is for.
    fn serves(&self, protocol: Protocol) -> Result<(), String> {
        let published = self.shared.snapshot.load().protocol;
        if published == protocol {
            return Ok(());
        }
        Err(format!("the published snapshot is for {published:?}, not {protocol:?}")
            .to_lowercase())
    }

    /// Bring ``name`` level with the journal in the background; the result comes back as a
    /// [`CatchUpEvent`] carrying ``ticket``.
    pub fn catch_up(&self, name: &str, ticket: u64) {
        let shared = self.shared.clone();
        let name: Arc<str> = Arc::from(name);
        self.runtime().spawn(async move {
            let started = Instant::now();
            let result = catch_up(&shared, &name).await;
            if result.is_ok() {
                shared.stats.replay.observe(started.elapsed());
            }
            shared.events.push(Event::CatchUp(CatchUpEvent {
                ticket, executor: name, result, seconds: started.elapsed().as_secs_f64() }),
                &shared.stats);
        });
    }

    pub fn drain(&self, max: usize) -> Vec<Event> {
        self.shared.events.drain(max)
    }

    pub fn recent(&self) -> Vec<Recent> {
        self.shared.recent.lock().iter().cloned().collect()
    }

    /// ``(head, entries in memory, oldest seq kept, writes in doubt)`` of the journal.
    pub fn journal(&self) -> (u64, usize, u64, Vec<u64>) {
        let j = self.shared.journal.lock();
        (j.head(), j.len(), j.base(), j.in_doubt())
    }

    /// Every executor of the current snapshot with its journal position.
    pub fn executors(&self) -> Vec<(Arc<str>, u64)> {
        self.shared.snapshot.load().executors.values()
            .map(|e| (e.name.clone(), e.synced.load(Ordering::Acquire))).collect()
    }

    /// Per-executor statistics, by name.
    pub fn executor_stats(&self) -> Vec<(Arc<str>, Arc<ExecutorStats>)> {
        let p = self.shared.publish.lock();
        p.stats.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// Hold every write back (reads go on) from the moment the last one in flight finished,
    /// for at most ``hold``, so the control plane can take a consistent checkpoint: a
    /// ``paused`` event carries ``ticket`` and the seq of the last write forwarded. Released by
    /// [`Plane::resume_writes`] or when ``hold`` runs out.
    pub fn pause_writes(&self, ticket: u64, hold: Duration) {
        let shared = self.shared.clone();
        self.runtime().spawn(async move {
            let guard = shared.order.clone().write_owned().await;
            let (release, released) = tokio::sync::oneshot::channel();
            *shared.pause.lock() = Some(release);
            shared.events.push(Event::Paused { ticket, seq: shared.head() }, &shared.stats);
            let _ = tokio::time::timeout(hold, released).await;
            shared.pause.lock().take();
            drop(guard);
        });
    }

    /// Let writes go again after [`Plane::pause_writes`].
    pub fn resume_writes(&self) {
        if let Some(release) = self.shared.pause.lock().take() {
            let _ = release.send(());
        }
    }

    /// ``name`` was restored from a checkpoint taken at ``seq``: it has every write up to it.
    pub fn restored(&self, name: &str, seq: u64) -> Result<(), String> {
        let snapshot = self.shared.snapshot.load();
        let executor = snapshot.executors.get(name)
            .ok_or_else(|| format!("no executor named {name}"))?;
        executor.synced.store(seq, Ordering::Release);
        Ok(())
    }

    /// Forget the journal before ``seq`` (a durable checkpoint covers it).
    pub fn truncate_journal(&self, seq: u64) {
        self.shared.journal.lock().truncate_before(seq);
    }

    /// Stop accepting and wait (at most ``timeout``) for requests being answered.
    pub fn stop(&self, timeout: Duration) -> bool {
        self.shared.stopping.send_replace(true);
        let deadline = Instant::now() + timeout;
        while self.shared.inflight.load(Ordering::Acquire) > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }
}

impl Drop for Plane {
    fn drop(&mut self) {
        self.shared.stopping.send_replace(true);
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

/// Replay what ``name`` missed: most of it without blocking anyone, the last entries with the
/// write half of the order lock held, so that no write slips in between "level" and "votes".
async fn catch_up(shared: &Shared, name: &Arc<str>) -> Result<u64, String> {
    let executor = shared.snapshot.load().executors.get(name).cloned()
        .ok_or_else(|| format!("no executor named {name}"))?;
    if executor.stateless {
        return Ok(0);
    }
    let mut replayed = 0;
    // Unlocked passes while writes keep coming, then one pass that no write can overtake.
    for pass in 0..4 {
        let locked = pass == 3;
        let _guard = if locked { Some(shared.order.clone().write_owned().await) } else { None };
        loop {
            let until = shared.head();
            let synced = executor.synced.load(Ordering::Acquire);
            if synced >= until {
                break;
            }
            let since = shared.journal.lock().since(synced, until, READ_BATCH)
                .map_err(|gap| gap.to_string())?;
            let entries = match since {
                Since::Ready(entries) => entries,
                Since::Disk(read) => tokio::task::spawn_blocking(move || read.read()).await
                    .map_err(|e| e.to_string())??,
            };
            for entry in entries {
                replay(shared, &executor, &entry.payload, &entry.method, entry.seq).await?;
                replayed += 1;
            }
            if !locked {
                break;
            }
        }
    }
    Ok(replayed)
}

async fn replay(shared: &Shared, executor: &Executor, payload: &[u8], method: &[u8], seq: u64)
                -> Result<(), String> {
    let limits = shared.snapshot.load().limits;
    let ex = exchange(&executor.pool, payload, method, limits, executor.read_timeout).await;
    if let Err(e) = ex.outcome {
        return Err(format!("replaying write #{seq} failed: {}", e.kind));
    }
    executor.synced.store(seq, Ordering::Release);
    executor.stats.replays.fetch_add(1, Ordering::Relaxed);
    Ok(())
}
