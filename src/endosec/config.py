"""The endosec configuration file: YAML, validated with messages that name the field.

A configuration describes one mimic boundary: where the gateway listens, how the arbiter votes,
how the controller and scheduler behave, the canonicalisation rules, and the executors. See the
configuration reference in README.md and the annotated example in src/endosec/demo/endosec.yaml.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

import dns.exception
import dns.name
import dns.rdatatype
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from endosec import _native
from endosec.cluster.store import parse_store_url
from endosec.configfile import (
    ConfigError,
    Locate,
    expand,
    read_yaml,
    readable_tls,
    validate,
)
from endosec.core.canonical_json import JsonRule
from endosec.core.canonicalise import TextRule, compile_rules
from endosec.core.immune import ImmunePolicy
from endosec.core.model import Profile
from endosec.core.rotation_policy import PolicyFileError, RotationPolicy
from endosec.core.trust import PointRules

__all__ = [
    "AdminConfig",
    "Admitting",
    "AgentRef",
    "ArbiterConfig",
    "AttestConfig",
    "AttributionConfig",
    "BehaviourConfig",
    "CheckpointConfig",
    "ClusterConfig",
    "Config",
    "ConfigError",
    "ControllerConfig",
    "DnsConfig",
    "EvidenceConfig",
    "ExecutorConfig",
    "FaceConfig",
    "HttpConfig",
    "QuantifySection",
    "RedactConfig",
    "StateConfig",
    "ThreatConfig",
    "TlsConfig",
    "TrustConfig",
    "UnmanagedCleanse",
    "checkpoints_possible",
    "load_config",
    "load_profiles",
    "load_rotation_policy",
    "parse_address",
    "parse_dns_question",
]


def parse_address(value: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[::1]:PORT`` for IPv6) into its parts."""
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"port must be a number from 0 to 65535, got {port!r}")
    return host, int(port)


def parse_dns_question(value: str) -> tuple[str, str]:
    """Split ``"NAME TYPE"`` (e.g. ``"example.test. SOA"``) and check both parts."""
    parts = value.split()
    if len(parts) != 2:
        raise ValueError(f'expected "NAME TYPE", got {value!r}')
    try:
        dns.name.from_text(parts[0])
        dns.rdatatype.from_text(parts[1])
    except dns.exception.DNSException as exc:
        raise ValueError(f"{value!r}: {exc}") from None
    return parts[0], parts[1]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AdminConfig(_Strict):
    listen: str = "127.0.0.1:8081"
    token: str | None = Field(default=None, description="bearer token for POST actions")
    token_env: str = Field(default="ENDOSEC_ADMIN_TOKEN",
                           description="environment variable holding the token")
    read_token: str | None = Field(default=None,
                                   description="bearer token for reads (the admin token works too)")
    read_token_env: str = Field(default="ENDOSEC_READ_TOKEN",
                                description="environment variable holding the read token")
    public_read: bool = Field(default=False,
                              description="status, events, metrics and the rest readable by "
                                          "anyone who reaches the admin listener")

    @field_validator("listen")
    @classmethod
    def _address(cls, v: str) -> str:
        parse_address(v)
        return v

    def resolved_token(self) -> str | None:
        """The token from the file, else from the environment; None disables admin actions."""
        return self.token or os.environ.get(self.token_env) or None

    def resolved_read_token(self) -> str | None:
        """The read token from the file, else from the environment."""
        return self.read_token or os.environ.get(self.read_token_env) or None


class ArbiterConfig(_Strict):
    strategy: Literal["majority", "threshold", "plurality", "unanimity",
                      "trust-weighted"] = "majority"
    k: int | None = Field(default=None, ge=1)
    min_support: int | None = Field(default=None, ge=1)
    strict: bool = Field(default=False, description=(
        "a voter that broke a behaviour rule since its last cleanse is heard but lends no "
        "support: when the winning class falls below the quorum without it, fail closed "
        "(matters with behaviour.action: warn, which leaves such a voter voting)"))

    @model_validator(mode="after")
    def _params(self) -> ArbiterConfig:
        if self.strategy == "threshold" and self.k is None:
            raise ValueError("strategy 'threshold' needs k")
        if self.k is not None and self.strategy != "threshold":
            raise ValueError("k applies only to strategy 'threshold'")
        if self.min_support is not None and self.strategy != "plurality":
            raise ValueError("min_support applies only to strategy 'plurality'")
        return self


