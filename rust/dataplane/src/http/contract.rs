//! The input agent's contract, checked by the fuzzer, the property tests and the regression
//! corpus: whatever bytes arrive, in whatever pieces, they are refused with a 4xx/5xx, or each
//! admitted request's normalised bytes read back to the same request (so every executor sees
//! exactly one meaning, and no second request can be smuggled inside the first).

use super::{upstream_request_bytes, Limits, Next, Refusal, Request, RequestReader};

/// Small limits, so that inputs of fuzzer size reach every limit.
pub const LIMITS: Limits = Limits { max_header_bytes: 2048, max_headers: 20, max_body_bytes: 4096,
                                    max_target_bytes: 512, max_response_bytes: 4096 };

/// Every request in ``data`` fed in ``step``-byte pieces then EOF, or the refusal.
pub fn read_all(data: &[u8], limits: Limits, step: usize) -> Result<Vec<Request>, Refusal> {
    let mut reader = RequestReader::new(limits);
    let mut out = Vec::new();
    for piece in data.chunks(step.max(1)).map(Some).chain([None]) {
        match piece {
            Some(p) => reader.receive(p),
            None => reader.receive_eof(),
        }
        loop {
            match reader.next_event()? {
                Next::Request(r) => out.push(r),
                Next::NeedData => break,
                Next::Closed => return Ok(out),
            }
        }
    }
    Ok(out)
}

/// What the normalised bytes of an admitted request may take: the writer adds up to three
/// fields (Host for HTTP/1.0, Content-Length, Connection) and a space after each colon.
fn normalised_limits() -> Limits {
    Limits { max_headers: LIMITS.max_headers + 3,
             max_header_bytes: LIMITS.max_header_bytes + LIMITS.max_headers + 96, ..LIMITS }
}

/// Panics when ``data`` breaks the contract.
pub fn check(data: &[u8], step: usize) {
    match read_all(data, LIMITS, step) {
        Err(refusal) => assert!((400..=599).contains(&refusal.status), "{refusal:?}"),
        Ok(requests) => {
            for request in requests {
                let wire = upstream_request_bytes(&request, b"svc")
                    .expect("an admitted request can be forwarded");
                let again = read_all(&wire, normalised_limits(), wire.len())
                    .expect("the normalised bytes are admitted");
                assert_eq!(again.len(), 1, "one request, no smuggled second one");
                let again = &again[0];
                assert_eq!((&again.method, &again.target, &again.body),
                           (&request.method, &request.target, &request.body));
                let twice = upstream_request_bytes(again, b"svc").expect("forwardable");
                assert_eq!(twice, wire, "normalising is idempotent: one meaning");
            }
        }
    }
}
