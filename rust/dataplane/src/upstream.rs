//! One exchange with one executor: send the request, read one reply, within bounds.
//!
//! A request on a reused connection that the executor closed before sending a byte of its reply
//! is sent once more on a fresh connection: the executor closed an idle connection as we reused
//! it, which is not its fault (and it did not act on a request it never read).

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::http::{Limits, Response, ResponseReader, UpstreamError};
use crate::model::ErrorKind;
use crate::pool::{Conn, Pool};

/// What came back from one executor: its reply or why there is none, how long it took, and
/// how much of that the executor had the request (``service``: from the last try's first byte
/// sent, so without the wait for a connection slot or a connect).
#[derive(Debug)]
pub struct Asked<R> {
    pub outcome: Result<R, UpstreamError>,
    pub latency: Duration,
    pub service: Duration,
}

/// One try on one connection.
pub enum Attempt<R> {
    Done(Result<R, UpstreamError>),
    /// The reused connection was closed under us before any reply byte: try a fresh one.
    Stale,
}

/// One exchange with an executor, whatever the protocol: a slot in its pool, a pooled or fresh
/// connection, ``attempt`` on it within ``read_timeout``, and once more on a fresh connection
/// if a reused one turns out stale.
pub async fn exchange_with<R, F, Fut>(pool: &Pool, read_timeout: Duration, mut attempt: F)
                                      -> Asked<R>
where F: FnMut(Conn) -> Fut, Fut: std::future::Future<Output = Attempt<R>> {
    let started = Instant::now();
    let deadline = tokio::time::Instant::from_std(started + read_timeout);
    let timeout = || UpstreamError { kind: ErrorKind::Timeout,
                                     reason: format!("no complete reply within {read_timeout:?}") };
    let Some(_slot) = pool.slot(deadline).await else {
        return Asked { outcome: Err(timeout()), latency: started.elapsed(),
                       service: Duration::ZERO };
    };
    let mut conn = pool.checkout();
    let mut sent = Instant::now();
    let outcome = loop {
        let current = match conn.take() {
            Some(c) => c,
            None => match pool.connect().await {
                Ok(c) => c,
                Err(e) => break Err(UpstreamError { kind: ErrorKind::Connect,
                                                    reason: e.to_string() }),
            },
        };
        let reused = current.reused;
        sent = Instant::now();
        match tokio::time::timeout_at(deadline, attempt(current)).await {
            Err(_) => break Err(timeout()),
            Ok(Attempt::Done(result)) => break result,
            Ok(Attempt::Stale) if reused => continue,
            Ok(Attempt::Stale) => break Err(UpstreamError {
                kind: ErrorKind::Reset, reason: "closed before responding".into() }),
        }
    };
    Asked { outcome, latency: started.elapsed(), service: sent.elapsed() }
}

/// Room made in the reader's buffer before each read: most replies fit in one. The buffer
/// lives as long as the reply (its head and body are slices of it), so it is kept small.
const READ_ROOM: usize = 4096;

/// Send ``payload`` (answering ``method``) and read the HTTP response.
pub async fn exchange(pool: &Pool, payload: &[u8], method: &[u8], limits: Limits,
                      read_timeout: Duration) -> Asked<Response> {
    exchange_with(pool, read_timeout, |conn| attempt(pool, conn, payload, method, limits)).await
}

async fn attempt(pool: &Pool, mut conn: Conn, payload: &[u8], method: &[u8], limits: Limits)
                 -> Attempt<Response> {
    let reset = |e: std::io::Error| UpstreamError { kind: ErrorKind::Reset,
                                                    reason: e.to_string() };
    if let Err(e) = conn.stream.write_all(payload).await {
        return if conn.reused { Attempt::Stale } else { Attempt::Done(Err(reset(e))) };
    }
    let mut reader = ResponseReader::new(limits, method);
    let mut received = false;
    loop {
        match conn.stream.read_buf(reader.spare(READ_ROOM)).await {
            Ok(0) => {
                if !received {
                    return Attempt::Stale;
                }
                reader.receive_eof();
            }
            Ok(n) => {
                received = true;
                reader.received(n);
            }
            Err(e) => {
                return if received || !conn.reused { Attempt::Done(Err(reset(e))) }
                       else { Attempt::Stale };
            }
        }
        match reader.next_event() {
            Ok(None) => {}
            Ok(Some(response)) => {
                if response.keep_alive {
                    pool.checkin(conn);
                }
                return Attempt::Done(Ok(response));
            }
            Err(e) => return Attempt::Done(Err(e)),
        }
    }
}
