//! One HTTP exchange with one executor: send the request, read one response, within bounds.
//!
//! A request on a reused connection that the executor closed before sending a byte of its reply
//! is sent once more on a fresh connection: the executor closed an idle connection as we reused
//! it, which is not its fault (and it did not act on a request it never read).

use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::http::{Limits, Response, ResponseReader, UpstreamError};
use crate::model::ErrorKind;
use crate::pool::{Conn, Pool};

/// What came back from one executor.
#[derive(Debug)]
pub struct Exchange {
    pub outcome: Result<Response, UpstreamError>,
    pub latency: Duration,
}

enum Attempt {
    Done(Result<Response, UpstreamError>),
    /// The reused connection was closed under us before any reply byte: try a fresh one.
    Stale,
}

/// Send ``payload`` (answering ``method``) and read the response.
pub async fn exchange(pool: &Pool, payload: &[u8], method: &[u8], limits: Limits,
                      read_timeout: Duration) -> Exchange {
    let started = Instant::now();
    let deadline = tokio::time::Instant::from_std(started + read_timeout);
    let mut conn = pool.checkout();
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
        match tokio::time::timeout_at(deadline, attempt(pool, current, payload, method, limits))
            .await
        {
            Err(_) => break Err(UpstreamError { kind: ErrorKind::Timeout,
                                                reason: format!("no complete reply within {:?}",
                                                                read_timeout) }),
            Ok(Attempt::Done(result)) => break result,
            Ok(Attempt::Stale) if reused => continue,
            Ok(Attempt::Stale) => break Err(UpstreamError {
                kind: ErrorKind::Reset, reason: "closed before responding".into() }),
        }
    };
    Exchange { outcome, latency: started.elapsed() }
}

async fn attempt(pool: &Pool, mut conn: Conn, payload: &[u8], method: &[u8], limits: Limits)
                 -> Attempt {
    let reset = |e: std::io::Error| UpstreamError { kind: ErrorKind::Reset,
                                                    reason: e.to_string() };
    if let Err(e) = conn.stream.write_all(payload).await {
        return if conn.reused { Attempt::Stale } else { Attempt::Done(Err(reset(e))) };
    }
    let mut reader = ResponseReader::new(limits, method);
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut received = false;
    loop {
        buf.clear();
        match conn.stream.read_buf(&mut buf).await {
            Ok(0) => {
                if !received {
                    return Attempt::Stale;
                }
                reader.receive_eof();
            }
            Ok(_) => {
                received = true;
                reader.receive(&buf);
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