class ControllerConfig(_Strict):
    active: int = Field(default=3, ge=1, description="executors voting at once")
    floor: int | None = Field(default=None, ge=1,
                              description="fewest voters that may answer (default: active//2+1)")
    quarantine_after: int = Field(default=1, ge=1)
    dissent_window: float = Field(default=60.0, gt=0)
    probation_agreements: int = Field(default=0, ge=0)
    rotate_every: float | None = Field(
        default=300.0, gt=0, description="mean seconds between rotations, at random times "
                                         "(null: the active set moves only on dissent)")
    rotate_min: float | None = Field(
        default=None, gt=0, description="mean seconds between rotations under full threat "
                                        "(default: rotate_every / 10)")
    grow_under_threat: bool = Field(default=False, description="spares join the active set "
                                                               "as the threat level rises")
    rotate_count: int = Field(default=1, ge=1)
    cleanse_on_rotate: bool = True
    failures_are_dissent: bool = True
    defer_above: float | None = Field(
        default=0.85, gt=0, le=1, description="host CPU utilisation at which a due rotation "
                                              "waits for the load to fall (null: never)")
    defer_max: float = Field(default=60.0, gt=0,
                             description="the longest a due rotation waits (seconds)")
    rotation_policy: Path | None = Field(
        default=None, description="a learned rotation policy (endosec quantify "
                                  "train-scheduler): it decides when and whom to rotate, "
                                  "within one rotation per rotate_every")

    @property
    def effective_floor(self) -> int:
        return self.floor if self.floor is not None else self.active // 2 + 1

    @model_validator(mode="after")
    def _floor(self) -> ControllerConfig:
        if self.floor is not None and self.floor > self.active:
            raise ValueError(f"floor ({self.floor}) cannot exceed active ({self.active})")
        if self.rotate_min is not None and (self.rotate_every is None
                                            or self.rotate_min > self.rotate_every):
            raise ValueError("rotate_min needs rotate_every, and cannot exceed it")
        if self.rotation_policy is not None and self.rotate_every is None:
            raise ValueError("rotation_policy needs rotate_every (its budget)")
        return self


class BehaviourConfig(_Strict):
    """What executors do besides answering (`endosec.core.behaviour`)."""

    interval: float = Field(default=1.0, gt=0, description="seconds between samples")
    action: Literal["quarantine", "warn", "off"] = Field(
        default="quarantine", description="on a broken rule (a connection out, a program not "
                                          "in the baseline, a CPU or memory excess, a file "
                                          "read outside its own): quarantine and cleanse, or "
                                          "only alert; off: no sampling")
    latency: Literal["quarantine", "warn", "off"] = Field(
        default="quarantine", description="the latency rule (an executor much slower than its "
                                          "peers on the same requests, against its own "
                                          "baseline per route): quarantine (with action: "
                                          "quarantine), only alert, or off")
    busy_above: float = Field(
        default=0.45, gt=0, le=1, description="host CPU utilisation from which the latency "
                                              "rule skips a window: a busy host delays whoever "
                                              "the CPU reaches last")
    allowed_paths: tuple[str, ...] = Field(
        default=(), description="files (or trees, ending in /) any executor may open besides "
                                "its own directories and the defaults "
                                "(endosec.core.behaviour.ALLOWED_PATHS)")

    @field_validator("allowed_paths")
    @classmethod
    def _absolute(cls, paths: tuple[str, ...]) -> tuple[str, ...]:
        relative = [p for p in paths if not p.startswith("/")]
        if relative:
            raise ValueError(f"allowed paths must be absolute: {', '.join(relative)}")
        return paths


class AttributionConfig(_Strict):
    """Dissent traced to the clients that cause it, so divergence is not a lever."""

    quarantines: int = Field(default=2, ge=1,
                             description="quarantines one client may cause within the window")
    window: float = Field(default=60.0, gt=0)
    block: float = Field(default=300.0, gt=0,
                         description="seconds a client is held responsible")
    refuse: bool = Field(
        default=False, description="refuse held clients too (429; over DNS/TCP the connection "
                                   "is closed). Off by default: many users may stand behind one "
                                   "address (a load balancer, a NAT), and a flaky executor "
                                   "dissenting on a hot request looks like a lever")


class LearnConfig(_Strict):
    """Detectors learned online by the boundary's gateways together (`endosec.immune.online`,
    docs/immune.md): needs a shared cluster store."""

    enabled: bool = False
    every: float = Field(default=60.0, ge=1, description="seconds per federated round")
    scheme: Literal["clonal", "fedavg"] = "clonal"
    dim: int = Field(default=1024, ge=8, description="hash buckets per detector")
    margin: float = Field(default=0.05, ge=0, le=1,
                          description="accuracy an update may lose against the current model "
                                      "and still be aggregated")
    min_level: Literal["L0", "L1", "L2", "L3"] = Field(
        default="L2", description="trust level a gateway needs to take part (a live member "
                                  "of the boundary is L2, its leader L3)")
    min_antigens: int = Field(default=5, ge=1)
    min_self: int = Field(default=50, ge=1)
    threshold: float = Field(default=0.9, gt=0, lt=1,
                             description="score above which a request is met as an antigen")
    response: Literal["unanimity", "refuse"] = "unanimity"


