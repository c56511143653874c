"""Property tests: whatever bytes arrive, in whatever pieces, readers parse or refuse cleanly."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from endosec.protocols.http import (
    HOP_BY_HOP,
    ConnectionClosed,
    HttpLimits,
    NeedData,
    RemoteProtocolError,
    Request,
    RequestReader,
    Response,
    ResponseReader,
    UpstreamProtocolError,
    encode_response,
    upstream_request_bytes,
)

LIMITS = HttpLimits(max_header_bytes=2048, max_headers=20, max_body_bytes=4096,
                    max_target_bytes=512, max_response_bytes=4096)
SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

# Pieces of requests: mostly valid, plus the bytes smuggling attacks are made of.
LINES = [b"GET / HTTP/1.1\r\n", b"POST /p?q=1 HTTP/1.1\r\n", b"GET / HTTP/1.0\r\n",
         b"OPTIONS * HTTP/1.1\r\n", b"GET http://h/x HTTP/1.1\r\n", b"PRI * HTTP/2.0\r\n",
         b"GET /\x00 HTTP/1.1\r\n", b"GET / HTTP/1.1\n", b"\r\n"]
FIELDS = [b"Host: h\r\n"] * 6 + [
    b"Content-Length: 3\r\n", b"Content-Length: 0\r\n", b"Content-Length: -1\r\n",
    b"Content-Length: 3\r\n", b"Transfer-Encoding: chunked\r\n", b"Transfer-Encoding: gzip\r\n",
    b"Connection: close\r\n", b"Connection: keep-alive\r\n", b"Expect: 100-continue\r\n",
    b"X: y\r\n", b"X: y\r\n", b" folded\r\n", b"X : y\r\n", b"X: a\rb\r\n", b"X: a\nb\r\n",
    b"Upgrade: h2c\r\n", b"Trailer: T\r\n"]
BODIES = [b"", b"", b"abc", b"3\r\nabc\r\n", b"0\r\n\r\n", b"1;ext=v\r\nz\r\n",
          b"ffffffffffffffffff\r\n", b"0\r\nT: t\r\n\r\n", b"3\nabc\n", b"\r\n", b"\x00"]


@st.composite
def near_valid(draw: st.DrawFn) -> bytes:
    out = []
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        out.append(draw(st.sampled_from(LINES)))
        out.extend(draw(st.lists(st.sampled_from(FIELDS), max_size=5)))
        out.append(b"\r\n")
        out.extend(draw(st.lists(st.sampled_from(BODIES), max_size=3)))
    return b"".join(out)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in pairwise(bounds) if b > a]


def drive(pieces: list[bytes]) -> list[Request]:
    """Feed every piece then EOF; only Requests or RemoteProtocolError may come out."""
    reader = RequestReader(LIMITS)
    out: list[Request] = []
    total = sum(len(p) for p in pieces)
    for piece in [*pieces, b""]:
        reader.receive_data(piece)
        for _ in range(total + 2):  # every Request consumes at least one byte: no hang
            event = reader.next_event()
            if isinstance(event, Request):
                out.append(event)
                continue
            assert event is NeedData or event is ConnectionClosed
            break
        else:
            raise AssertionError("reader kept producing events without consuming input")
        if event is ConnectionClosed:
            break
    return out


def parses_or_refuses(pieces: list[bytes]) -> None:
    try:
        requests = drive(pieces)
    except RemoteProtocolError as exc:
        assert 400 <= exc.status_hint <= 599
        return
    for request in requests:  # whatever was accepted must be forwardable as is
        upstream_request_bytes(request)


@SETTINGS
@given(st.binary(max_size=600), st.lists(st.integers(min_value=0), max_size=8))
def test_any_bytes_parse_or_raise_remote_protocol_error(data: bytes, cuts: list[int]) -> None:
    parses_or_refuses(split(data, cuts))


@SETTINGS
@given(near_valid(), st.lists(st.integers(min_value=0), max_size=8))
def test_near_valid_streams_parse_or_raise_remote_protocol_error(data: bytes,
                                                                 cuts: list[int]) -> None:
    parses_or_refuses(split(data, cuts))


TCHARS = "!#$%&'*+.^_`|~0123456789abcdefghijklmnopqrstuvwxyz-"
_RESERVED = HOP_BY_HOP | {b"host", b"content-length", b"expect"}
header_names = st.text(TCHARS, min_size=1, max_size=12).map(str.encode).filter(
    lambda n: n.replace(b"_", b"-") not in _RESERVED)
header_values = st.binary(max_size=30).map(
    lambda v: bytes(b for b in v if b == 0x09 or 0x20 <= b != 0x7F).strip(b" \t"))
targets = st.text("abcdefghijklmnopqrstuvwxyz0123456789-._~%!$&'()*+,;=:@/?",
                  max_size=40).map(lambda t: b"/" + t.encode())
methods = st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"HEAD"])


@st.composite
def requests(draw: st.DrawFn) -> Request:
    headers = ((b"host", b"svc.example:8080"),
               *draw(st.lists(st.tuples(header_names, header_values), max_size=12)))
    return Request(draw(methods), draw(targets), headers, draw(st.binary(max_size=300)))


@SETTINGS
@given(requests(), st.lists(st.integers(min_value=0), max_size=6))
def test_upstream_bytes_round_trip(request: Request, cuts: list[int]) -> None:
    [again] = drive(split(upstream_request_bytes(request) * 2, cuts))[1:]
    assert (again.method, again.target, again.body) == (request.method, request.target,
                                                        request.body)
    forwarded = tuple(h for h in again.headers if h[0] not in (b"content-length", b"connection"))
    assert forwarded == request.headers
    assert again.keep_alive


@SETTINGS
@given(st.binary(max_size=2000), st.lists(st.integers(min_value=1, max_value=64), max_size=30),
       st.lists(st.integers(min_value=0), max_size=6))
def test_chunked_bodies_are_dechunked_exactly(body: bytes, sizes: list[int],
                                              cuts: list[int]) -> None:
    chunks, rest = [], body
    for size in sizes:
        if rest:
            chunks.append(b"%x\r\n%s\r\n" % (len(rest[:size]), rest[:size]))
            rest = rest[size:]
    if rest:
        chunks.append(b"%X\r\n%s\r\n" % (len(rest), rest))
    data = (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"".join(chunks) + b"0\r\n\r\n")
    [request] = drive(split(data, cuts))
    assert request.body == body


def read_response(pieces: list[bytes], method: bytes) -> Response | None:
    reader = ResponseReader(LIMITS, method)
    try:
        for piece in [*pieces, b""]:
            reader.receive_data(piece)
            event = reader.next_event()
            if isinstance(event, Response):
                return event
    except UpstreamProtocolError:
        return None
    raise AssertionError("EOF must end every response")


@SETTINGS
@given(st.binary(max_size=600), st.lists(st.integers(min_value=0), max_size=8),
       st.sampled_from([b"GET", b"HEAD"]))
def test_any_response_bytes_parse_or_raise_upstream_error(data: bytes, cuts: list[int],
                                                          method: bytes) -> None:
    read_response(split(b"HTTP/1.1 " + data, cuts), method)


@SETTINGS
@given(st.sampled_from([200, 201, 204, 304, 404, 500, 599]),
       st.lists(st.tuples(header_names, header_values), max_size=8), st.binary(max_size=300),
       st.lists(st.integers(min_value=0), max_size=6))
def test_encoded_responses_round_trip(status: int, headers: list[tuple[bytes, bytes]],
                                      body: bytes, cuts: list[int]) -> None:
    body = b"" if status in (204, 304) else body
    sent = Response(status, b"", tuple(headers), body)
    back = read_response(split(encode_response(sent, keep_alive=True, head_only=False), cuts),
                         b"GET")
    assert back is not None
    assert (back.status, back.body, back.keep_alive) == (status, body, True)
    assert tuple(h for h in back.headers if h[0] not in (b"content-length", b"connection")
                 ) == tuple(headers)
