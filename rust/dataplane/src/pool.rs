//! Keep-alive connections to one executor, reused only when it is safe.
//!
//! A pooled connection is checked before reuse (a non-blocking read must find nothing: no EOF,
//! no unsolicited bytes); it is never returned after an error or a partial exchange; and its
//! life is bounded by a number of requests and an age, so a server reloaded with new content
//! cannot stay hidden behind a connection to its old worker. At most ``max_connections``
//! exchanges run at once per executor (the others wait for a slot, within their deadline), so
//! a burst of clients cannot take every worker an executor has and starve its health checks.
//! DNS asks over UDP first, on [`Datagrams`]: one connected socket per exchange in flight.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use std::sync::Arc;

use parking_lot::Mutex;
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How many connections an executor gets, how long pooled ones may live and how many may wait.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PoolLimits {
    pub max_connections: usize,
    pub max_idle: usize,
    pub max_requests: u32,
    pub max_age: Duration,
}

impl Default for PoolLimits {
    fn default() -> PoolLimits {
        PoolLimits { max_connections: 32, max_idle: 32, max_requests: 1000,
                     max_age: Duration::from_secs(5) }
    }
}

/// One connection and what it has done so far.
#[derive(Debug)]
pub struct Conn {
    pub stream: TcpStream,
    born: Instant,
    uses: u32,
    /// Whether it came from the pool (a failure before any byte of the reply may be the
    /// executor closing an idle connection, not a fault of its own).
    pub reused: bool,
}

#[derive(Debug)]
pub struct Pool {
    addr: SocketAddr,
    connect_timeout: Duration,
    limits: PoolLimits,
    idle: Mutex<Vec<Conn>>,
    slots: Arc<Semaphore>,
}

impl Pool {
    pub fn new(addr: SocketAddr, connect_timeout: Duration, limits: PoolLimits) -> Pool {
        Pool { addr, connect_timeout, limits, idle: Mutex::new(Vec::new()),
               slots: Arc::new(Semaphore::new(limits.max_connections.max(1))) }
    }

    /// A slot for one exchange, held until it ends; None when none freed up by ``deadline``.
    pub async fn slot(&self, deadline: tokio::time::Instant) -> Option<OwnedSemaphorePermit> {
        // Mostly one is free: no timer for that.
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Some(permit);
        }
        tokio::time::timeout_at(deadline, self.slots.clone().acquire_owned()).await.ok()?.ok()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A live idle connection, if there is one; stale ones are dropped on the way.
    pub fn checkout(&self) -> Option<Conn> {
        loop {
            let mut conn = self.idle.lock().pop()?;
            if conn.born.elapsed() < self.limits.max_age && quiet(&conn.stream) {
                conn.reused = true;
                return Some(conn);
            }
        }
    }

    /// A fresh connection, within the connect timeout.
    pub async fn connect(&self) -> io::Result<Conn> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(self.addr))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        stream.set_nodelay(true)?;
        Ok(Conn { stream, born: Instant::now(), uses: 0, reused: false })
    }

    /// Give back a connection after a complete, kept-alive exchange.
    pub fn checkin(&self, mut conn: Conn) {
        conn.uses += 1;
        if conn.uses >= self.limits.max_requests || conn.born.elapsed() >= self.limits.max_age {
            return;
        }
        let mut idle = self.idle.lock();
        if idle.len() < self.limits.max_idle {
            idle.push(conn);
        }
    }

    /// How many connections wait in the pool.
    pub fn idle(&self) -> usize {
        self.idle.lock().len()
    }
}

/// Connected UDP sockets to one executor, each used by one exchange at a time, so a reply
/// reaches the exchange that asked (the kernel takes only the executor's datagrams on them).
#[derive(Debug)]
pub struct Datagrams {
    addr: SocketAddr,
    max_idle: usize,
    idle: Mutex<Vec<UdpSocket>>,
}

impl Datagrams {
    pub fn new(addr: SocketAddr, max_idle: usize) -> Datagrams {
        Datagrams { addr, max_idle, idle: Mutex::new(Vec::new()) }
    }

    /// An idle socket, or a new one connected to the executor.
    pub fn take(&self) -> io::Result<UdpSocket> {
        if let Some(socket) = self.idle.lock().pop() {
            return Ok(socket);
        }
        let any: SocketAddr = if self.addr.is_ipv4() { ([0, 0, 0, 0], 0).into() }
                              else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
        let socket = std::net::UdpSocket::bind(any)?;
        socket.connect(self.addr)?;
        socket.set_nonblocking(true)?;
        UdpSocket::from_std(socket)
    }

    /// Give back a socket after a complete exchange (never after a timeout: a late reply
    /// would wait on it).
    pub fn give(&self, socket: UdpSocket) {
        let mut idle = self.idle.lock();
        if idle.len() < self.max_idle {
            idle.push(socket);
        }
    }
}

/// True when nothing can be read now: the peer has neither closed nor sent anything unasked.
fn quiet(stream: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn a_connection_the_peer_closed_or_wrote_on_is_not_reused() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = Pool::new(listener.local_addr().unwrap(), Duration::from_secs(1),
                             PoolLimits::default());
        let a = pool.connect().await.unwrap();
        let (mut peer_a, _) = listener.accept().await.unwrap();
        let b = pool.connect().await.unwrap();
        let (peer_b, _) = listener.accept().await.unwrap();
        let c = pool.connect().await.unwrap();
        let (_peer_c, _) = listener.accept().await.unwrap();
        pool.checkin(a);
        pool.checkin(b);
        pool.checkin(c);
        peer_a.write_all(b"junk").await.unwrap();
        drop(peer_b);
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Only c is still quiet; b (closed) and a (unsolicited bytes) are dropped on the way.
        let got = pool.checkout().expect("the quiet connection");
        assert!(got.reused);
        assert!(pool.checkout().is_none());
        assert_eq!(pool.idle(), 0);
    }

    #[tokio::test]
    async fn connections_retire_after_their_request_budget_and_age() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let limits = PoolLimits { max_idle: 8, max_requests: 2,
                                  max_age: Duration::from_millis(100),
                                  ..PoolLimits::default() };
        let pool = Pool::new(listener.local_addr().unwrap(), Duration::from_secs(1), limits);
        let conn = pool.connect().await.unwrap();
        let _peer = listener.accept().await.unwrap();
        pool.checkin(conn);
        let conn = pool.checkout().unwrap();
        pool.checkin(conn); // second use: budget spent
        assert_eq!(pool.idle(), 0);
        let conn = pool.connect().await.unwrap();
        let _peer2 = listener.accept().await.unwrap();
        pool.checkin(conn);
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(pool.checkout().is_none(), "too old to reuse");
    }

    #[tokio::test]
    async fn exchanges_beyond_the_cap_wait_for_a_slot() {
        let limits = PoolLimits { max_connections: 2, ..PoolLimits::default() };
        let pool = Pool::new("127.0.0.1:9".parse().unwrap(), Duration::from_secs(1), limits);
        let soon = || tokio::time::Instant::now() + Duration::from_millis(50);
        let a = pool.slot(soon()).await.expect("a first slot");
        let _b = pool.slot(soon()).await.expect("a second slot");
        assert!(pool.slot(soon()).await.is_none(), "the third waits, then gives up");
        drop(a);
        assert!(pool.slot(soon()).await.is_some(), "a freed slot is taken");
    }
}
