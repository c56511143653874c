//! The benchmark's floor for a voting proxy: HTTP/1.1 keep-alive to the client and to each
//! backend, every request sent to every backend, each reply digested (status and body, BLAKE2b),
//! the client answered as soon as a majority agrees, stragglers read to the end and their
//! connections kept. Nothing else: no input agent beyond httparse, no canonicalising, no events,
//! no limits or timeouts. It measures what the machine allows a voting proxy, not a product.
//!
//!     bench-voter LISTEN BACKEND...

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use blake2::{Blake2b512, Digest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Idle keep-alive connections to one backend.
struct Backend {
    addr: SocketAddr,
    idle: Mutex<Vec<TcpStream>>,
}

/// One backend's whole reply and its digest.
struct Reply {
    bytes: Vec<u8>,
    digest: [u8; 64],
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (listen, backends) = args.split_first().expect("usage: bench-voter LISTEN BACKEND...");
    let backends: Arc<Vec<Backend>> = Arc::new(backends.iter().map(|a| Backend {
        addr: a.parse().expect("a backend is HOST:PORT"), idle: Mutex::new(Vec::new()) })
        .collect());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_io()
        .build().expect("a runtime");
    runtime.block_on(async move {
        let listener = TcpListener::bind(listen.as_str()).await.expect("cannot listen");
        println!("bench-voter: serving {}", listener.local_addr().expect("bound"));
        loop {
            let (stream, _) = listener.accept().await.expect("accept");
            let _ = stream.set_nodelay(true);
            tokio::spawn(client(stream, backends.clone()));
        }
    });
}

/// The end of the head and the body's length, once the head has arrived.
fn framing(buf: &[u8], response: bool) -> Option<(usize, usize)> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let (status, list) = if response {
        let mut r = httparse::Response::new(&mut headers);
        (r.parse(buf).ok()?, r.headers)
    } else {
        let mut r = httparse::Request::new(&mut headers);
        (r.parse(buf).ok()?, r.headers)
    };
    let httparse::Status::Complete(head) = status else { return None };
    let length = list.iter().find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok()).unwrap_or(0);
    Some((head, length))
}

/// Read one whole message (head and Content-Length body) off ``stream`` into ``buf``.
async fn message(stream: &mut TcpStream, buf: &mut Vec<u8>, response: bool) -> Option<usize> {
    loop {
        if let Some((head, length)) = framing(buf, response) {
            while buf.len() < head + length {
                if stream.read_buf(buf).await.ok()? == 0 {
                    return None;
                }
            }
            return Some(head);
        }
        if stream.read_buf(buf).await.ok()? == 0 {
            return None;
        }
    }
}

async fn client(mut stream: TcpStream, backends: Arc<Vec<Backend>>) {
    let mut buf = Vec::with_capacity(4096);
    let quorum = backends.len() / 2 + 1;
    loop {
        buf.clear();
        let Some(_) = message(&mut stream, &mut buf, false).await else { return };
        let request: Arc<[u8]> = buf.as_slice().into();
        let (tx, mut rx) = mpsc::channel(backends.len());
        for i in 0..backends.len() {
            let (backends, request, tx) = (backends.clone(), request.clone(), tx.clone());
            tokio::spawn(async move {
                let _ = tx.send(ask(&backends[i], &request).await).await;
            });
        }
        drop(tx);
        let mut seen: Vec<Reply> = Vec::new();
        let answer = loop {
            let Some(reply) = rx.recv().await else { break None };
            let Some(reply) = reply else { continue };
            if seen.iter().filter(|r| r.digest == reply.digest).count() + 1 >= quorum {
                break Some(reply.bytes);
            }
            seen.push(reply);
        };
        let answer = answer.unwrap_or_else(|| b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n"
            .to_vec());
        if stream.write_all(&answer).await.is_err() {
            return;
        }
    }
}

/// One exchange with one backend on a pooled connection (a fresh one if none is idle).
async fn ask(backend: &Backend, request: &[u8]) -> Option<Reply> {
    let pooled = backend.idle.lock().expect("not poisoned").pop();
    let mut conn = match pooled {
        Some(conn) => conn,
        None => TcpStream::connect(backend.addr).await.ok()?,
    };
    let _ = conn.set_nodelay(true);
    conn.write_all(request).await.ok()?;
    let mut buf = Vec::with_capacity(1024);
    let head = message(&mut conn, &mut buf, true).await?;
    backend.idle.lock().expect("not poisoned").push(conn);
    let status = &buf[..buf.iter().position(|&b| b == b'\r').unwrap_or(0)];
    let mut hasher = Blake2b512::new();
    hasher.update(status);
    hasher.update(&buf[head..]);
    Some(Reply { digest: hasher.finalize().into(), bytes: buf })
}
