"""HTTP/1.1 for the control plane, sans-I/O: bytes in, messages out, and back (the data
plane's own readers and writers, from `endosec._native`).

* `RequestReader` is the input agent's strict reader for client bytes: it rejects every
  ambiguous framing before anything is forwarded (`RemoteProtocolError` with a status hint).
* `upstream_request_bytes` builds the one request every executor receives.
* `ResponseReader` reads executors' responses (`UpstreamProtocolError` with an `ErrorKind`).
* `response_output` turns a response into the arbiter's `Output`.
* `encode_response` and `error_response` build what the client receives.
"""

from __future__ import annotations

from endosec.protocols.http._errors import (
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    UpstreamProtocolError,
)
from endosec.protocols.http._events import (
    ConnectionClosed,
    HttpLimits,
    NeedData,
    Request,
    Response,
)
from endosec.protocols.http._request import RequestReader
from endosec.protocols.http._response import ResponseReader
from endosec.protocols.http._syntax import HOP_BY_HOP, Headers
from endosec.protocols.http._writers import (
    encode_response,
    error_response,
    response_output,
    upstream_request_bytes,
)

__all__ = [
    "HOP_BY_HOP",
    "ConnectionClosed",
    "Headers",
    "HttpLimits",
    "LocalProtocolError",
    "NeedData",
    "ProtocolError",
    "RemoteProtocolError",
    "Request",
    "RequestReader",
    "Response",
    "ResponseReader",
    "UpstreamProtocolError",
    "encode_response",
    "error_response",
    "response_output",
    "upstream_request_bytes",
]
