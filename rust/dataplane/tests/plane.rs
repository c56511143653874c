//! The data plane end to end on loopback: real sockets, executors played by small servers.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use endosec_dataplane::events::Event;
use endosec_dataplane::plane::Plane;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The body for a request target and the request's number on its connection.
type Body = Arc<dyn Fn(&str, usize) -> String + Send + Sync>;

/// How a fake executor answers.
#[derive(Clone)]
struct Behaviour {
    body: Body,
    delay: Duration,
    closing: Closing,
}

/// How a fake executor ends keep-alive connections without saying so.
#[derive(Clone, Copy)]
enum Closing {
    Never,
    /// Right after every reply.
    AfterReply,
    /// When a request arrives on a connection it already answered, without answering it: a
    /// server that gave up on an idle connection just as the gateway reused it (a FIN, or an
    /// RST with ``reset``).
    OnReuse { reset: bool },
    /// Once the connection was idle this long (a server's keep-alive timeout).
    WhenIdle(Duration),
}

impl Behaviour {
    fn fixed(body: &'static str) -> Behaviour {
        Behaviour { body: Arc::new(move |_, _| body.to_owned()), delay: Duration::ZERO,
                    closing: Closing::Never }
    }
}

struct Fake {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    /// Connections it closed under the gateway (as ``Closing`` says).
    closed: Arc<AtomicUsize>,
}

/// A keep-alive HTTP/1.1 server answering every request with a JSON body.
async fn fake(behaviour: Behaviour) -> Fake {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(AtomicUsize::new(0));
    let (counter, closes) = (requests.clone(), closed.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            let behaviour = behaviour.clone();
            let (counter, closes) = (counter.clone(), closes.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let mut on_this_connection = 0;
                loop {
                    let Some(end) = find(&buf, b"\r\n\r\n") else {
                        let read = match behaviour.closing {
                            Closing::WhenIdle(idle) if buf.is_empty() && on_this_connection > 0 =>
                                match tokio::time::timeout(idle, stream.read(&mut chunk)).await {
                                    Ok(read) => read,
                                    Err(_) => {
                                        closes.fetch_add(1, Ordering::SeqCst);
                                        return;
                                    }
                                },
                            _ => stream.read(&mut chunk).await,
                        };
                        match read {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    if let (Closing::OnReuse { reset }, 1..) = (behaviour.closing,
                                                               on_this_connection) {
                        if reset {
                            // A zero linger never blocks on drop: it sends RST at once.
                            #[allow(deprecated)]
                            let _ = stream.set_linger(Some(Duration::ZERO));
                        }
                        closes.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    let length = head.lines()
                        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:")
                                  .map(|v| v.trim().parse::<usize>().unwrap()))
                        .unwrap_or(0);
                    while buf.len() < end + 4 + length {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..end + 4 + length);
                    counter.fetch_add(1, Ordering::SeqCst);
                    on_this_connection += 1;
                    let target = head.split(' ').nth(1).unwrap_or("").to_owned();
                    tokio::time::sleep(behaviour.delay).await;
                    let body = (behaviour.body)(&target, on_this_connection);
                    let reply = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                                         content-length: {}\r\n\r\n{}", body.len(), body);
                    if stream.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                    if let Closing::AfterReply = behaviour.closing {
                        return;
                    }
                }
            });
        }
    });
    Fake { addr, requests, closed }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn snapshot(fakes: &[(&str, &Fake)], voters: &[&str], floor: usize, extra: &str) -> String {
    let executors: Vec<String> = fakes.iter().map(|(name, f)| format!(
        r#"{{"name":"{name}","host":"127.0.0.1","port":{},"epoch":1,"connect_timeout":1.0,
            "read_timeout":2.0,"stateless":false}}"#, f.addr.port())).collect();
    let voters: Vec<String> = voters.iter().map(|v| format!("\"{v}\"")).collect();
    format!(r#"{{"limits":{{"max_header_bytes":16384,"max_headers":100,"max_request_body":1048576,
        "max_response_body":16777216,"client_header_timeout":1.0,"client_idle_timeout":5.0,
        "max_connections":64,"upstream_max_requests":1000,"upstream_max_age":5.0}},
        "canonicalise":{{}},"arbiter":{{"strategy":"majority"}},
        "journal":{{"max_entries":100,"max_bytes":1000000}},"floor":{floor},
        "executors":[{}],"voters":[{}]{extra}}}"#, executors.join(","), voters.join(","))
}