class ImmuneConfig(_Strict):
    """Immune memory (`endosec.core.immune`, docs/immune.md): an antigen seen once is met at
    once the next time, anywhere in the boundary."""

    enabled: bool = True
    response: Literal["rotate", "unanimity", "refuse"] = Field(
        default="rotate", description="rotate: the executors implicated last time are left "
                                      "out of the vote; unanimity: every voter and shadow votes "
                                      "and all must agree; refuse: 403 (DNS: REFUSED)")
    rare: float = Field(default=0.01, ge=0, lt=1,
                        description="most share of self traffic a signature feature is seen in")
    match: float = Field(default=0.5, gt=0, le=1,
                         description="share of a signature's features that makes a match")
    max_features: int = Field(default=16, ge=1)
    min_self: int = Field(default=50, ge=0,
                          description="self requests sampled before any memory is formed")
    decay: float = Field(default=3600.0, gt=0,
                         description="seconds without a match after which a memory is forgotten")
    capacity: int = Field(default=256, ge=1, description="memories kept (least recently seen "
                                                         "forgotten first)")
    learn: LearnConfig = Field(default_factory=LearnConfig)

    def policy(self) -> ImmunePolicy:
        return ImmunePolicy(**self.model_dump(exclude={"enabled", "learn"}))


class TrustConfig(_Strict):
    """Proof-of-Trust points (`endosec.core.trust.PointRules`, docs/identity.md)."""

    start: float = Field(default=100.0, ge=0, description="points of a new executor")
    gain: float = Field(default=1.0, ge=0, description="points per agreement")
    penalty: float = Field(default=15.0, ge=0, description="points lost per dissent, failure "
                                                           "or behaviour report")
    cap: float = Field(default=1000.0, ge=0, description="most points an executor keeps")
    vote_at: float = Field(default=50.0, ge=0, description="points to vote (L2)")
    lead_at: float = Field(default=500.0, ge=0, description="points for L3 (with a recent "
                                                            "attestation)")
    fresh_for: float = Field(default=900.0, ge=0, description="seconds an attestation counts "
                                                              "as recent for L3")

    @model_validator(mode="after")
    def _rules(self) -> TrustConfig:
        self.rules()  # ValueError names what is wrong
        return self

    def rules(self) -> PointRules:
        return PointRules(**self.model_dump())


class ThreatConfig(_Strict):
    """How dissent, refusals and scans add up to a threat level, and how fast it fades."""

    half_life: float = Field(default=120.0, gt=0,
                             description="seconds for evidence to lose half its weight")
    scale: float = Field(default=10.0, gt=0,
                         description="dissenting executors (refusals weigh 0.2) that bring "
                                     "the level to 0.63")
    isolate_at: float | None = Field(
        default=0.5, gt=0, description="suspicion at which a component is isolated (at most "
                                       "one executor holding it votes); each dissent adds 1 to "
                                       "the components only the dissenter has (null: only "
                                       "POST /threat components isolate)")
    suspicion_half_life: float = Field(default=3600.0, gt=0,
                                       description="seconds for a component's suspicion to "
                                                   "halve")
    scan_errors: int | None = Field(
        default=200, ge=1, description="error answers (HTTP 400 or more, a DNS rcode but "
                                       "NOERROR) to one client within scan_window that make a "
                                       "scan, which weighs as one dissent (null: not watched)")
    scan_window: float = Field(default=10.0, gt=0, description="seconds over which scan_errors "
                                                               "are counted")


class SchedulerConfig(_Strict):
    policy: Literal["random", "round-robin", "max-dissimilarity",
                    "credibility-weighted"] = "max-dissimilarity"
    seed: int | None = None


class LimitsConfig(_Strict):
    max_request_body: int = Field(default=1 << 20, ge=0)
    max_response_body: int = Field(default=16 << 20, ge=1)
    max_header_bytes: int = Field(default=16 << 10, ge=256)
    max_headers: int = Field(default=100, ge=1)
    connect_timeout: float = Field(default=3.0, gt=0)
    read_timeout: float = Field(default=5.0, gt=0)
    client_header_timeout: float = Field(default=10.0, gt=0,
                                         description="time a client has to send a full request")
    client_idle_timeout: float = Field(default=60.0, gt=0)
    max_connections: int = Field(default=1024, ge=1)
    upstream_max_requests: int = Field(default=1000, ge=1,
                                       description="requests per pooled executor connection")
    upstream_max_age: float = Field(default=5.0, gt=0,
                                    description="seconds a pooled executor connection lives")
    upstream_max_connections: int = Field(
        default=32, ge=1, description="exchanges at once per executor; more wait for a slot")


class JournalConfig(_Strict):
    max_entries: int = Field(default=10_000, ge=1, description="entries kept in memory")
    max_bytes: int = Field(default=64 << 20, ge=1, description="bytes kept in memory")
    sync_interval: float | None = Field(
        default=None, gt=0,
        description="None: sync each group of writes before forwarding it; else seconds")
    segment_bytes: int = Field(default=64 << 20, ge=4096, description="journal file size")
    idempotency_window: float = Field(default=86_400.0, ge=0,
                                      description="seconds an Idempotency-Key is remembered")
    idempotency_keys: int = Field(default=100_000, ge=1, description="keys remembered at most")


