//! The client-facing HTTP/1.1 listener: the input agent's edge.
//!
//! Each connection feeds bytes to the strict [`RequestReader`] and answers one request at a
//! time (so pipelined replies stay in order); anything ambiguous is refused with the reader's
//! status before a byte of it is forwarded, and what the snapshot's [`http::Admission`] does
//! not serve is refused too (the connection stays open: the request was read whole). Slow clients are bounded: a request must arrive
//! whole within the header timeout of its first byte (else 408), an idle connection closes
//! after the idle timeout, reading pauses while a request is answered, and connections beyond
//! the cap get 503 at once. TLS (rustls) wraps the same loop.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::accesslog::Record;
use crate::http::{self, Next, RequestReader};
use crate::plane::Shared;
use crate::proxy;

/// A certificate chain and key for the client listener.
#[derive(Clone)]
pub struct Tls {
    acceptor: TlsAcceptor,
}

impl Tls {
    /// Load PEM files; the error names which file is wrong and why.
    pub fn load(cert: &Path, key: &Path) -> Result<Tls, String> {
        let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
        let cert_pem = read(cert)?;
        let key_pem = read(key)?;
        let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{}: not a PEM certificate chain: {e}", cert.display()))?;
        if certs.is_empty() {
            return Err(format!("{}: no certificate in the file", cert.display()));
        }
        let key_der = rustls_pemfile::private_key(&mut key_pem.as_slice())
            .map_err(|e| format!("{}: not a PEM private key: {e}", key.display()))?
            .ok_or_else(|| format!("{}: no private key in the file", key.display()))?;
        // ring, not aws-lc: no C toolchain beyond cc is needed to build; it lacks only the
        // post-quantum key exchanges, for which rustls marks it deprecated.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(certs, key_der)
            .map_err(|e| format!("{} and {}: {e}", cert.display(), key.display()))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls { acceptor: TlsAcceptor::from(Arc::new(config)) })
    }
}

/// Bind ``addr`` now (so errors come back at once) and serve it until the plane stops.
pub fn start_http(shared: Arc<Shared>, addr: SocketAddr, tls: Option<Tls>)
                  -> Result<SocketAddr, String> {
    let std_listener = std::net::TcpListener::bind(addr)
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    std_listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let bound = std_listener.local_addr().map_err(|e| e.to_string())?;
    let listener = TcpListener::from_std(std_listener).map_err(|e| e.to_string())?;
    tokio::spawn(accept(shared, listener, tls));
    Ok(bound)
}

async fn accept(shared: Arc<Shared>, listener: TcpListener, tls: Option<Tls>) {
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
        let count = Leave(shared.clone());
        tokio::spawn(connection(count, open, stream, peer, tls.clone()));
    }
}

async fn connection(count: Leave, open: u64, mut stream: TcpStream, peer: SocketAddr,
                    tls: Option<Tls>) {
    let shared = &count.0;
    let snapshot = shared.snapshot.load_full();
    if usize::try_from(open).unwrap_or(usize::MAX) > snapshot.max_connections {
        shared.stats.rejected("503");
        let reply = http::error_response(503, &[("error", "too many connections")], false);
        let _ = stream.write_all(&reply).await;
        return;
    }
    match tls {
        None => serve(shared, stream, peer).await,
        Some(tls) => {
            let handshake = tokio::time::timeout(snapshot.header_timeout,
                                                 tls.acceptor.accept(stream));
            if let Ok(Ok(stream)) = handshake.await {
                serve(shared, stream, peer).await;
            }
        }
    }
}

/// Counts a connection out when it ends, however it ends.
pub(crate) struct Leave(pub(crate) Arc<Shared>);