fn plane() -> Plane {
    Plane::new(2, 1024, None).unwrap()
}

/// One request on a fresh connection; the whole reply.
fn request(addr: SocketAddr, raw: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(raw.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn get(addr: SocketAddr, path: &str) -> String {
    request(addr, &format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"))
}

fn verdicts(plane: &Plane) -> Vec<endosec_dataplane::events::VerdictEvent> {
    plane.drain(100).into_iter().filter_map(|e| match e {
        Event::Verdict(v) => Some(*v),
        _ => None,
    }).collect()
}

fn settle<T>(mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "condition not reached in time");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn start(fakes: &[(&str, &Fake)], voters: &[&str], floor: usize, extra: &str)
         -> (Plane, SocketAddr) {
    let plane = plane();
    plane.publish(&snapshot(fakes, voters, floor, extra)).unwrap();
    let addr = plane.listen_http("127.0.0.1:0".parse().unwrap(), None).unwrap();
    (plane, addr)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn agreement_answers_and_only_counts() {
    let rt = runtime();
    let _g = rt.enter();
    let fakes: Vec<Fake> = rt.block_on(async {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(fake(Behaviour::fixed(r#"{"ok":true}"#)).await);
        }
        v
    });
    let named: Vec<(&str, &Fake)> = vec![("a", &fakes[0]), ("b", &fakes[1]), ("c", &fakes[2])];
    let (plane, addr) = start(&named, &["a", "b", "c"], 2, "");
    std::thread::spawn(move || rt.block_on(std::future::pending::<()>()));
    let reply = get(addr, "/x");
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    assert!(reply.ends_with(r#"{"ok":true}"#));
    let agreements = settle(|| {
        let stats = plane.executor_stats();
        let total: u64 = stats.iter().map(|(_, s)| s.take_agreements()).sum();
        (total > 0).then_some(total)
    });
    assert_eq!(agreements, 3);
    assert!(verdicts(&plane).is_empty(), "a clean agreement is not an event");
}

#[test]
fn a_dissenter_is_outvoted_and_reported() {
    let rt = runtime();
    let _g = rt.enter();
    let fakes: Vec<Fake> = rt.block_on(async {
        vec![fake(Behaviour::fixed(r#"{"n":1}"#)).await, fake(Behaviour::fixed(r#"{"n":1}"#)).await,
             fake(Behaviour::fixed(r#"{"n":"leak"}"#)).await]
    });
    let named: Vec<(&str, &Fake)> = vec![("a", &fakes[0]), ("b", &fakes[1]), ("c", &fakes[2])];
    let (plane, addr) = start(&named, &["a", "b", "c"], 2, "");
    std::thread::spawn(move || rt.block_on(std::future::pending::<()>()));
    let reply = get(addr, "/x");
    assert!(reply.ends_with(r#"{"n":1}"#), "{reply}");
    let v = settle(|| verdicts(&plane).pop());
    assert_eq!(&*v.dissented[0], "c");
    assert_eq!(v.agreed.len(), 2);
    assert_eq!(v.digests.len(), 3);
}

/// Lag counts per executor, taken (see ``Lags``): all on route "GET /x" or none.
fn lags(plane: &Plane) -> std::collections::HashMap<String, Vec<u64>> {
    plane.executor_stats().into_iter().map(|(n, s)| {
        let mut routes = s.lags.take();
        assert!(routes.len() <= 1 && routes.iter().all(|(r, _)| r == "GET /x"), "{routes:?}");
        (n.to_string(), routes.pop().map(|(_, bins)| bins).unwrap_or_default())
    }).collect()
}

#[test]
fn lags_come_from_unanimous_rounds_only_and_show_the_slow_voter() {
    use endosec_dataplane::stats::LAG_SIDE;
    let rt = runtime();
    let _g = rt.enter();
    let fakes: Vec<Fake> = rt.block_on(async {
        let slow = Behaviour { delay: Duration::from_millis(5), ..Behaviour::fixed("{}") };
        let odd = Behaviour { body: Arc::new(|target, _| {
            if target == "/odd" { r#"{"n":2}"#.to_owned() } else { "{}".to_owned() } }),
            ..Behaviour::fixed("{}") };
        vec![fake(Behaviour::fixed("{}")).await, fake(odd).await, fake(slow).await]
    });
    let named: Vec<(&str, &Fake)> = vec![("a", &fakes[0]), ("b", &fakes[1]), ("c", &fakes[2])];
    let (plane, addr) = start(&named, &["a", "b", "c"], 2, "");
    std::thread::spawn(move || rt.block_on(std::future::pending::<()>()));
    for _ in 0..3 {
        assert!(get(addr, "/odd").starts_with("HTTP/1.1 200"));  // b dissents: no lags
    }
    settle(|| (plane.recent().len() == 3).then_some(()));
    assert!(lags(&plane).values().all(|bins| bins.is_empty()));
    for _ in 0..5 {
        assert!(get(addr, "/x").starts_with("HTTP/1.1 200"));
    }
    // a round's lags land once its straggler is judged, just after the reply: add them up
    let mut taken: std::collections::HashMap<String, Vec<u64>> = std::collections::HashMap::new();
    settle(|| {
        for (name, bins) in lags(&plane) {
            let sum = taken.entry(name).or_insert_with(|| vec![0; 2 * LAG_SIDE + 1]);
            sum.iter_mut().zip(bins).for_each(|(s, n)| *s += n);
        }
        taken.get("c").is_some_and(|b| b.iter().sum::<u64>() >= 3).then_some(())
    });
    // c answers 5 ms after the fastest of the others: beyond the last bin (2 ms); a and b
    // never that far behind
    let c: u64 = taken["c"].iter().sum();
    assert_eq!(taken["c"][2 * LAG_SIDE], c, "{:?}", taken["c"]);
    for fast in ["a", "b"] {
        assert_eq!(taken[fast][2 * LAG_SIDE], 0, "{fast}: {:?}", taken[fast]);
    }
}

#[test]
fn a_discounted_voter_cannot_carry_an_answer() {
    let rt = runtime();
    let _g = rt.enter();
    let fakes: Vec<Fake> = rt.block_on(async {
        vec![fake(Behaviour::fixed(r#"{"n":"wrong"}"#)).await,
             fake(Behaviour::fixed(r#"{"n":1}"#)).await,
             fake(Behaviour::fixed(r#"{"n":"wrong"}"#)).await]
    });
    let named: Vec<(&str, &Fake)> = vec![("a", &fakes[0]), ("b", &fakes[1]), ("c", &fakes[2])];
    let (plane, addr) = start(&named, &["a", "b", "c"], 2, "");
    std::thread::spawn(move || rt.block_on(std::future::pending::<()>()));
    assert!(get(addr, "/x").ends_with(r#"{"n":"wrong"}"#), "two of three carry it");
    plane.publish(&snapshot(&named, &["a", "b", "c"], 2, r#","discounted":["c"]"#)).unwrap();
    let reply = get(addr, "/x");
    assert!(reply.starts_with("HTTP/1.1 502"), "{reply}");
    let v = settle(|| verdicts(&plane).into_iter().find(|v| v.reason.contains("discounted")));
    assert!(v.reason.ends_with("; discounted: c"), "{}", v.reason);
}

#[test]
fn the_reply_goes_out_at_quorum_before_the_straggler() {
    let rt = runtime();
    let _g = rt.enter();
    let fakes: Vec<Fake> = rt.block_on(async {
        let slow = Behaviour { delay: Duration::from_millis(1500), ..Behaviour::fixed("{}") };
        vec![fake(Behaviour::fixed("{}")).await, fake(Behaviour::fixed("{}")).await,
             fake(slow).await]
    });
    let named: Vec<(&str, &Fake)> = vec![("a", &fakes[0]), ("b", &fakes[1]), ("c", &fakes[2])];
    let (plane, addr) = start(&named, &["a", "b", "c"], 2, "");
    std::thread::spawn(move || rt.block_on(std::future::pending::<()>()));
    let started = Instant::now();
    let reply = get(addr, "/x");
    assert!(started.elapsed() < Duration::from_millis(1000), "waited for the straggler");
    assert!(reply.starts_with("HTTP/1.1 200"));
    // The straggler is still judged: the verdict is final only once it answered.
    let recent = settle(|| plane.recent().pop());
    assert_eq!(recent.agreed.len(), 3);
}

#[test]
fn below_the_floor_fails_closed_without_fanning_out() {
    let rt = runtime();
    let _g = rt.enter();
    let f = rt.block_on(fake(Behaviour::fixed("{}")));
    let (plane, addr) = start(&[("a", &f)], &["a"], 2, "");
    std::thread::spawn(move || rt.block_on(std::future::pending::<()>()));
    let reply = get(addr, "/x");
    assert!(reply.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{reply}");
    assert_eq!(f.requests.load(Ordering::SeqCst), 0);
    let v = settle(|| verdicts(&plane).pop());
    assert!(v.refused);
    // The client gets a generic refusal and the request's id; who could vote, and how many,
    // is for the events only.
    assert!(v.reason.contains("only 1 executors can vote"), "{}", v.reason);
    let body = reply.split("\r\n\r\n").nth(1).unwrap();
    assert_eq!(body, format!(r#"{{"error":"no quorum","request":"{:016x}"}}"#, v.request));
    let again = get(addr, "/x");
    assert_ne!(again.split("\r\n\r\n").nth(1), Some(body), "every request has its own id");
}

#[test]
fn replies_show_one_face_whoever_answered() {
    let rt = runtime();
    let _g = rt.enter();
    let f = rt.block_on(fake(Behaviour::fixed("{}")));
    let face = r#","face":{"remove":["server","x-powered-by"],"set":[["via","gw"]]},
                   "verdict_headers":true"#;
    let (plane, addr) = start(&[("a", &f)], &["a"], 1, face);
    std::thread::spawn(move || rt.block_on(std::future::pending::<()>()));
    let reply = get(addr, "/x").to_ascii_lowercase();
    assert!(reply.contains("\r\nvia: gw\r\n") && reply.contains("x-endosec-verdict: accepted"),
            "{reply}");
    assert!(!reply.contains("x-endosec-agreed"), "verdict headers name nobody: {reply}");
    let names = format!(r#"{face},"verdict_names":true"#);
    plane.publish(&snapshot(&[("a", &f)], &["a"], 1, &names)).unwrap();
    assert!(get(addr, "/x").contains("x-endosec-agreed: a\r\n"), "unless asked to");
}

/// Three fakes closing connections as ``closing`` says, voting behind a fresh plane.
fn closing_executors(closing: Closing) -> (Plane, SocketAddr, Vec<Fake>) {
    let rt = runtime();
    let _g = rt.enter();
    let fakes: Vec<Fake> = rt.block_on(async {
        let closing = Behaviour { closing, ..Behaviour::fixed("{}") };
        vec![fake(closing.clone()).await, fake(closing.clone()).await, fake(closing).await]
    });
    let named: Vec<(&str, &Fake)> = vec![("a", &fakes[0]), ("b", &fakes[1]), ("c", &fakes[2])];
    let (plane, addr) = start(&named, &["a", "b", "c"], 2, "");
    std::thread::spawn(move || rt.block_on(std::future::pending::<()>()));
    (plane, addr, fakes)
}

#[test]
fn an_executor_closing_idle_connections_is_not_a_failure() {
    let (plane, addr, _fakes) = closing_executors(Closing::AfterReply);
    for _ in 0..20 {
        let reply = get(addr, "/x");
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(verdicts(&plane).is_empty(), "no executor counted as failed");
}

#[test]
fn an_executor_closing_a_connection_as_the_gateway_reuses_it_is_not_a_failure() {
    for reset in [false, true] {
        let (plane, addr, fakes) = closing_executors(Closing::OnReuse { reset });
        for _ in 0..10 {
            let reply = get(addr, "/x");
            assert!(reply.starts_with("HTTP/1.1 200"), "reset={reset}: {reply}");
        }
        std::thread::sleep(Duration::from_millis(200));
        assert!(verdicts(&plane).is_empty(), "reset={reset}: an executor counted as failed");
        for f in &fakes {
            // Requests that met a reused connection the executor dropped were sent once more
            // on a fresh one: each executor answered each request exactly once.
            assert!(f.closed.load(Ordering::SeqCst) > 0, "reset={reset}: no reuse was dropped");
            assert_eq!(f.requests.load(Ordering::SeqCst), 10, "reset={reset}");
        }
    }
}

#[test]
fn an_executor_timing_out_idle_connections_races_reuse_without_a_failure() {
    // Requests spaced around the executors' keep-alive timeout: some reach a connection the
    // executor is closing at that moment (its FIN in flight as the request is written).
    let idle = Duration::from_millis(25);
    let (plane, addr, fakes) = closing_executors(Closing::WhenIdle(idle));
    for step in 0..60u32 {
        std::thread::sleep(idle - Duration::from_millis(3) + Duration::from_micros(100) * step);
        let reply = get(addr, "/x");
        assert!(reply.starts_with("HTTP/1.1 200"), "step {step}: {reply}");
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(verdicts(&plane).is_empty(), "an executor counted as failed");
    assert!(fakes.iter().all(|f| f.closed.load(Ordering::SeqCst) > 0), "no idle close happened");
}

#[test]
fn writes_are_journaled_and_a_new_executor_is_caught_up() {
    let rt = runtime();
    let _g = rt.enter();
    let fakes: Vec<Fake> = rt.block_on(async {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(fake(Behaviour::fixed("{}")).await);
        }
        v
    });
    let named: Vec<(&str, &Fake)> =
        vec![("a", &fakes[0]), ("b", &fakes[1]), ("c", &fakes[2]), ("d", &fakes[3])];
    let (plane, addr) = start(&named, &["a", "b", "c"], 2,
                              r#","keep_level":["a","b","c"]"#);
    std::thread::spawn(move || rt.block_on(std::future::pending::<()>()));
    for i in 0..5 {
        let body = format!("{{\"i\":{i}}}");
        let reply = request(addr, &format!("POST /n HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
                                             Content-Length: {}\r\n\r\n{body}", body.len()));
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    }
    assert_eq!(plane.journal(), (5, 5, 1, vec![]));
    assert_eq!(fakes[3].requests.load(Ordering::SeqCst), 0, "d is not kept level");
    plane.catch_up("d", 7);
    let done = settle(|| plane.drain(10).into_iter().find_map(|e| match e {
        Event::CatchUp(c) => Some(c),
        _ => None,
    }));
    assert_eq!(done.ticket, 7);
    assert_eq!(done.result, Ok(5));
    assert_eq!(fakes[3].requests.load(Ordering::SeqCst), 5);
    let synced: std::collections::HashMap<_, _> = plane.executors().into_iter().collect();
    assert_eq!(synced["d"], 5);
}

#[test]
fn ambiguous_framing_is_refused_before_any_executor_sees_it() {
    let rt = runtime();
    let _g = rt.enter();
    let f = rt.block_on(fake(Behaviour::fixed("{}")));
    let (_plane, addr) = start(&[("a", &f)], &["a"], 1, "");
    std::thread::spawn(move || rt.block_on(std::future::pending::<()>()));
    let reply = request(addr, "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\
                               Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    assert!(reply.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{reply}");
    assert_eq!(f.requests.load(Ordering::SeqCst), 0);
}

#[test]
fn held_clients_and_methods_not_served_are_refused_before_fan_out() {
    let rt = runtime();
    let _g = rt.enter();
    let f = rt.block_on(fake(Behaviour::fixed("{}")));
    let extra = r#","http":{"methods":["GET","HEAD"],"targets":"refuse"}"#;
    let (plane, addr) = start(&[("a", &f)], &["a"], 1, extra);
    std::thread::spawn(move || rt.block_on(std::future::pending::<()>()));
    let reply = request(addr, "OPTIONS /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert!(reply.starts_with("HTTP/1.1 405 "), "{reply}");
    assert!(reply.to_ascii_lowercase().contains("\r\nallow: get, head\r\n"), "{reply}");
    assert!(get(addr, "//x").starts_with("HTTP/1.1 404 "));
    assert_eq!(f.requests.load(Ordering::SeqCst), 0, "refused before any executor saw them");
    assert!(get(addr, "/x").starts_with("HTTP/1.1 200 "));
    let held = format!("{}{extra}", r#","refused_clients":["127.0.0.1"]"#);
    plane.publish(&snapshot(&[("a", &f)], &["a"], 1, &held)).unwrap();
    let reply = get(addr, "/x");
    assert!(reply.starts_with("HTTP/1.1 429 "), "{reply}");
    assert_eq!(f.requests.load(Ordering::SeqCst), 1, "a held client reaches no executor");
    plane.publish(&snapshot(&[("a", &f)], &["a"], 1, extra)).unwrap();
    assert!(get(addr, "/x").starts_with("HTTP/1.1 200 "), "the hold is lifted with the snapshot");
}

#[test]
fn slow_clients_get_408_and_the_connection_cap_503() {
    let rt = runtime();
    let _g = rt.enter();
    let f = rt.block_on(fake(Behaviour::fixed("{}")));
    let (_plane, addr) = start(&[("a", &f)], &["a"], 1, "");
    std::thread::spawn(move || rt.block_on(std::future::pending::<()>()));
    let started = Instant::now();
    let reply = request(addr, "GET / HTTP/1.1\r\nHost: t\r\n");
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(started.elapsed() < Duration::from_secs(3));
    let held: Vec<std::net::TcpStream> =
        (0..64).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(100));
    let reply = get(addr, "/");
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    drop(held);
}

#[test]
fn expect_100_continue_is_answered_before_the_body() {
    let rt = runtime();
    let _g = rt.enter();
    let f = rt.block_on(fake(Behaviour::fixed("{}")));
    let (_plane, addr) = start(&[("a", &f)], &["a"], 1, "");
    std::thread::spawn(move || rt.block_on(std::future::pending::<()>()));
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\
                  Connection: close\r\n\r\n").unwrap();
    let mut interim = [0u8; 25];
    s.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(b"{}").unwrap();
    let mut rest = String::new();
    let _ = s.read_to_string(&mut rest);
    assert!(rest.starts_with("HTTP/1.1 200"), "{rest}");
}

#[test]
fn a_pooled_connection_is_retired_by_age_so_a_reload_is_seen() {
    let rt = runtime();
    let _g = rt.enter();
    // The body counts requests on its connection: a new connection starts again at 1.
    let f = rt.block_on(async {
        let per_conn = Behaviour { body: Arc::new(|_, n| format!("{{\"n\":{n}}}")),
                                   ..Behaviour::fixed("") };
        fake(per_conn).await
    });
    let plane = plane();
    let snap = snapshot(&[("a", &f)], &["a"], 1, "").replace("\"upstream_max_age\":5.0",
                                                            "\"upstream_max_age\":0.3");
    plane.publish(&snap).unwrap();
    let addr = plane.listen_http("127.0.0.1:0".parse().unwrap(), None).unwrap();
    std::thread::spawn(move || rt.block_on(std::future::pending::<()>()));
    let bodies: Vec<String> = (0..3).map(|_| get(addr, "/")).collect();
    assert!(bodies[2].ends_with(r#"{"n":3}"#), "one pooled connection is reused: {bodies:?}");
    std::thread::sleep(Duration::from_millis(400));
    let after = get(addr, "/");
    assert!(after.ends_with(r#"{"n":1}"#), "an old connection is not reused: {after}");
}

fn post(addr: SocketAddr, key: &str, body: &str) -> String {
    request(addr, &format!("POST /n HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
                            Idempotency-Key: {key}\r\nContent-Length: {}\r\n\r\n{body}",
                           body.len()))
}

#[test]
fn a_keyed_write_is_applied_once_even_after_a_no_quorum() {
    let rt = runtime();
    let _g = rt.enter();
    let fakes: Vec<Fake> = rt.block_on(async {
        let slow = Behaviour { delay: Duration::from_millis(2500), ..Behaviour::fixed("{}") };
        vec![fake(Behaviour::fixed("{}")).await, fake(slow.clone()).await, fake(slow).await]
    });
    let named: Vec<(&str, &Fake)> = vec![("a", &fakes[0]), ("b", &fakes[1]), ("c", &fakes[2])];
    let (plane, addr) = start(&named, &["a", "b", "c"], 2, r#","keep_level":["a","b","c"]"#);
    std::thread::spawn(move || rt.block_on(std::future::pending::<()>()));
    let first = post(addr, "k-1", "{}");
    assert!(first.starts_with("HTTP/1.1 502"), "{first}");
    assert!(first.contains(r#""write":"in doubt""#), "{first}");
    let again = post(addr, "k-1", "{}");
    assert!(again.starts_with("HTTP/1.1 502") && again.contains("in doubt"), "{again}");
    std::thread::sleep(Duration::from_millis(100));
    let applied: Vec<usize> = fakes.iter().map(|f| f.requests.load(Ordering::SeqCst)).collect();
    assert_eq!(applied, vec![1, 1, 1], "the retry was not forwarded");
    let (_, _, _, in_doubt) = plane.journal();
    assert_eq!(in_doubt, vec![1]);
    assert_eq!(plane.journal().0, 1, "journaled once");
}

#[test]
fn a_retried_keyed_write_gets_the_first_reply() {
    let rt = runtime();
    let _g = rt.enter();
    let fakes: Vec<Fake> = rt.block_on(async {
        let numbered = Behaviour { body: Arc::new(|_, n| format!("{{\"id\":{n}}}")),
                                   ..Behaviour::fixed("") };
        vec![fake(numbered.clone()).await, fake(numbered.clone()).await, fake(numbered).await]
    });
    let named: Vec<(&str, &Fake)> = vec![("a", &fakes[0]), ("b", &fakes[1]), ("c", &fakes[2])];
    let (plane, addr) = start(&named, &["a", "b", "c"], 2, r#","keep_level":["a","b","c"]"#);
    std::thread::spawn(move || rt.block_on(std::future::pending::<()>()));
    let first = post(addr, "same", r#"{"t":1}"#);
    let retry = post(addr, "same", r#"{"t":1}"#);
    let other = post(addr, "other", r#"{"t":1}"#);
    assert!(first.ends_with(r#"{"id":1}"#), "{first}");
    assert_eq!(retry, first, "the retry is answered from the recorded reply");
    assert!(other.starts_with("HTTP/1.1 200"), "{other}");
    assert_eq!(plane.journal().0, 2);
    std::thread::sleep(Duration::from_millis(50));
    assert!(fakes.iter().all(|f| f.requests.load(Ordering::SeqCst) == 2));
}

#[test]
fn a_followers_writes_go_to_its_leader_and_its_reads_to_the_executors() {
    let rt = runtime();
    let _g = rt.enter();
    let (fakes, leader) = rt.block_on(async {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(fake(Behaviour::fixed(r#"{"from":"executor"}"#)).await);
        }
        (v, fake(Behaviour::fixed(r#"{"from":"leader"}"#)).await)
    });
    let named: Vec<(&str, &Fake)> = vec![("a", &fakes[0]), ("b", &fakes[1]), ("c", &fakes[2])];
    let writes_to = format!(r#","writes_to":{{"name":"leader:gw-a","host":"127.0.0.1","port":{},
        "epoch":1,"connect_timeout":1.0,"read_timeout":2.0}}"#, leader.addr.port());
    let (plane, addr) = start(&named, &["a", "b", "c"], 2, &writes_to);
    std::thread::spawn(move || rt.block_on(std::future::pending::<()>()));
    let post = "POST /n HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}";
    for _ in 0..3 {
        let reply = request(addr, post);
        assert!(reply.starts_with("HTTP/1.1 200") && reply.contains("leader"), "{reply}");
    }
    assert_eq!(leader.requests.load(Ordering::SeqCst), 3);
    assert!(fakes.iter().all(|f| f.requests.load(Ordering::SeqCst) == 0),
            "no write reached an executor but through the leader");
    assert_eq!(plane.journal().0, 0, "the leader journals the boundary's writes, not a follower");
    assert!(get(addr, "/n").contains("executor"));
    assert!(fakes.iter().all(|f| f.requests.load(Ordering::SeqCst) == 1));
    // A leader that does not answer: the write fails closed, in doubt.
    let gone = snapshot(&named, &["a", "b", "c"], 2, r#","writes_to":{"name":"leader:gw-a",
        "host":"127.0.0.1","port":9,"epoch":1,"connect_timeout":1.0,"read_timeout":2.0}"#);
    plane.publish(&gone).unwrap();
    let reply = request(addr, post);
    assert!(reply.starts_with("HTTP/1.1 502") && reply.contains("in doubt"), "{reply}");
}

/// A memory of the trigger header (its two rare features), published with ``response``.
fn memory_of_the_trigger(response: &str, implicated: &[&str]) -> String {
    use endosec_dataplane::immune::request_features;
    let host: (&[u8], &[u8]) = (b"host", b"t");
    let plain = request_features(b"GET", b"/x", &[host], b"");
    let antigen = request_features(b"GET", b"/x", &[host, (b"x-debug", b"letmein")], b"");
    let rare: Vec<String> = antigen.iter().filter(|f| !plain.contains(f)).map(u64::to_string)
        .collect();
    let names: Vec<String> = implicated.iter().map(|n| format!("\"{n}\"")).collect();
    format!(r#","memories":[{{"id":"m1","features":[{}],"need":2,"response":"{response}",
        "implicated":[{}]}}]"#, rare.join(","), names.join(","))
}

const TRIGGERED: &str = "GET /y?z=1 HTTP/1.1\r\nHost: t\r\nX-Debug: LetMeIn\r\nConnection: close\r\n\r\n";

fn asked(fakes: &[Fake]) -> Vec<usize> {
    fakes.iter().map(|f| f.requests.load(Ordering::SeqCst)).collect()
}

#[test]
fn a_remembered_antigen_meets_its_memorys_response_before_any_executor_answers() {
    let rt = runtime();
    let _g = rt.enter();
    let fakes: Vec<Fake> = rt.block_on(async {
        vec![fake(Behaviour::fixed(r#"{"n":"leak"}"#)).await,
             fake(Behaviour::fixed(r#"{"n":1}"#)).await, fake(Behaviour::fixed(r#"{"n":1}"#)).await]
    });
    let named: Vec<(&str, &Fake)> = vec![("a", &fakes[0]), ("b", &fakes[1]), ("c", &fakes[2])];
    let (plane, addr) = start(&named, &["a", "b", "c"], 2, &memory_of_the_trigger("rotate", &["a"]));
    std::thread::spawn(move || rt.block_on(std::future::pending::<()>()));
    // rotate: the implicated executor is not asked; the others, all agreeing, answer; and a
    // request a memory met is no sample of self traffic.
    let sampled = plane.shared().sketch.counts(&[]).0;
    let reply = request(addr, TRIGGERED);
    assert!(reply.starts_with("HTTP/1.1 200") && reply.ends_with(r#"{"n":1}"#), "{reply}");
    assert_eq!(asked(&fakes), vec![0, 1, 1]);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(plane.shared().sketch.counts(&[]).0, sampled);
    assert!(get(addr, "/y").ends_with(r#"{"n":1}"#), "no match: everyone votes");
    assert_eq!(asked(&fakes), vec![1, 2, 2]);
    let matched = plane.shared().matches.take();
    assert_eq!(matched.len(), 1);
    assert_eq!((matched[0].0.as_str(), matched[0].1.count), ("m1", 1));
    // Leaving out two of three would let one decide: the memory is not applied.
    plane.publish(&snapshot(&named, &["a", "b", "c"], 2,
                            &memory_of_the_trigger("rotate", &["a", "b"]))).unwrap();
    assert!(request(addr, TRIGGERED).starts_with("HTTP/1.1 200"));
    assert_eq!(asked(&fakes), vec![2, 3, 3]);
    // unanimity: every voter, all agreeing, or no answer.
    plane.publish(&snapshot(&named, &["a", "b", "c"], 2,
                            &memory_of_the_trigger("unanimity", &[]))).unwrap();
    assert!(request(addr, TRIGGERED).starts_with("HTTP/1.1 502"));
    // refuse: 403, and nobody is asked.
    plane.publish(&snapshot(&named, &["a", "b", "c"], 2,
                            &memory_of_the_trigger("refuse", &[]))).unwrap();
    let reply = request(addr, TRIGGERED);
    assert!(reply.starts_with("HTTP/1.1 403"), "{reply}");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(asked(&fakes), vec![3, 4, 4]);
}

#[test]
fn rotate_never_lets_fewer_than_the_quorum_decide() {
    let rt = runtime();
    let _g = rt.enter();
    // Five voters, two of them lying alike; an attacker had the memory implicate two honest.
    let fakes: Vec<Fake> = rt.block_on(async {
        let mut v = vec![fake(Behaviour::fixed(r#"{"n":"lie"}"#)).await,
                         fake(Behaviour::fixed(r#"{"n":"lie"}"#)).await];
        for _ in 0..3 {
            v.push(fake(Behaviour::fixed(r#"{"n":1}"#)).await);
        }
        v
    });
    let named: Vec<(&str, &Fake)> = vec![("c1", &fakes[0]), ("c2", &fakes[1]), ("h1", &fakes[2]),
                                         ("h2", &fakes[3]), ("h3", &fakes[4])];
    let voters = ["c1", "c2", "h1", "h2", "h3"];
    let (_plane, addr) = start(&named, &voters, 3, &memory_of_the_trigger("rotate", &["h1", "h2"]));
    std::thread::spawn(move || rt.block_on(std::future::pending::<()>()));
    // Three are left, as many as the quorum: they must all agree, and they do not.
    let reply = request(addr, TRIGGERED);
    assert!(reply.starts_with("HTTP/1.1 502"), "the liars must not carry it: {reply}");
    assert!(get(addr, "/y").ends_with(r#"{"n":1}"#));
}