class HealthConfig(_Strict):
    path: str = "/health"
    dns_query: str | None = Field(default=None,
                                  description='"NAME TYPE" asked over TCP when protocol is dns')
    timeout: float = Field(default=2.0, gt=0)
    interval: float = Field(default=5.0, gt=0)
    start_timeout: float = Field(default=20.0, gt=0)

    @field_validator("dns_query")
    @classmethod
    def _dns_query(cls, v: str | None) -> str | None:
        if v is not None:
            parse_dns_question(v)
        return v


class StateConfig(_Strict):
    """How an executor exports and imports its state (the contract is in docs/state.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    http: str | None = Field(default=None,
                             description="path on the executor: GET exports, PUT imports")
    export: list[str] | None = Field(default=None, min_length=1,
                                     description="command printing the state on stdout")
    import_: list[str] | None = Field(default=None, alias="import", min_length=1,
                                      description="command reading the state on stdin")

    @model_validator(mode="after")
    def _one_way(self) -> StateConfig:
        commands = (self.export is not None, self.import_ is not None)
        if self.http is not None and any(commands):
            raise ValueError("give either http or export and import, not both")
        if self.http is None and not all(commands):
            raise ValueError("needs http, or both export and import")
        if self.http is not None and not self.http.startswith("/"):
            raise ValueError(f"http: a path starting with '/', got {self.http!r}")
        return self


class CheckpointConfig(_Strict):
    """When the gateway takes a voted checkpoint of the executors' state."""

    every_writes: int = Field(default=1000, ge=1, description="writes between checkpoints")
    every_seconds: float = Field(default=300.0, gt=0,
                                 description="seconds between checkpoints (if anything changed)")
    hold: float = Field(default=10.0, gt=0,
                        description="longest time writes are held back while one is taken")
    canonicalise: dict[str, Any] = Field(
        default_factory=dict, description="one body rule (json, text or exact) for exports")


class Admitting(_Strict):
    """One side of an admission (docs/identity.md): its own identity key, and the peers' keys
    or a CA that certifies them. The gateway's `AgentRef` and the agent's file both say this,
    with the same keys and the same checks."""

    nobody_admitted: ClassVar[str]
    """Why neither ``keys`` nor ``authority`` will do, in the words of the side that reads it."""

    identity: Path = Field(description="this side's own Ed25519 identity key (PEM)")
    certificate: Path | None = Field(
        default=None, description="a certificate for this side's key, for peers that admit by "
                                  "authority")
    keys: list[str] = Field(default_factory=list,
                            description="the peers' public keys: 64 hex digits or PEM")
    authority: Path | None = Field(
        default=None, description="a CA (PEM) whose certificates for peers' keys are trusted")

    @model_validator(mode="after")
    def _trusted(self) -> Admitting:
        if not self.keys and self.authority is None:
            raise ValueError(self.nobody_admitted)
        return self

    def files_under(self, here: Path) -> dict[str, Path | None]:
        """The identity settings' files relative to ``here`` (the config's directory), as a
        `model_copy` update."""
        return {"identity": here / self.identity,
                "certificate": None if self.certificate is None else here / self.certificate,
                "authority": None if self.authority is None else here / self.authority}


class AgentRef(Admitting):
    """An executor that `endosec agent` runs on another host; the gateway drives it there.

    The gateway and the agent admit each other by proving possession of their identity keys
    (docs/identity.md): ``identity`` is the gateway's key, ``keys`` or ``authority`` say which
    agent it drives; the channel is HTTPS with the agent's certificate pinned."""

    nobody_admitted = ("give keys (the agent's public keys) or authority (a CA that certifies "
                       "the agent's key): nothing else admits an agent")

    url: str = Field(description="the agent's API: https://HOST:PORT")
    executor: str | None = Field(default=None,
                                 description="its name on the agent (default: this name)")
    ca: Path = Field(description="the agent's certificate (PEM), pinned: nothing else is trusted")
    reprove_every: float = Field(
        default=600.0, gt=0, description="mean seconds between proofs (exponentially "
                                         "distributed; always before the admission ends)")

    @field_validator("url")
    @classmethod
    def _https(cls, v: str) -> str:
        scheme, _, rest = v.partition("://")
        if scheme != "https":
            raise ValueError(f"must be https://HOST:PORT (never plain text between hosts), "
                             f"got {v!r}")
        parse_address(rest.rstrip("/"))
        return v

    def relative_to(self, here: Path) -> AgentRef:
        """The same reference with its files relative to ``here`` (the config's directory)."""
        return self.model_copy(update={"ca": here / self.ca, **self.files_under(here)})


