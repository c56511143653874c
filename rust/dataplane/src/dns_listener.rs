//! The client-facing DNS listeners: UDP and TCP on one address, the input agent's edge.
//!
//! Every message goes through [`dns::parse_query`] before anything is forwarded: a refused
//! query gets its FORMERR/NOTIMP/REFUSED/BADVERS answer from here, responses and runts are
//! dropped (over TCP the connection is closed), and each refusal is counted by its rcode or
//! as ``dropped``. UDP queries are answered concurrently up to ``dns.max_udp_inflight``;
//! beyond it they are dropped and counted as ``overload``, as a loaded server drops
//! datagrams. A TCP connection is answered one message at a time (replies stay in order), must
//! deliver a started message within the header timeout, closes after the idle timeout, and
//! connections beyond the cap are closed at once (counted as ``connections``).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::oneshot;

use crate::dns::{self, MAX_TCP_MESSAGE};
use crate::dns_proxy::{self, Transport};
use crate::listener::{stopped, InFlight, Leave};
use crate::plane::Shared;

/// Port 0: the TCP port chosen may be taken for UDP; try that many ports.
const BIND_RETRIES: usize = 5;

/// Bind TCP and UDP on ``addr`` now (so errors come back at once) and serve both until the
/// plane stops; port 0 picks one port free for both.
pub fn start_dns(shared: Arc<Shared>, addr: SocketAddr) -> Result<SocketAddr, String> {
    let mut attempt = 0;
    let (tcp, udp) = loop {
        attempt += 1;
        let tcp = std::net::TcpListener::bind(addr)
            .map_err(|e| format!("cannot listen on {addr} (TCP): {e}"))?;
        let bound = tcp.local_addr().map_err(|e| e.to_string())?;
        match std::net::UdpSocket::bind(bound) {
            Ok(udp) => break (tcp, udp),
            Err(e) if addr.port() == 0 && e.kind() == std::io::ErrorKind::AddrInUse
                && attempt < BIND_RETRIES => continue,
            Err(e) => return Err(format!("cannot listen on {bound} (UDP): {e}")),
        }
    };
    let bound = tcp.local_addr().map_err(|e| e.to_string())?;
    tcp.set_nonblocking(true).map_err(|e| e.to_string())?;
    udp.set_nonblocking(true).map_err(|e| e.to_string())?;
    let tcp = TcpListener::from_std(tcp).map_err(|e| e.to_string())?;
    let udp = UdpSocket::from_std(udp).map_err(|e| e.to_string())?;
    tokio::spawn(accept(shared.clone(), tcp));
    tokio::spawn(datagrams(shared, Arc::new(udp)));
    Ok(bound)
}

async fn datagrams(shared: Arc<Shared>, socket: Arc<UdpSocket>) {
    let mut stopping = shared.stopping.subscribe();
    let answering = Arc::new(AtomicUsize::new(0));
    let mut buf = vec![0u8; MAX_TCP_MESSAGE];
    loop {
        let (n, peer) = tokio::select! {
            received = socket.recv_from(&mut buf) => match received {
                Ok(pair) => pair,
                Err(_) => continue, // an ICMP error for an earlier reply: nothing to do
            },
            () = stopped(&mut stopping) => return,
        };
        let settings = shared.snapshot.load().dns.clone();
        let query = match dns::parse_query(Bytes::copy_from_slice(&buf[..n]), &settings) {
            Ok(query) => query,
            Err(refusal) => {
                shared.stats.rejected(&refusal.label());
                if let Some(reply) = refusal.reply(&settings) {
                    let _ = socket.send_to(&reply, peer).await;
                }
                continue;
            }
        };
        if answering.load(Ordering::Acquire) >= settings.max_udp_inflight {
            shared.stats.rejected("overload");
            continue;
        }
        answering.fetch_add(1, Ordering::AcqRel);
        shared.inflight.fetch_add(1, Ordering::AcqRel);
        let (shared, socket, answering) = (shared.clone(), socket.clone(), answering.clone());
        tokio::spawn(async move {
            let slot = Slot(answering);
            let inflight = Answering(shared.clone());
            // A datagram that cannot be sent at once is lost, as on any network.
            let respond = move |reply: Vec<u8>| {
                let _ = socket.try_send_to(&reply, peer);
                drop((slot, inflight));
            };
            dns_proxy::serve(shared, query, Transport::Udp, peer, Box::new(respond)).await;
        });
    }
}

