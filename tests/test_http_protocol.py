"""The HTTP/1.1 adapter: strict request reading, upstream bytes, response reading and encoding."""

from __future__ import annotations

import json

import pytest

from endosec.core.canonicalise import compile_rules
from endosec.core.model import ErrorKind
from endosec.protocols.http import (
    ConnectionClosed,
    HttpLimits,
    LocalProtocolError,
    NeedData,
    ProtocolError,
    RemoteProtocolError,
    Request,
    RequestReader,
    Response,
    ResponseReader,
    UpstreamProtocolError,
    encode_response,
    error_response,
    response_output,
    upstream_request_bytes,
)

LIMITS = HttpLimits()


def read_all(data: bytes, limits: HttpLimits = LIMITS, step: int | None = None,
             eof: bool = True) -> list[Request]:
    """Feed ``data`` (in ``step``-byte pieces) then EOF; collect every request."""
    reader = RequestReader(limits)
    out: list[Request] = []
    pieces = [data] if step is None else [data[i:i + step] for i in range(0, len(data), step)]
    for piece in [*pieces, b""] if eof else pieces:
        reader.receive_data(piece)
        while True:
            event = reader.next_event()
            if isinstance(event, Request):
                out.append(event)
                continue
            if event is ConnectionClosed:
                return out
            assert event is NeedData
            break
    return out


def rejected(data: bytes, limits: HttpLimits = LIMITS, eof: bool = True) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        read_all(data, limits, eof=eof)
    return info.value


GET = b"GET / HTTP/1.1\r\nHost: example\r\n\r\n"


# --- good requests -----------------------------------------------------------------------------

def test_simple_get() -> None:
    [req] = read_all(b"GET /a?b=1 HTTP/1.1\r\nHost: example\r\nX-Thing:  v  \r\n\r\n")
    assert req == Request(b"GET", b"/a?b=1", ((b"host", b"example"), (b"x-thing", b"v")),
                          b"", True, b"1.1")


def test_post_with_content_length() -> None:
    data = b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
    for step in (None, 1, 3):
        [req] = read_all(data, step=step)
        assert req.method == b"POST"
        assert req.body == b"hello"
        assert req.header(b"content-length") == b"5"


def test_chunked_post_is_dechunked() -> None:
    data = (b"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5;name=value\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n")
    for step in (None, 1, 7):
        [req] = read_all(data, step=step)
        assert req.body == b"hello0123456789"


def test_chunk_extension_with_quoted_value() -> None:
    data = (b"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n"
            b'3;a="b c";d\r\nabc\r\n0\r\n\r\n')
    assert read_all(data)[0].body == b"abc"