class UnmanagedCleanse(_Strict):
    """How to restore an unmanaged executor: a command run here, or a webhook called."""

    command: list[str] | None = Field(default=None, min_length=1)
    webhook: str | None = Field(default=None, description="POSTed to; http:// or https://")
    timeout: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _one(self) -> UnmanagedCleanse:
        if (self.command is None) == (self.webhook is None):
            raise ValueError("give exactly one of command or webhook")
        if self.webhook is not None and not self.webhook.startswith(("http://", "https://")):
            raise ValueError(f"webhook: must be an http:// or https:// URL, got {self.webhook!r}")
        return self


_LOCAL_ONLY = ("cwd", "port", "template", "sandbox")  # (and network other than auto)


class ExecutorConfig(_Strict):
    """One executor: a local process (``argv``), one an agent runs on another host
    (``agent``), or an existing service endosec does not manage (``url``)."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    argv: list[str] | None = Field(default=None, min_length=1)
    agent: AgentRef | None = None
    url: str | None = Field(default=None, description="http://HOST:PORT of a running service")
    cleanse: UnmanagedCleanse | None = Field(
        default=None, description="how to restore a url executor (else a human must)")
    cwd: Path | None = None
    env: dict[str, str] = Field(default_factory=dict)
    host: str = Field(default="127.0.0.1",
                      description="where a local executor listens ({host} in argv)")
    port: int | None = Field(default=None, ge=1, le=65535,
                             description="fixed port; omit to let the gateway allocate {port}")
    health: HealthConfig = Field(default_factory=HealthConfig)
    connect_timeout: float | None = Field(default=None, gt=0,
                                          description="overrides limits.connect_timeout")
    read_timeout: float | None = Field(default=None, gt=0,
                                       description="overrides limits.read_timeout")
    template: Path | None = Field(default=None, description="pristine scratch directory")
    sandbox: bool = False
    network: Literal["auto", "isolated", "host"] = Field(
        default="auto", description="isolated: its own network namespace, reached only by the "
                                    "gateway, nothing out (needs root, ip and nft); host: the "
                                    "host's network; auto: isolated when possible")
    stateless: bool = Field(default=False,
                            description="no journal replay needed after cleansing")
    state: StateConfig | None = Field(default=None,
                                      description="state export and import, for checkpoints")
    profile: list[str] = Field(min_length=1, description="components this executor is built from")

    @model_validator(mode="after")
    def _kind(self) -> ExecutorConfig:
        kinds = [k for k in ("argv", "agent", "url") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("needs exactly one of argv (a local process), agent (run by "
                             "`endosec agent` elsewhere) or url (a service endosec does not "
                             f"manage); got {', '.join(kinds) or 'none'}")
        if self.argv is None:
            given = [k for k in _LOCAL_ONLY if getattr(self, k) not in (None, False)]
            given += ["network"] if self.network != "auto" else []
            if given or self.env:
                raise ValueError(f"{', '.join(given or ['env'])}: only for argv executors "
                                 "(an agent's executors are configured on the agent)")
        if self.cleanse is not None and self.url is None:
            raise ValueError("cleanse: only for url executors")
        if self.url is not None:
            scheme, _, rest = self.url.partition("://")
            if scheme != "http":
                raise ValueError(f"url: must be http://HOST:PORT, got {self.url!r}")
            parse_address(rest.rstrip("/"))
        return self

    @property
    def kind(self) -> Literal["argv", "agent", "url"]:
        return "argv" if self.argv is not None else "agent" if self.agent is not None else "url"

    def as_profile(self) -> Profile:
        return Profile(self.name, frozenset(self.profile))


class DnsConfig(_Strict):
    """How DNS replies are compared (used when ``protocol`` is ``dns``)."""

    flags: tuple[Literal["AA", "TC", "RD", "RA", "AD", "CD"], ...] = Field(
        default=("AA", "TC", "RD", "RA"), description="header flags compared")
    ttl: Literal["compare", "mask"] = "compare"
    ttl_tolerance: int = Field(default=0, ge=0, description="seconds TTLs may differ by")
    additional: Literal["all", "referrals"] = Field(
        default="all", description="referrals: vote on (and send) additional only in referrals")
    udp_payload: int = Field(default=1232, ge=512, le=65535,
                             description="the gateway's EDNS UDP payload size")
    max_udp_inflight: int = Field(default=1024, ge=1,
                                  description="UDP queries answered at once; more are dropped")
    refuse_types: tuple[int, ...] = Field(
        default=(), description="question types answered REFUSED before fan-out (mnemonics "
                                "or numbers; type 0 and the meta types 128-255 always are)")

    @field_validator("refuse_types", mode="before")
    @classmethod
    def _types(cls, v: object) -> tuple[int, ...]:
        if isinstance(v, str) or not isinstance(v, list | tuple):
            raise ValueError("expected a list of DNS types (mnemonics such as NULL, or numbers)")
        return tuple(_dns_type(t) for t in v)


def _dns_type(value: object) -> int:
    """A DNS type given by mnemonic (``NULL``, ``TYPE65534``) or number, as its number."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 65535:
        return value
    if isinstance(value, str):
        with contextlib.suppress(dns.exception.DNSException, ValueError):
            return int(dns.rdatatype.from_text(value))
    raise ValueError(f"{value!r} is not a DNS type (a mnemonic such as NULL, or a number "
                     "from 0 to 65535)")


