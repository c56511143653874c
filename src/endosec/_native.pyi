"""The native data plane (built from rust/ by maturin); see docs/architecture.md."""

from os import PathLike
from typing import Any

LAG_BIN_US: int
"""Width (microseconds) of one bin of `DataPlane.take_lags`."""
LAG_SIDE: int
"""Bins on each side of 0 in `DataPlane.take_lags` (bin i: lags from (i - LAG_SIDE) bins)."""

class DataPlane:
    """A running data plane: a tokio runtime on ``threads`` workers.

    ``wake_fd`` is the write end of a pipe; one byte is written to it when events wait.
    """

    def __init__(self, threads: int, event_capacity: int, wake_fd: int) -> None: ...
    def publish(self, snapshot: str) -> int:
        """Swap in a snapshot (JSON); its generation. ValueError if it is refused."""
    def listen_http(self, host: str, port: int, cert: str | PathLike[str] | None = None,
                    key: str | PathLike[str] | None = None) -> tuple[str, int]:
        """Serve HTTP (TLS with cert and key); the bound address. OSError if it cannot."""
    def listen_dns(self, host: str, port: int) -> tuple[str, int]:
        """Serve DNS over UDP and TCP (port 0: one port free for both); the bound address."""
    def catch_up(self, name: str, ticket: int) -> None:
        """Bring ``name`` level with the journal; a ``catch-up`` event carries ``ticket``."""
    def drain(self, max: int) -> list[dict[str, Any]]:
        """Queued events (``kind``: ``verdict``, ``catch-up``, ``paused`` or ``in-doubt``)."""
    def self_counts(self, features: list[int]) -> tuple[int, list[int]]:
        """Requests sampled into the self sketch (clean ones), and how many of them carried
        each of ``features``."""
    def take_matches(self) -> list[dict[str, Any]]:
        """Per memory matched since the last call: ``memory``, ``response``, ``count`` and the
        last such request's ``request``, ``method``, ``path``, ``client``."""
    def take_self_samples(self) -> list[list[int]]:
        """The features of the self requests sampled since the last call (at most 1024, the
        newest)."""
    def take_agreements(self) -> dict[str, int]:
        """Clean agreements per executor since the last call."""
    def take_lags(self) -> dict[str, dict[str, list[int]]]:
        """Per executor and route (the method and path, or question type and name, digits as
        ``#``; past 64 routes, ``*``), counts per bin of its lag behind the fastest of the
        others in unanimous rounds of three voters or more (started with few rounds under way),
        since the last call."""
    def take_client_errors(self) -> dict[str, int]:
        """Error answers (HTTP 400 or more, a DNS rcode but NOERROR) per client address since
        the last call; ``"*"``: clients beyond the data plane's bound."""
    def metrics(self) -> dict[str, Any]:
        """Every counter and histogram."""
    def recent(self) -> list[dict[str, Any]]:
        """The last verdicts, oldest first."""
    def journal(self) -> tuple[int, int, int, list[int]]:
        """``(head, entries in memory, oldest seq kept, writes in doubt)``."""
    def open_journal(self, directory: str | PathLike[str], sync_interval: float | None,
                     segment_bytes: int) -> dict[str, int]:
        """Keep the journal in ``directory``; ``entries``, ``head``, ``cut_bytes`` recovered."""
    def pause_writes(self, ticket: int, hold: float) -> None:
        """Hold writes back for a checkpoint; a ``paused`` event (``ticket``, ``seq``) follows."""
    def resume_writes(self) -> None:
        """Let writes go again."""
    def restored(self, name: str, seq: int) -> None:
        """``name`` was restored from a checkpoint taken at ``seq``."""
    def truncate_journal(self, seq: int) -> None:
        """Forget the journal before ``seq``."""
    def synced(self) -> dict[str, int]:
        """Each executor's journal position."""
    def stop(self, timeout: float) -> bool:
        """Stop accepting; wait for requests in flight. True if they all finished."""
    def close(self) -> None:
        """Shut the runtime down (idempotent)."""

HTTP_METHODS: tuple[str, ...]
"""The methods the input agent admits (others are 501); ``http.methods`` picks among them."""

_Limits = tuple[int, int, int, int, int]
_Headers = list[tuple[bytes, bytes]] | tuple[tuple[bytes, bytes], ...]

class RequestReader:
    """The input agent's reader; ``limits``: (max_header_bytes, max_headers, max_body_bytes,
    max_target_bytes, max_response_bytes)."""

    def __init__(self, limits: _Limits) -> None: ...
    def receive_data(self, data: bytes) -> None: ...
    def next_event(self) -> tuple[Any, ...]:
        """``("request", method, target, headers, body, keep_alive, version)``,
        ``("need-data",)``, ``("closed",)`` or ``("refused", status, reason)``."""
    @property
    def expects_continue(self) -> bool: ...
    @property
    def buffered(self) -> int: ...