impl Drop for Leave {
    fn drop(&mut self) {
        self.0.stats.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts a request out when its reply is ready, however the request ends.
pub(crate) struct InFlight<'a>(pub(crate) &'a Shared);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(shared: &Arc<Shared>, mut stream: S,
                                                  peer: SocketAddr) {
    let snapshot = shared.snapshot.load_full();
    let mut reader = RequestReader::new(snapshot.limits);
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut stopping = shared.stopping.subscribe();
    let mut idle_since = tokio::time::Instant::now();
    let mut partial_since: Option<tokio::time::Instant> = None;
    let mut continued = false;
    loop {
        match reader.next_event() {
            Err(refusal) => {
                shared.stats.rejected(&refusal.status.to_string());
                log(shared, peer, "", "", refusal.status, 0, partial_since, "refused");
                let reply = http::refusal_response(&refusal, false);
                let _ = stream.write_all(&reply).await;
                let _ = stream.shutdown().await;
                return;
            }
            Ok(Next::Closed) => {
                let _ = stream.shutdown().await;
                return;
            }
            Ok(Next::Request(mut request)) => {
                let snap = shared.snapshot.load();
                let held = snap.refused_clients.contains(&peer.ip());
                let keep_alive = request.keep_alive && !held;
                let logged = shared.access.load().is_some().then(|| {
                    (String::from_utf8_lossy(&request.method).into_owned(),
                     String::from_utf8_lossy(&request.target).split('?').next()
                         .unwrap_or("").to_owned())
                });
                let started = partial_since;
                let admitted = if held {
                    Err(http::Refusal { status: 429, allow: None,
                                        reason: "this client caused repeated dissent".into() })
                } else {
                    snap.admission.admit(&mut request)
                };
                drop(snap);
                let (status, bytes, outcome) = match admitted {
                    Err(refusal) => {
                        shared.stats.rejected(&refusal.status.to_string());
                        (refusal.status, http::refusal_response(&refusal, keep_alive), "refused")
                    }
                    Ok(()) => {
                        shared.inflight.fetch_add(1, Ordering::AcqRel);
                        let reply = {
                            let _inflight = InFlight(shared);
                            proxy::serve(shared.clone(), request, Some(peer)).await
                        };
                        (reply.status, reply.bytes, reply.outcome.as_str())
                    }
                };
                if status >= 400 {
                    shared.stats.client_errors.error(peer.ip());
                }
                if let Some((method, path)) = logged {
                    log(shared, peer, &method, &path, status, bytes.len(), started, outcome);
                }
                if stream.write_all(&bytes).await.is_err() {
                    return;
                }
                let stop = *stopping.borrow();
                if !keep_alive || stop {
                    let _ = stream.shutdown().await;
                    return;
                }
                continued = false;
                idle_since = tokio::time::Instant::now();
                partial_since = (reader.buffered() > 0).then_some(idle_since);
            }
            Ok(Next::NeedData) => {
                if reader.expects_continue() && !continued {
                    continued = true;
                    if stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.is_err() {
                        return;
                    }
                }
                let deadline = match partial_since {
                    Some(t) => t + snapshot.header_timeout,
                    None => idle_since + snapshot.idle_timeout,
                };
                buf.clear();
                let read = tokio::select! {
                    read = tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)) => read,
                    () = stopped(&mut stopping), if partial_since.is_none() => {
                        let _ = stream.shutdown().await;
                        return;
                    }
                };
                match read {
                    Err(_) => {
                        if partial_since.is_some() {
                            shared.stats.rejected("408");
                            log(shared, peer, "", "", 408, 0, partial_since, "refused");
                            let reply = http::error_response(
                                408, &[("error", "request not received in time")], false);
                            let _ = stream.write_all(&reply).await;
                        }
                        let _ = stream.shutdown().await;
                        return;
                    }
                    Ok(Err(_)) => return,
                    Ok(Ok(0)) => reader.receive_eof(),
                    Ok(Ok(_)) => {
                        partial_since.get_or_insert_with(tokio::time::Instant::now);
                        reader.receive(&buf);
                    }
                }
            }
        }
    }
}

/// Resolves once the plane is stopping.
pub(crate) async fn stopped(stopping: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stopping.wait_for(|stop| *stop).await;
}

/// One access-log line, when the log is on; latency counts from the request's first byte.
#[allow(clippy::too_many_arguments)]
fn log(shared: &Shared, peer: SocketAddr, method: &str, path: &str, status: u16, bytes: usize,
       since: Option<tokio::time::Instant>, outcome: &'static str) {
    if let Some(access) = shared.access.load().as_ref() {
        access.log(Record { time: std::time::SystemTime::now(), client: Some(peer),
                            method: method.to_owned(), path: path.to_owned(), status, bytes,
                            latency: since.map(|t| t.elapsed()).unwrap_or_default(), outcome });
    }
}