class HttpConfig(_Strict):
    """What the input agent serves before fan-out (used when ``protocol`` is ``http``)."""

    methods: tuple[str, ...] | None = Field(
        default=None, description="methods served; others get 405 with Allow (default: every "
                                  "method the input agent admits)")
    targets: Literal["forward", "normalise", "refuse"] = Field(
        default="forward", description="paths not in normal form (empty or dot segments, "
                                       "needless percent-encoding): as sent, normalised, or 404")

    @field_validator("methods")
    @classmethod
    def _admitted(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("an empty list refuses every request")
        for i, method in enumerate(v):
            if method not in _native.HTTP_METHODS:
                raise ValueError(f"{method!r} is not a method the input agent admits "
                                 f"(it answers 501 to it before this list is read)")
            if method in v[:i]:
                raise ValueError(f"{method} is listed twice")
        return v


_HEADER_NAME = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"


class FaceConfig(_Strict):
    """What replies show of the executors behind them: nothing that names one."""

    remove: tuple[str, ...] = Field(
        default=("server", "x-powered-by", "via"),
        description="header names removed from every reply (they name a product)")
    set: dict[str, str] = Field(default_factory=dict,
                                description="headers set on every reply, e.g. {server: web}")
    unvoted: Literal["drop", "keep"] = Field(
        default="drop", description="drop: headers the vote did not look at (exempt by the "
                                    "canonicalisation rules for the reply's status, or outside "
                                    "headers.allow) are not passed on, since they differ "
                                    "between stacks; Date and Content-Length stay")
    json_bodies: Literal["canonical", "keep"] = Field(
        default="canonical", description="canonical: a body under a JSON rule goes out "
                                         "re-encoded (keys sorted, no spaces) as "
                                         "application/json, since each stack formats JSON and "
                                         "names its media type its own way; keep: as the "
                                         "answering executor wrote it")

    @field_validator("remove")
    @classmethod
    def _names(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for name in v:
            if not re.match(_HEADER_NAME, name):
                raise ValueError(f"{name!r} is not a header name")
        return tuple(n.lower() for n in v)

    @field_validator("set")
    @classmethod
    def _pairs(cls, v: dict[str, str]) -> dict[str, str]:
        for name, value in v.items():
            if not re.match(_HEADER_NAME, name):
                raise ValueError(f"{name!r} is not a header name")
            if any(c in value for c in "\r\n\0"):
                raise ValueError(f"the value for {name} holds a line break or NUL")
        return {n.lower(): value for n, value in v.items()}


class GatewayConfig(_Strict):
    threads: int | None = Field(default=None, ge=1,
                                description="data-plane worker threads (default: every core)")
    drain_timeout: float = Field(default=10.0, ge=0,
                                 description="seconds in-flight requests get at shutdown")
    verdict_headers: bool = Field(default=False,
                                  description="add X-Endosec-Verdict to replies")
    verdict_names: bool = Field(default=False,
                                description="debugging: verdict headers also name who agreed "
                                            "and who dissented (tells any client who voted)")
    face: FaceConfig = Field(default_factory=FaceConfig)
    events: Path | None = Field(default=None, description="JSON-lines event file (default stderr)")
    access_log: Path | Literal["stderr"] | None = Field(
        default=None, description="one JSON line per request: a file, or stderr")
    recent_verdicts: int = Field(default=50, ge=0)

    @property
    def effective_threads(self) -> int:
        return self.threads or os.cpu_count() or 1


class RedactConfig(_Strict):
    """What never reaches evidence files: header values, JSON fields, text patterns."""

    headers: list[str] = Field(default_factory=lambda: [
        "authorization", "cookie", "set-cookie", "proxy-authorization"])
    fields: list[str] = Field(default_factory=list,
                              description="JSON fields to mask, by pointer or glob path")
    patterns: list[str] = Field(default_factory=list,
                                description="regular expressions to mask in any body")

    @model_validator(mode="after")
    def _compiles(self) -> RedactConfig:
        try:
            JsonRule(mask=self.fields)
        except ValueError as exc:
            raise ValueError("fields" + str(exc).removeprefix("mask")) from None
        try:
            TextRule(masks=self.patterns)
        except ValueError as exc:
            raise ValueError("patterns" + str(exc).removeprefix("masks")) from None
        return self


class EvidenceConfig(_Strict):
    """The replies of dissenters and winners, kept under STATE_DIR/evidence/ for operators."""

    bodies: bool = Field(default=False, description="keep bodies (redacted), not only heads")
    max_body: int = Field(default=64 << 10, ge=0, description="bytes of each body kept")
    keep: int = Field(default=200, ge=1, description="evidence files kept at most")
    max_bytes: int = Field(default=16 << 20, ge=1, description="bytes of evidence kept at most")
    redact: RedactConfig = Field(default_factory=RedactConfig)


class TlsConfig(_Strict):
    """TLS on the client listener: a PEM certificate chain and its private key."""

    cert: Path
    key: Path


class QuantifySection(_Strict):
    """The quantifier's inputs: each component's probability of being exploitable."""

    components: dict[str, float] = Field(default_factory=dict)
    default_p: float | None = Field(default=None, ge=0, le=1,
                                    description="p of a component not listed")

    @field_validator("components")
    @classmethod
    def _probabilities(cls, v: dict[str, float]) -> dict[str, float]:
        for name, p in v.items():
            if not 0 <= p <= 1:
                raise ValueError(f"{name}: must be a probability in [0, 1], got {p!r}")
        return v


class AttestConfig(_Strict):
    """How executors are attested: measured at launch and again at random times
    (`endosec.attest`), against a signed manifest or their first launch."""

    manifest: Path | None = Field(
        default=None, description="the signed manifest (endosec attest manifest); null: the "
                                  "first launch's measurement is the reference (trust on "
                                  "first use)")
    public_key: Path | None = Field(
        default=None, description="the operator's public key the manifest must be signed by "
                                  "(PEM, or 64 hex digits)")
    remeasure_mean: float = Field(
        default=300.0, gt=0, description="mean seconds between re-measurements of a running "
                                         "executor (exponentially distributed)")
    action: Literal["quarantine", "warn", "off"] = Field(
        default="quarantine", description="on a difference: quarantine and cleanse, or only "
                                          "alert; off: no measuring")

    @model_validator(mode="after")
    def _key(self) -> AttestConfig:
        if self.manifest is not None and self.public_key is None:
            raise ValueError("manifest needs public_key: a manifest is only as good as the "
                             "key it must be signed by")
        return self


class ClusterConfig(_Strict):
    """Where the control state lives and how this gateway takes part in its boundary
    (docs/cluster.md)."""

    store: str = Field(default="embedded", description="'embedded' (in the state directory) "
                       "or etcd://HOST:PORT[,HOST:PORT...]")
    boundary: str = Field(default="endosec", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
                          description="the boundary's name: every key lives under "
                                      "/endosec/BOUNDARY/")
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$",
                             description="this gateway's name in the boundary (default: "
                                         "host name and admin port)")
    lease_ttl: int = Field(default=3, ge=2, le=60, description="seconds a gateway stays a "
                           "member (and leader) after its last renewal")
    anchor_every: float = Field(default=1.0, ge=0.1, le=3600, description="seconds between "
                                "ledger anchors, while the ledger grows")
    chain_keep: int = Field(default=10_000, ge=100, description="links of the boundary's "
                            "chain a shared store keeps (the oldest are deleted)")
    timeout: float = Field(default=2.0, gt=0, le=60, description="seconds one call to the "
                           "store may take, tries on other members included")
    advertise: str | None = Field(default=None, pattern=r"^https?://[^/\s]+$",
                                  description="the URL other gateways reach this one's client "
                                  "listener at, to send it their writes while it leads "
                                  "(default: the listener's own address)")
    poll: float = Field(default=0.25, ge=0.02, le=10, description="seconds between a "
                        "gateway's exchanges of control state with the store: a follower "
                        "applies the leader's decisions within about twice this")
    stale_after: float | None = Field(default=10.0, gt=0, description="seconds a gateway cut "
                                      "off from the store keeps serving on what it knew before "
                                      "it fails closed (null: never)")

    @field_validator("store")
    @classmethod
    def _store(cls, v: str) -> str:
        parse_store_url(v)  # ValueError names what is wrong
        return v


class Config(_Strict):
    protocol: Literal["http", "dns"] = "http"
    listen: str = "127.0.0.1:8080"
    tls: TlsConfig | None = None
    admin: AdminConfig = Field(default_factory=AdminConfig)
    state_dir: Path | None = None
    arbiter: ArbiterConfig = Field(default_factory=ArbiterConfig)
    controller: ControllerConfig = Field(default_factory=ControllerConfig)
    attribution: AttributionConfig = Field(default_factory=AttributionConfig)
    threat: ThreatConfig = Field(default_factory=ThreatConfig)
    trust: TrustConfig = Field(default_factory=TrustConfig)
    immune: ImmuneConfig = Field(default_factory=ImmuneConfig)
    behaviour: BehaviourConfig = Field(default_factory=BehaviourConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    journal: JournalConfig = Field(default_factory=JournalConfig)
    gateway: GatewayConfig = Field(default_factory=GatewayConfig)
    canonicalise: dict[str, Any] = Field(default_factory=dict)
    dns: DnsConfig = Field(default_factory=DnsConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    quantify: QuantifySection = Field(default_factory=QuantifySection)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    evidence: EvidenceConfig = Field(default_factory=EvidenceConfig)
    attest: AttestConfig = Field(default_factory=AttestConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    executors: list[ExecutorConfig] = Field(min_length=1)

    @field_validator("listen")
    @classmethod
    def _address(cls, v: str) -> str:
        parse_address(v)
        return v

    @model_validator(mode="after")
    def _pool(self) -> Config:
        names = [e.name for e in self.executors]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"executor names must be unique; repeated: {', '.join(duplicates)}")
        if self.controller.active > len(self.executors):
            raise ValueError(f"controller.active ({self.controller.active}) exceeds the "
                             f"{len(self.executors)} executors declared")
        if self.protocol == "dns":
            for i, e in enumerate(self.executors):
                if e.health.dns_query is None:
                    raise ValueError(f"executors[{i}].health.dns_query: required when protocol "
                                     "is dns")
        if self.checkpoint.canonicalise:
            try:
                compile_rules({"bodies": [self.checkpoint.canonicalise]})
            except ValueError as exc:
                raise ValueError(f"checkpoint.canonicalise: {exc}") from None
        if self.tls is not None and self.protocol != "http":
            raise ValueError("tls: only the http protocol serves TLS")
        if self.arbiter.k is not None and self.arbiter.k > self.controller.active:
            raise ValueError(f"arbiter.k ({self.arbiter.k}) exceeds controller.active "
                             f"({self.controller.active})")
        return self


def checkpoints_possible(config: Config) -> bool:
    """Whether every executor that keeps state can export it (else the journal is kept whole)."""
    return any(e.state for e in config.executors) and all(
        e.state is not None or e.stateless for e in config.executors)


def _resolve_paths(config: Config, here: Path) -> Config:
    executors = []
    for e in config.executors:
        update: dict[str, Any] = {}
        if e.argv is not None:
            update["cwd"] = (here / e.cwd) if e.cwd is not None else here
            update["template"] = (here / e.template) if e.template is not None else None
        if e.agent is not None:
            update["agent"] = e.agent.relative_to(here)
        executors.append(e.model_copy(update=update))
    top: dict[str, Any] = {"executors": executors}
    if config.tls is not None:
        top["tls"] = TlsConfig(cert=here / config.tls.cert, key=here / config.tls.key)
    if config.state_dir is not None:
        top["state_dir"] = here / config.state_dir
    if config.controller.rotation_policy is not None:
        top["controller"] = config.controller.model_copy(
            update={"rotation_policy": here / config.controller.rotation_policy})
    gateway: dict[str, Any] = {}
    if config.gateway.events is not None:
        gateway["events"] = here / config.gateway.events
    if isinstance(config.gateway.access_log, Path):
        gateway["access_log"] = here / config.gateway.access_log
    if gateway:
        top["gateway"] = config.gateway.model_copy(update=gateway)
    a = config.attest
    if a.manifest is not None and a.public_key is not None:
        top["attest"] = a.model_copy(update={"manifest": here / a.manifest,
                                             "public_key": here / a.public_key})
    return config.model_copy(update=top)


def config_from_mapping(data: Mapping[str, Any], *, source: str, here: Path,
                        locate: Locate | None = None) -> Config:
    """Validate an already-parsed configuration; relative paths resolve against ``here``.

    Errors name the field (``locate`` adds the line), and suggest the nearest known key for
    one that is not known.
    """
    config = _resolve_paths(validate(Config, expand(dict(data), here), source, locate), here)
    if config.tls is not None:
        readable_tls(config.tls, source)
    if config.controller.rotation_policy is not None:
        try:
            load_rotation_policy(config.controller.rotation_policy)
        except (OSError, PolicyFileError) as exc:
            raise ConfigError(f"{source}: controller.rotation_policy: "
                              f"{getattr(exc, 'strerror', None) or exc}") from None
    if config.attest.manifest is not None and config.attest.action != "off":
        from endosec.attest.manifest import AttestError  # noqa: PLC0415 (a cycle otherwise)
        from endosec.gateway.attestation import Attestor  # noqa: PLC0415
        try:
            Attestor.from_config(config.attest, random.Random())
        except AttestError as exc:
            raise ConfigError(f"{source}: attest: {exc}") from None
    return config


def load_rotation_policy(path: Path) -> RotationPolicy:
    """The learned rotation policy in ``path``; `PolicyFileError` or `OSError`."""
    return RotationPolicy.from_json(path.read_text(encoding="utf-8"))


def load_config(path: Path | str) -> Config:
    """Read and validate a YAML configuration file."""
    path = Path(path)
    data, locate = read_yaml(path)
    return config_from_mapping(data, source=str(path), here=path.resolve().parent,
                               locate=locate)


def load_profiles(path: Path | str) -> list[Profile]:
    """The executors' profiles declared in a configuration file (for the quantifier)."""
    return [e.as_profile() for e in load_config(path).executors]