class ResponseReader:
    def __init__(self, limits: _Limits, request_method: bytes) -> None: ...
    def receive_data(self, data: bytes) -> None: ...
    def next_event(self) -> tuple[Any, ...]:
        """``("response", status, reason, headers, body, keep_alive)``, ``("need-data",)`` or
        ``("failed", kind, reason)``."""

def upstream_request_bytes(method: bytes, target: bytes, headers: _Headers, body: bytes,
                           keep_alive: bool, http11: bool, host: bytes) -> bytes: ...
def encode_response(status: int, headers: _Headers, body: bytes, keep_alive: bool,
                    head_only: bool, extra_headers: _Headers) -> bytes: ...
def error_response(status: int, payload: list[tuple[str, str]], keep_alive: bool) -> bytes: ...
def request_features(method: bytes, target: bytes, headers: _Headers, body: bytes) -> list[int]:
    """The request's immune features (`endosec.core.antigen.request_features`)."""
def query_features(qtype: str, name: str) -> list[int]:
    """A DNS query's immune features (`endosec.core.antigen.query_features`)."""
def detector_score(weights: list[float], bias: float, features: list[int]) -> float:
    """A learned detector's score (`endosec.immune.detector.score`); ValueError if the
    weights are empty or not finite."""

def compile_rules(config_json: str) -> None:
    """Check a ``canonicalise`` configuration (JSON); ValueError with Python's message if bad."""

class Rules:
    """Compiled ``canonicalise`` rules (JSON), as the data plane applies them."""

    def __init__(self, config_json: str) -> None: ...
    def head(self, status: int, headers: list[tuple[bytes, bytes]]) -> bytes:
        """``repr((status, canonical_headers)).encode()``: an output's head."""
    def key(self, path: str, content_type: bytes, status: int, body: bytes) -> bytes:
        """The canonical key of ``body`` under the rule for ``path``, ``content_type`` and
        ``status``."""
    def equivalent(self, path: str, content_type: bytes, status: int, a: bytes,
                   b: bytes) -> bool:
        """Whether two bodies agree under the rule for ``path``, ``content_type`` and
        ``status``."""
    def digest(self, status: int, headers: list[tuple[bytes, bytes]], path: str,
               body: bytes) -> bytes:
        """BLAKE2b-256 of the head, a NUL and the body's canonical key."""

class DnsSettings:
    """The ``dns`` settings of a snapshot; ValueError naming the field if one is wrong."""

    def __init__(self, flags: list[str] | None = None, ttl: str = "compare",
                 ttl_tolerance: int = 0, additional: str = "all", udp_payload: int = 1232,
                 max_udp_inflight: int = 1024, refuse_types: list[int] = ...) -> None: ...
    @property
    def udp_payload(self) -> int: ...

class DnsQuery:
    """An accepted client query."""

    @property
    def id(self) -> int: ...
    @property
    def qname(self) -> str:
        """As the client spelled it, with its final dot."""
    @property
    def qtype(self) -> int: ...
    @property
    def edns(self) -> bool: ...
    @property
    def payload(self) -> int: ...
    @property
    def dnssec_ok(self) -> bool: ...
    @property
    def label(self) -> str:
        """The question type's name, as events carry it."""
    @property
    def key(self) -> str:
        """The name in lower case, as events carry it."""
    def udp_limit(self, settings: DnsSettings) -> int: ...
    def upstream_wire(self, settings: DnsSettings) -> bytes:
        """The normalised query every executor receives."""

class DnsRefusal:
    """A client message that is not forwarded."""

    @property
    def reason(self) -> str: ...
    @property
    def rcode(self) -> int | None:
        """The client's answer; None: the message is dropped."""
    @property
    def label(self) -> str:
        """How it is counted: the rcode's name, or ``dropped``."""
    def reply(self, settings: DnsSettings) -> bytes | None: ...

class DnsReply:
    """An executor's reply, checked against its query."""

    def output(self, executor: str, settings: DnsSettings) -> DnsOutput: ...

class DnsOutput:
    """One output as the arbiter compares it."""

    @property
    def head(self) -> bytes: ...
    @property
    def raw(self) -> bytes: ...
    @property
    def key(self) -> bytes: ...
    @property
    def digest(self) -> bytes: ...
    def agrees_with(self, other: DnsOutput) -> bool: ...

class DnsReplyError(ValueError):
    """An executor's message that is not a well-formed reply to the query it was sent."""

def dns_parse_query(wire: bytes, settings: DnsSettings) -> DnsQuery | DnsRefusal: ...
def dns_parse_reply(wire: bytes, query: DnsQuery) -> DnsReply:
    """DnsReplyError if ``wire`` is not a reply to ``query``."""
def dns_encode_reply(query: DnsQuery, winner: DnsReply, settings: DnsSettings,
                     max_size: int) -> bytes: ...
def dns_servfail(query: DnsQuery, settings: DnsSettings, reason: str) -> bytes: ...