/// Gives a UDP query's slot back once it is answered, however that ends.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts a UDP query out of the requests in flight once it is answered.
struct Answering(Arc<Shared>);

impl Drop for Answering {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn accept(shared: Arc<Shared>, listener: TcpListener) {
    let mut stopping = shared.stopping.subscribe();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(_) => {
                    // Out of descriptors or a transient error: back off a little.
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    continue;
                }
            },
            () = stopped(&mut stopping) => return,
        };
        let _ = stream.set_nodelay(true);
        // Counted here, in accept order, so the cap refuses the newest connections.
        let open = shared.stats.connections.fetch_add(1, Ordering::AcqRel) + 1;
        tokio::spawn(connection(Leave(shared.clone()), open, stream, peer));
    }
}

async fn connection(count: Leave, open: u64, mut stream: TcpStream, peer: SocketAddr) {
    let shared = &count.0;
    let snapshot = shared.snapshot.load_full();
    if usize::try_from(open).unwrap_or(usize::MAX) > snapshot.max_connections {
        shared.stats.rejected("connections");
        return;
    }
    if snapshot.refused_clients.contains(&peer.ip()) {
        shared.stats.rejected("client");
        return;
    }
    let mut stopping = shared.stopping.subscribe();
    let mut buf = BytesMut::with_capacity(1024);
    let mut idle_since = tokio::time::Instant::now();
    let mut partial_since = None;
    loop {
        if let Some(message) = next_message(&mut buf) {
            let settings = shared.snapshot.load().dns.clone();
            let reply = match dns::parse_query(message, &settings) {
                Ok(query) => {
                    shared.inflight.fetch_add(1, Ordering::AcqRel);
                    let _inflight = InFlight(shared);
                    let (tx, rx) = oneshot::channel();
                    let respond = Box::new(move |reply| { let _ = tx.send(reply); });
                    tokio::spawn(dns_proxy::serve(shared.clone(), query, Transport::Tcp, peer,
                                                  respond));
                    match rx.await {
                        Ok(reply) => reply,
                        Err(_) => return, // the round ended without an answer: a bug
                    }
                }
                Err(refusal) => {
                    shared.stats.rejected(&refusal.label());
                    match refusal.reply(&settings) {
                        Some(reply) => reply,
                        None => return, // a response or a runt: nothing more is read
                    }
                }
            };
            let mut framed = Vec::with_capacity(2 + reply.len());
            framed.extend_from_slice(&u16::try_from(reply.len())
                .expect("replies are encoded within the length prefix's limit").to_be_bytes());
            framed.extend_from_slice(&reply);
            if stream.write_all(&framed).await.is_err() || *stopping.borrow() {
                let _ = stream.shutdown().await;
                return;
            }
            idle_since = tokio::time::Instant::now();
            partial_since = (!buf.is_empty()).then_some(idle_since);
            continue;
        }
        let deadline = match partial_since {
            Some(t) => t + snapshot.header_timeout,
            None => idle_since + snapshot.idle_timeout,
        };
        let read = tokio::select! {
            read = tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)) => read,
            () = stopped(&mut stopping), if partial_since.is_none() => {
                let _ = stream.shutdown().await;
                return;
            }
        };
        match read {
            Ok(Ok(n)) if n > 0 => {
                partial_since.get_or_insert_with(tokio::time::Instant::now);
            }
            // A timeout, an error or the client's end: close.
            _ => {
                let _ = stream.shutdown().await;
                return;
            }
        }
    }
}

/// The next whole length-prefixed message in ``buf``, if it has arrived.
fn next_message(buf: &mut BytesMut) -> Option<Bytes> {
    if buf.len() < 2 {
        return None;
    }
    let whole = 2 + usize::from(u16::from_be_bytes([buf[0], buf[1]]));
    if buf.len() < whole {
        buf.reserve(whole - buf.len());
        return None;
    }
    buf.advance(2);
    Some(buf.split_to(whole - 2).freeze())
}