def test_pipelined_requests_come_out_one_by_one() -> None:
    data = (GET + b"POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nok"
            + b"PUT /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"1\r\nz\r\n0\r\n\r\n")
    for step in (None, 1, 5):
        reqs = read_all(data, step=step)
        assert [(r.method, r.target, r.body) for r in reqs] == [
            (b"GET", b"/", b""), (b"POST", b"/b", b"ok"), (b"PUT", b"/c", b"z")]


def test_pipelined_requests_from_one_receive() -> None:
    reader = RequestReader(LIMITS)
    reader.receive_data(GET * 3)
    assert [isinstance(reader.next_event(), Request) for _ in range(3)] == [True] * 3
    assert reader.next_event() is NeedData
    assert reader.buffered == 0


def test_http10_closes_unless_keep_alive() -> None:
    reader = RequestReader(LIMITS)
    reader.receive_data(b"GET / HTTP/1.0\r\n\r\n" + GET)
    req = reader.next_event()
    assert isinstance(req, Request)
    assert (req.http_version, req.keep_alive) == (b"1.0", False)
    assert reader.next_event() is ConnectionClosed  # nothing after a closing request is read
    [a, b] = read_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" + GET)
    assert a.keep_alive and b.keep_alive


def test_connection_close_ends_the_stream() -> None:
    reader = RequestReader(LIMITS)
    reader.receive_data(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Close\r\n\r\n" + GET)
    req = reader.next_event()
    assert isinstance(req, Request) and not req.keep_alive
    assert reader.next_event() is ConnectionClosed


def test_clean_eof_between_requests() -> None:
    reader = RequestReader(LIMITS)
    reader.receive_data(GET)
    assert isinstance(reader.next_event(), Request)
    assert reader.next_event() is NeedData
    reader.receive_data(b"")
    assert reader.next_event() is ConnectionClosed


def test_blank_lines_before_a_request_are_skipped() -> None:
    assert read_all(b"\r\n\r\n" + GET)[0].target == b"/"


def test_absolute_form_becomes_origin_form_with_its_host() -> None:
    [req] = read_all(b"GET http://real.example:8080 HTTP/1.1\r\nHost: other\r\nA: b\r\n\r\n")
    assert req.target == b"/"
    assert req.headers == ((b"host", b"real.example:8080"), (b"a", b"b"))
    [req] = read_all(b"GET HTTPS://x/p?q HTTP/1.1\r\nHost: x\r\n\r\n")
    assert req.target == b"/p?q"


def test_options_star() -> None:
    assert read_all(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n")[0].target == b"*"


def test_upgrade_request_is_read_as_a_plain_request() -> None:
    data = b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"
    [req] = read_all(data + GET)[:1]
    assert req.method == b"GET"


def test_expect_continue_is_visible_until_the_body_arrives() -> None:
    reader = RequestReader(LIMITS)
    reader.receive_data(b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n"
                        b"Content-Length: 3\r\n\r\n")
    assert reader.next_event() is NeedData
    assert reader.expects_continue
    assert reader.buffered > 0
    reader.receive_data(b"abc")
    assert not reader.expects_continue
    req = reader.next_event()
    assert isinstance(req, Request) and req.body == b"abc"


def test_optional_whitespace_around_framing_is_well_formed() -> None:
    for te in (b"chunked\t", b"\tchunked", b"chunked "):
        data = (b"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: " + te + b"\r\n\r\n"
                b"3\r\nabc\r\n0\r\n\r\n")
        assert read_all(data)[0].body == b"abc"
    data = CHUNKED_HEAD + b"3 ;a=b\r\nabc\r\n2\t;c\r\nde\r\n0\r\n\r\n"
    assert read_all(data)[0].body == b"abcde"


def test_limits_are_inclusive() -> None:
    limits = HttpLimits(max_body_bytes=4, max_headers=2)
    [req] = read_all(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nabcd", limits)
    assert req.body == b"abcd"


# --- rejected requests -------------------------------------------------------------------------

CHUNKED_HEAD = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"

BAD = {
    "cl-and-te": (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    "te-and-cl": (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
                  b"Content-Length: 3\r\n\r\n0\r\n\r\n", 400),
    "repeated-cl-equal": (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n"
                          b"Content-Length: 1\r\n\r\nx", 400),
    "repeated-cl-differs": (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n"
                            b"Content-Length: 2\r\n\r\nxx", 400),
    "cl-list": (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1, 1\r\n\r\nx", 400),
    "cl-alpha": (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: abc\r\n\r\n", 400),
    "cl-plus": (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +1\r\n\r\nx", 400),
    "cl-minus": (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", 400),
    "cl-empty": (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length:\r\n\r\n", 400),
    "cl-hex": (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x1\r\n\r\nx", 400),
    "te-gzip": (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
    "te-gzip-chunked": (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked"
                        b"\r\n\r\n0\r\n\r\n", 400),
    "te-chunked-twice-list": (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, "
                              b"chunked\r\n\r\n0\r\n\r\n", 400),
    "te-repeated": (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    "te-identity": (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: identity\r\n\r\n", 400),
    "te-xchunked": (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n", 400),
    "te-in-http10": (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    "chunk-size-alpha": (CHUNKED_HEAD + b"zz\r\nab\r\n0\r\n\r\n", 400),
    "chunk-size-negative": (CHUNKED_HEAD + b"-1\r\na\r\n0\r\n\r\n", 400),
    "chunk-size-0x": (CHUNKED_HEAD + b"0x1\r\na\r\n0\r\n\r\n", 400),
    "chunk-size-space-before": (CHUNKED_HEAD + b" 1\r\na\r\n0\r\n\r\n", 400),
    "chunk-size-space-after": (CHUNKED_HEAD + b"1 \r\na\r\n0\r\n\r\n", 400),
    "chunk-size-empty": (CHUNKED_HEAD + b"\r\na\r\n0\r\n\r\n", 400),
    "chunk-size-overflow": (CHUNKED_HEAD + b"1" + b"0" * 16 + b"\r\na\r\n0\r\n\r\n", 400),
    "chunk-size-bare-lf": (CHUNKED_HEAD + b"1\na\r\n0\r\n\r\n", 400),
    "chunk-ext-bare-lf": (CHUNKED_HEAD + b"1;a\nb\r\na\r\n0\r\n\r\n", 400),
    "chunk-ext-bare-cr": (CHUNKED_HEAD + b"1;a\rb\r\na\r\n0\r\n\r\n", 400),
    "chunk-ext-huge": (CHUNKED_HEAD + b"1;" + b"a" * 300 + b"\r\na\r\n0\r\n\r\n", 400),
    "chunk-ext-space": (CHUNKED_HEAD + b"1; a=b\r\na\r\n0\r\n\r\n", 400),
    "chunk-ext-bws-no-semicolon": (CHUNKED_HEAD + b"1 a\r\na\r\n0\r\n\r\n", 400),
    "te-underscore": (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n"
                      b"Transfer_Encoding: chunked\r\n\r\nx", 400),
    "cl-underscore": (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
                      b"content_LENGTH: 3\r\n\r\n0\r\n\r\n", 400),
    "chunk-data-overrun": (CHUNKED_HEAD + b"1\r\nab\r\n0\r\n\r\n", 400),
    "chunk-missing-last": (CHUNKED_HEAD + b"1\r\na\r\n", 400),
    "chunked-too-large": (CHUNKED_HEAD + b"100001\r\n", 413),
    "trailer-bad-field": (CHUNKED_HEAD + b"0\r\nbad trailer\r\n\r\n", 400),
    "trailer-obs-fold": (CHUNKED_HEAD + b"0\r\nA: b\r\n c\r\n\r\n", 400),
    "obs-fold-space": (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n", 400),
    "obs-fold-tab": (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n\tb\r\n\r\n", 400),
    "bare-lf-head": (b"GET / HTTP/1.1\nHost: h\n\n", 400),
    "bare-lf-in-header": (b"GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n", 400),
    "bare-cr-in-header": (b"GET / HTTP/1.1\r\nHost: h\rX: y\r\n\r\n", 400),
    "bare-cr-request-line": (b"GET / HTTP/1.1\rHost: h\r\n\r\n", 400),
    "lf-after-blank-line": (b"\n" + GET, 400),
    "nul-in-value": (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n", 400),
    "nul-in-name": (b"GET / HTTP/1.1\r\nHost: h\r\nX\x00: b\r\n\r\n", 400),
    "nul-in-target": (b"GET /\x00 HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    "space-before-colon": (b"GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400),
    "tab-before-colon": (b"GET / HTTP/1.1\r\nHost\t: h\r\n\r\n", 400),
    "no-colon": (b"GET / HTTP/1.1\r\nHost: h\r\nnocolon\r\n\r\n", 400),
    "empty-name": (b"GET / HTTP/1.1\r\nHost: h\r\n: v\r\n\r\n", 400),
    "ctl-in-value": (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x01b\r\n\r\n", 400),
    "http2": (b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505),
    "h2-preface": (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
    "http12": (b"GET / HTTP/1.2\r\nHost: h\r\n\r\n", 505),
    "http09-version": (b"GET / HTTP/0.9\r\n\r\n", 505),
    "no-version": (b"GET /\r\n\r\n", 400),
    "short-version": (b"GET / HTTP/1\r\nHost: h\r\n\r\n", 400),
    "lowercase-protocol": (b"GET / http/1.1\r\nHost: h\r\n\r\n", 400),
    "double-space": (b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    "missing-host": (b"GET / HTTP/1.1\r\nX: y\r\n\r\n", 400),
    "repeated-host": (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    "bad-host": (b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
    "bad-method-token": (b"G@T / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    "method-with-slash": (b"GE/T / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    "unknown-method": (b"FROB / HTTP/1.1\r\nHost: h\r\n\r\n", 501),
    "connect": (b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n", 501),
    "authority-form-get": (b"GET h:443 HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    "star-for-get": (b"GET * HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    "userinfo": (b"GET http://u@h/ HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    "empty-authority": (b"GET http:///x HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    "non-ascii-target": (b"GET /\xff HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    "expect-other": (b"GET / HTTP/1.1\r\nHost: h\r\nExpect: magic\r\n\r\n", 417),
    "eof-in-head": (b"GET / HTTP/1.1\r\nHost: h\r\n", 400),
    "eof-in-body": (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nabc", 400),
    "body-too-large": (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1048577\r\n\r\n", 413),
    "body-length-absurd": (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: " + b"9" * 40
                           + b"\r\n\r\n", 413),
    "target-too-long": (b"GET /" + b"a" * 8192 + b" HTTP/1.1\r\nHost: h\r\n\r\n", 414),
    "head-too-large": (b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"a" * 16384 + b"\r\n\r\n", 431),
    "too-many-headers": (b"GET / HTTP/1.1\r\nHost: h\r\n" + b"X: y\r\n" * 100 + b"\r\n", 431),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_ambiguous_or_malformed_requests_are_rejected(name: str) -> None:
    data, status = BAD[name]
    err = rejected(data)
    assert err.status_hint == status, err.reason
    assert isinstance(err, ProtocolError)


@pytest.mark.parametrize("name", ["bare-lf-head", "nul-in-value", "body-too-large",
                                  "lf-after-blank-line"])
def test_rejected_without_waiting_for_more_bytes(name: str) -> None:
    data, status = BAD[name]
    assert rejected(data, eof=False).status_hint == status


def test_oversize_detected_before_the_terminator_arrives() -> None:
    assert rejected(b"GET / HTTP/1.1\r\nX: " + b"a" * 20000, eof=False).status_hint == 431
    assert rejected(b"GET /" + b"a" * 9000, eof=False).status_hint == 414


def test_body_limit_is_checked_from_content_length_before_the_body() -> None:
    reader = RequestReader(HttpLimits(max_body_bytes=10))
    reader.receive_data(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n")
    with pytest.raises(RemoteProtocolError) as info:
        reader.next_event()
    assert info.value.status_hint == 413


def test_nothing_before_an_error_in_the_same_buffer_is_lost_but_nothing_after_is_read() -> None:
    reader = RequestReader(LIMITS)
    reader.receive_data(GET + b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n" + GET)
    assert isinstance(reader.next_event(), Request)
    with pytest.raises(RemoteProtocolError):
        reader.next_event()


def test_reader_stays_broken_after_an_error() -> None:
    reader = RequestReader(LIMITS)
    reader.receive_data(b"GET / HTTP/1.1\nHost: h\n\n")
    with pytest.raises(RemoteProtocolError) as first:
        reader.next_event()
    with pytest.raises(RemoteProtocolError) as again:
        reader.next_event()
    assert again.value.status_hint == first.value.status_hint
    with pytest.raises(RemoteProtocolError):
        reader.receive_data(GET)


def test_data_after_eof_is_a_local_error() -> None:
    reader = RequestReader(LIMITS)
    reader.receive_data(b"")
    with pytest.raises(LocalProtocolError):
        reader.receive_data(GET)


def test_protocol_error_is_abstract() -> None:
    with pytest.raises(TypeError):
        ProtocolError("x")
    assert issubclass(RemoteProtocolError, ProtocolError)
    assert issubclass(LocalProtocolError, ProtocolError)
    err = UpstreamProtocolError(ErrorKind.OVERSIZE)
    assert (err.kind, err.status_hint) == (ErrorKind.OVERSIZE, 502)


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_headers"):
        HttpLimits(max_headers=0)


@pytest.mark.parametrize("kwargs", [
    {"headers": ((b"host", b"h"), (b"x", b"a\r\nInjected: 1"))},
    {"headers": ((b"host", b"h"), (b"X-Upper", b"v"))},
    {"headers": ((b"host", b"h"), (b"x", b" padded"))},
    {"headers": ((b"x", b"y"),)},
    {"target": b"/a b"},
    {"method": b"GE T"},
    {"http_version": b"2.0"},
])
def test_request_refuses_fields_that_could_smuggle(kwargs: dict[str, object]) -> None:
    fields: dict[str, object] = {"method": b"GET", "target": b"/", "headers": ((b"host", b"h"),)}
    fields.update(kwargs)
    with pytest.raises(LocalProtocolError):
        Request(**fields)  # type: ignore[arg-type]


# --- upstream request bytes --------------------------------------------------------------------

def test_upstream_bytes_exact_form() -> None:
    req = Request(b"GET", b"/x", ((b"host", b"h"), (b"accept", b"*/*")))
    assert upstream_request_bytes(req) == (
        b"GET /x HTTP/1.1\r\nhost: h\r\naccept: */*\r\nconnection: keep-alive\r\n\r\n")


def test_upstream_bytes_strip_hop_by_hop_headers() -> None:
    data = (b"POST /p HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Secret, host\r\n"
            b"X-Secret: s\r\nKeep-Alive: 5\r\nProxy-Connection: x\r\nTE: trailers\r\n"
            b"Trailer: X-T\r\nUpgrade: h2c\r\nProxy-Authorization: Basic x\r\nExpect: 100-continue"
            b"\r\nX-Kept: k\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    [req] = read_all(data)
    assert upstream_request_bytes(req) == (
        b"POST /p HTTP/1.1\r\nhost: h\r\nx-kept: k\r\ncontent-length: 3\r\n"
        b"connection: keep-alive\r\n\r\nabc")


def test_upstream_bytes_content_length_rules() -> None:
    post = Request(b"POST", b"/", ((b"host", b"h"),))
    assert b"content-length: 0\r\n" in upstream_request_bytes(post)
    get = Request(b"GET", b"/", ((b"host", b"h"),))
    assert b"content-length" not in upstream_request_bytes(get)
    get_body = Request(b"GET", b"/", ((b"host", b"h"), (b"content-length", b"99")), b"ab")
    out = upstream_request_bytes(get_body)
    assert out.count(b"content-length") == 1 and out.endswith(b"content-length: 2\r\n"
                                                              b"connection: keep-alive\r\n\r\nab")


def test_upstream_bytes_give_http10_requests_a_host() -> None:
    [req] = read_all(b"GET / HTTP/1.0\r\n\r\n")
    out = upstream_request_bytes(req, host=b"svc")
    assert out.startswith(b"GET / HTTP/1.1\r\n") and b"\r\nhost: svc\r\n" in out
    [again] = read_all(out)
    assert again.header(b"host") == b"svc"


# --- response reader ---------------------------------------------------------------------------

def read_response(data: bytes, method: bytes = b"GET", limits: HttpLimits = LIMITS,
                  step: int | None = None, eof: bool = False) -> Response:
    reader = ResponseReader(limits, method)
    pieces = [data] if step is None else [data[i:i + step] for i in range(0, len(data), step)]
    for piece in pieces:
        reader.receive_data(piece)
    if eof:
        reader.receive_data(b"")
    event = reader.next_event()
    assert isinstance(event, Response), event
    return event


def response_error(data: bytes, method: bytes = b"GET", limits: HttpLimits = LIMITS,
                   eof: bool = True) -> ErrorKind:
    reader = ResponseReader(limits, method)
    with pytest.raises(UpstreamProtocolError) as info:
        reader.receive_data(data)
        if eof:
            reader.receive_data(b"")
        reader.next_event()
    with pytest.raises(UpstreamProtocolError):
        reader.next_event()  # broken for good
    return info.value.kind


def test_response_with_content_length() -> None:
    for step in (None, 1):
        resp = read_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nServer: x\r\n\r\nhello",
                             step=step)
        assert (resp.status, resp.reason, resp.body, resp.keep_alive) == (200, b"OK", b"hello",
                                                                          True)
        assert resp.headers == ((b"content-length", b"5"), (b"server", b"x"))


def test_chunked_response_is_dechunked_and_trailers_dropped() -> None:
    data = (b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: 1\r\n\r\n")
    for step in (None, 1, 4):
        resp = read_response(data, step=step)
        assert (resp.status, resp.body) == (201, b"abcde")
        assert resp.header(b"x-trailer") is None


def test_close_delimited_response_ends_at_eof() -> None:
    reader = ResponseReader(LIMITS, b"GET")
    reader.receive_data(b"HTTP/1.1 200 OK\r\n\r\npart one ")
    assert reader.next_event() is NeedData
    reader.receive_data(b"part two")
    reader.receive_data(b"")
    resp = reader.next_event()
    assert isinstance(resp, Response)
    assert (resp.body, resp.keep_alive) == (b"part one part two", False)


def test_head_response_has_no_body_and_connection_is_reusable() -> None:
    reader = ResponseReader(LIMITS, b"HEAD")
    reader.receive_data(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
    head = reader.next_event()
    assert isinstance(head, Response)
    assert (head.body, head.header(b"content-length"), head.keep_alive) == (b"", b"1000", True)


def test_head_response_split_across_reads_with_interim_response() -> None:
    data = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n"
    resp = read_response(data, b"HEAD", step=1)
    assert (resp.status, resp.body) == (200, b"")


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_statuses(status: int) -> None:
    resp = read_response(b"HTTP/1.1 %d X\r\nContent-Length: 7\r\n\r\n" % status)
    assert (resp.status, resp.body, resp.keep_alive) == (status, b"", True)


def test_interim_responses_are_skipped() -> None:
    resp = read_response(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\n"
                         b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nz")
    assert (resp.status, resp.headers, resp.body) == (200, ((b"content-length", b"1"),), b"z")


def test_one_reader_per_response_in_any_pieces() -> None:
    for i in range(3):
        reader = ResponseReader(LIMITS, b"GET")
        for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n%d" % i:
            assert reader.next_event() is NeedData
            reader.receive_data(bytes([byte]))
        resp = reader.next_event()
        assert isinstance(resp, Response) and (resp.body, resp.keep_alive) == (b"%d" % i, True)


def test_connection_close_and_http10_are_not_reusable() -> None:
    assert not read_response(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
                             ).keep_alive
    assert not read_response(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").keep_alive
    assert read_response(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0"
                         b"\r\n\r\n").keep_alive


def test_a_response_followed_by_eof_is_not_reusable() -> None:
    resp = read_response(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", eof=True)
    assert not resp.keep_alive


def test_bytes_after_the_response_poison_the_connection() -> None:
    reader = ResponseReader(LIMITS, b"GET")
    reader.receive_data(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\n")
    resp = reader.next_event()
    assert isinstance(resp, Response) and not resp.keep_alive
    head_only = ResponseReader(LIMITS, b"HEAD")
    head_only.receive_data(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody")
    resp = head_only.next_event()
    assert isinstance(resp, Response) and (resp.body, resp.keep_alive) == (b"", False)


def test_next_event_after_the_response_is_a_local_error() -> None:
    reader = ResponseReader(LIMITS, b"GET")
    reader.receive_data(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert isinstance(reader.next_event(), Response)
    with pytest.raises(LocalProtocolError):
        reader.next_event()


SMALL = HttpLimits(max_response_bytes=10, max_header_bytes=200, max_headers=3)

BAD_RESPONSES = {
    "garbage": (b"garbage\r\n\r\n", ErrorKind.MALFORMED),
    "bare-lf": (b"HTTP/1.1 200 OK\nContent-Length: 0\n\n", ErrorKind.MALFORMED),
    "cl-and-te": (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
                  ErrorKind.MALFORMED),
    "te-gzip": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxx", ErrorKind.MALFORMED),
    "te-repeated": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: "
                    b"chunked\r\n\r\n0\r\n\r\n", ErrorKind.MALFORMED),
    "repeated-cl": (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
                    ErrorKind.MALFORMED),
    "bad-chunk": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                  ErrorKind.MALFORMED),
    "status-999": (b"HTTP/1.1 999 Odd\r\nContent-Length: 0\r\n\r\n", ErrorKind.MALFORMED),
    "http2-response": (b"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", ErrorKind.MALFORMED),
    "reason-ctl": (b"HTTP/1.1 200 O\x01K\r\nContent-Length: 0\r\n\r\n", ErrorKind.MALFORMED),
    "upgrade": (b"HTTP/1.1 101 Switching\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n",
                ErrorKind.MALFORMED),
    "eof-in-body": (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", ErrorKind.MALFORMED),
    "eof-in-head": (b"HTTP/1.1 200 OK\r\nContent", ErrorKind.MALFORMED),
    "eof-in-chunk": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
                     ErrorKind.MALFORMED),
    "eof-before-anything": (b"", ErrorKind.RESET),
    "cl-too-large": (b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n", ErrorKind.OVERSIZE),
    "chunked-too-large": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                          b"6\r\nabcdef\r\n6\r\nabcdef\r\n0\r\n\r\n", ErrorKind.OVERSIZE),
    "close-delimited-too-large": (b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 11, ErrorKind.OVERSIZE),
    "head-too-large": (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 300 + b"\r\n\r\n", ErrorKind.OVERSIZE),
    "head-never-ends": (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 300, ErrorKind.OVERSIZE),
    "too-many-headers": (b"HTTP/1.1 200 OK\r\n" + b"A: b\r\n" * 4 + b"\r\n", ErrorKind.OVERSIZE),
    "huge-trailers": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"
                      + b"T: x\r\n" * 100, ErrorKind.OVERSIZE),
}


@pytest.mark.parametrize("name", sorted(BAD_RESPONSES))
def test_bad_responses(name: str) -> None:
    data, kind = BAD_RESPONSES[name]
    assert response_error(data, limits=SMALL) is kind


def test_head_response_limits_and_truncation() -> None:
    assert response_error(b"HTTP/1.1 200 OK\r\nX: " + b"a" * 300, b"HEAD", SMALL,
                          eof=False) is ErrorKind.OVERSIZE
    assert response_error(b"HTTP/1.1 200 OK\r\n", b"HEAD") is ErrorKind.MALFORMED
    # a HEAD response may announce any length: no body follows
    assert read_response(b"HTTP/1.1 200 OK\r\nContent-Length: 999\r\n\r\n", b"HEAD",
                         SMALL).body == b""


# --- encoding for the client -------------------------------------------------------------------

def reread(data: bytes, method: bytes = b"GET") -> Response:
    return read_response(data, method)


def test_encode_response_round_trips() -> None:
    resp = Response(200, b"whatever", ((b"content-type", b"text/plain"), (b"x-a", b"1")),
                    b"body", True)
    out = encode_response(resp, keep_alive=True, head_only=False)
    assert out.startswith(b"HTTP/1.1 200 OK\r\n")
    back = reread(out)
    assert (back.status, back.body, back.keep_alive) == (200, b"body", True)
    assert back.headers == ((b"content-type", b"text/plain"), (b"x-a", b"1"),
                            (b"content-length", b"4"), (b"connection", b"keep-alive"))


def test_encode_response_drops_hop_by_hop_and_framing() -> None:
    chunked = reread(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: x-drop\r\n"
                     b"X-Drop: 1\r\nKeep-Alive: timeout=5\r\nX-Keep: 2\r\n\r\n2\r\nhi\r\n0\r\n\r\n")
    out = encode_response(chunked, keep_alive=False, head_only=False,
                          extra_headers=[(b"x-endosec", b"ok")])
    assert out == (b"HTTP/1.1 200 OK\r\nx-keep: 2\r\nx-endosec: ok\r\ncontent-length: 2\r\n"
                   b"connection: close\r\n\r\nhi")


def test_encode_response_for_head_keeps_announced_length() -> None:
    head = read_response(b"HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n", b"HEAD")
    out = encode_response(head, keep_alive=True, head_only=True)
    assert out.endswith(b"content-length: 42\r\nconnection: keep-alive\r\n\r\n")
    back = read_response(out, b"HEAD")
    assert back.header(b"content-length") == b"42" and back.body == b""
    get = Response(200, b"OK", (), b"abc")
    assert encode_response(get, keep_alive=True, head_only=True).endswith(
        b"content-length: 3\r\nconnection: keep-alive\r\n\r\n")


@pytest.mark.parametrize("status", [204, 304])
def test_encode_response_without_body(status: int) -> None:
    out = encode_response(Response(status, b"", ((b"content-length", b"3"),), b""),
                          keep_alive=True, head_only=False)
    assert b"content-length" not in out and out.endswith(b"\r\n\r\n")
    assert reread(out).status == status


def test_encode_response_refuses_injection_and_interim() -> None:
    resp = Response(200, b"OK", (), b"")
    with pytest.raises(LocalProtocolError):
        encode_response(resp, keep_alive=True, head_only=False,
                        extra_headers=[(b"x", b"a\r\nset-cookie: evil")])
    with pytest.raises(LocalProtocolError):
        encode_response(Response(100, b"", ()), keep_alive=True, head_only=False)


def test_encode_response_lowercases_handmade_headers_before_filtering() -> None:
    resp = Response(200, b"OK", ((b"Connection", b"close"), (b"Content-Type", b"a/b")), b"")
    out = encode_response(resp, keep_alive=True, head_only=False)
    assert b"close" not in out and b"content-type: a/b\r\n" in out


def test_error_response_is_json_and_closes() -> None:
    out = error_response(431, {"error": "request head too large"})
    resp = reread(out)
    assert resp.status == 431 and not resp.keep_alive
    assert json.loads(resp.body) == {"error": "request head too large"}
    assert resp.header(b"content-type") == b"application/json"
    assert reread(error_response(502, {"error": "no quorum"}, keep_alive=True)).keep_alive
    with pytest.raises(LocalProtocolError):
        error_response(200, {})


# --- arbiter output ----------------------------------------------------------------------------

def test_response_output_uses_the_rules() -> None:
    rules = compile_rules({"bodies": [{"path": "/api/*", "content_type": "application/json",
                                       "json": {"ignore": ["/at"]}}]})
    a = reread(b"HTTP/1.1 200 OK\r\nDate: Mon\r\nContent-Type: application/json; charset=utf-8"
               b"\r\nContent-Length: 16\r\n\r\n{\"v\":1,\"at\":123}")
    b = reread(b"HTTP/1.1 200 OK\r\nDate: Tue\r\nContent-Type: application/json\r\n"
               b"Content-Length: 16\r\n\r\n{\"at\":456,\"v\":1}")
    c = reread(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
               b"Content-Length: 16\r\n\r\n{\"at\":456,\"v\":2}")
    oa, ob, oc = (response_output(n, r, rules, "/api/x", 0.5) for n, r in
                  (("a", a), ("b", b), ("c", c)))
    assert oa.head == (200, ((b"content-type", b"application/json"),))
    assert (oa.executor, oa.latency, oa.raw) == ("a", 0.5, a.body)
    assert oa.agrees_with(ob)
    assert not oa.agrees_with(oc)
    plain = response_output("a", a, rules, "/other", 0.0)
    assert not plain.agrees_with(response_output("b", b, rules, "/other", 0.0))
