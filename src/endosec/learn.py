"""Noise learned, not guessed: canonicalisation rules proposed from observed divergence.

The gateway logs every dissenting verdict (``dissent`` events) and keeps the winner's and the
dissenters' replies as evidence (``STATE_DIR/evidence/``: status, headers and, with
``evidence.bodies``, the body). `learn` finds what differs between the winner's reply and each
dissenter's under the rules in force and proposes, as a YAML patch with the evidence for each
rule, the rules that make repeated dissent on one request class (method + path template) agree.
Nothing is applied: an operator reads the patch and merges it (`apply_patch` says how).

A dissent is *benign* only if every difference in it may be canonicalised:

* a header that differs on one status: ``canonicalise.headers.ignore_on_status {status: [name]}``
  (a Content-Type spelled differently with the same media type: ``content_type: media-type``).
  Headers that carry a security decision (`SECURITY_HEADERS`) are never proposed, nor is
  Content-Length unless the body difference behind it is;
* JSON leaves, in a body rule limited to the class's path and the reply's status: on redirects
  and errors (status >= 300) any leaf (``mask`` when both replies have it, ``ignore`` when one
  does); on 2xx, which is the content served, only values that look volatile (`VOLATILE`);
* other bodies: the volatile tokens in them masked (a text rule); on redirects and errors,
  when that is not enough, the whole body of that path and status;
* a status difference never: it says what happened. For DNS (whose dissent events carry no
  replies) a query type outside `COMMON_DNS_TYPES` that draws repeated dissent is proposed
  for ``dns.refuse_types``: refused before fan-out.

Heterogeneous dissent must repeat (``min_count`` verdicts with the same differences on one
class). A *noise twin* is a second executor with the same profile (the same stack): what
differs between twins is noise, proposed on one sighting and for every status (headers as
``headers.ignore``); only the never-proposed kinds above stay withheld. See docs/learn.md.
"""

from __future__ import annotations

import base64
import copy
import json
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from endosec.config import Config
from endosec.core.canonicalise import RuleSet, TextRule, compile_rules
from endosec.protocols.http import Response, response_output

__all__ = ["COMMON_DNS_TYPES", "SECURITY_HEADERS", "VOLATILE", "Difference", "Learned",
           "Observation", "Proposal", "apply_patch", "learn", "read_events", "render",
           "template"]

SECURITY_HEADERS = frozenset({
    "set-cookie", "location", "content-location", "refresh", "link", "www-authenticate",
    "proxy-authenticate", "authentication-info", "content-security-policy",
    "content-security-policy-report-only", "strict-transport-security", "x-frame-options",
    "x-content-type-options", "x-xss-protection", "referrer-policy", "permissions-policy",
    "cross-origin-opener-policy", "cross-origin-embedder-policy",
    "cross-origin-resource-policy", "cache-control", "pragma", "expires", "vary", "age",
    "content-disposition", "content-encoding", "content-type", "clear-site-data", "alt-svc",
})
"""Headers whose differences are never proposed for exemption: each decides how a client
stores, trusts, caches or renders the reply (every ``access-control-*`` header too)."""

VOLATILE: Mapping[str, str] = {
    "timestamp": r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(?::\d\d(?:\.\d+)?)?(?:Z|[+-]\d\d:?\d\d)?",
    "http-date": r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d [A-Z][a-z]{2} \d{4} "
                 r"\d\d:\d\d:\d\d GMT",
    "uuid": r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
    "hex-id": r"\b[0-9a-f]{16,}\b",
}
"""Values that legitimately differ between two correct replies (clocks, request ids)."""

COMMON_DNS_TYPES = frozenset({
    "A", "AAAA", "CNAME", "MX", "NS", "SOA", "TXT", "SRV", "PTR", "CAA", "DS", "DNSKEY",
    "RRSIG", "NSEC", "NSEC3", "NSEC3PARAM", "HTTPS", "SVCB", "TLSA", "SSHFP", "NAPTR", "CDS",
    "CDNSKEY", "DNAME", "LOC", "HINFO", "URI", "OPENPGPKEY", "SMIMEA", "ZONEMD"})
"""Query types clients ask for real data: never proposed for refusal."""

SECURITY = "it carries a security decision"
STATUS = "a status says what happened: make the executors agree, or refuse the request"
CONTENT = "a 2xx body is the content served: only volatile-looking values are proposed"
TEXT = "a 2xx body is the content served, and no volatile token explains the difference"
DEPENDS = "it follows a body difference that is not proposed"
UNSEEN = "bodies were not kept (turn on evidence.bodies)"
_VOLATILE = tuple(re.compile(p) for p in VOLATILE.values())
_WHOLE_BODY = "(?s).+"
_ID_SEGMENT = re.compile(r"\d+|[0-9a-fA-F]{8,}|[0-9a-fA-F-]{36}")
# Epoch times (seconds, then milliseconds; 2001..2286) less than a day apart are clocks.
_EPOCH = ((1e9, 1e10, 86_400), (1e12, 1e13, 86_400_000))
_ABSENT = object()


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes | None  # None: not kept

    @classmethod
    def from_evidence(cls, data: Mapping[str, Any]) -> Reply:
        body = data.get("body")
        raw = None if body is None else (
            base64.b64decode(body[7:]) if body.startswith("base64:") else body.encode())
        return cls(int(data["status"]), tuple((n.encode("latin-1"), v.encode("latin-1"))
                                              for n, v in data["headers"]), raw)

    def media(self) -> str:
        value = next((v for n, v in self.headers if n.lower() == b"content-type"), b"")
        return value.decode("latin-1").partition(";")[0].strip().lower()


@dataclass(frozen=True, slots=True)
class Difference:
    """One way two replies differ under the rules in force.

    ``kind``: header, content-type, json, text, status or body (not kept). ``name``: the header
    name, the JSON path, or the text masks joined by newlines. ``op``: mask or ignore (JSON).
    ``withheld``: why it is never proposed ("" when it may be).
    """

    kind: str
    status: int
    name: str = ""
    op: str = ""
    withheld: str = ""
    detail: str = ""

    def key(self) -> tuple[str, int, str, str]:
        return self.kind, self.status, self.name, self.op

    def describe(self) -> str:
        what = {"header": f"header {self.name}", "content-type": "Content-Type spelling",
                "json": f"JSON {self.name}", "text": "body text", "body": "body"}.get(
                    self.kind, self.kind)
        where = "" if self.kind == "status" else f" on {self.status}"
        return f"{what}{where}" + (f": {self.detail}" if self.detail else "")


@dataclass(frozen=True, slots=True)
class Observation:
    """One executor's reply against the winner's (or its twin's) in one dissenting verdict."""

    verdict: int  # the verdict's place in the event log (evidence ids repeat for equal replies)
    evidence: str
    klass: str  # "METHOD /path/template"
    template: str
    media: str
    reference: str
    dissenter: str
    diffs: tuple[Difference, ...]
    noise: bool
    replies: tuple[Reply, Reply]
    path: str


@dataclass(slots=True)
class Proposal:
    """One rule of the patch and the evidence for it."""

    rule: str
    classes: set[str] = field(default_factory=set)
    observations: list[Observation] = field(default_factory=list)
    noise: bool = False
    details: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Learned:
    patch: dict[str, Any]
    proposals: list[Proposal]
    withheld: dict[str, list[str]]  # class -> why its dissent is not explained
    dissents: int = 0  # dissent events read
    observed: int = 0  # dissenter replies compared (with evidence)
    explained: int = 0  # of those, how many agree once the patch is merged
    missing: int = 0  # dissent events whose evidence was not found


def template(path: str) -> str:
    """A request class's path: numeric and id-like segments become ``*``."""
    return "/".join("*" if _ID_SEGMENT.fullmatch(s) else s for s in path.split("/"))


def read_events(path: Path) -> list[dict[str, Any]]:
    """Every dissenting verdict in a JSON-lines event log (malformed lines skipped)."""
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") == "dissent" \
                and event.get("dissented"):
            out.append(event)
    return out


# -- differences -----------------------------------------------------------------------------

def _volatile(a: object, b: object) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return any(p.fullmatch(a) and p.fullmatch(b) for p in _VOLATILE)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) \
            and not isinstance(a, bool) and not isinstance(b, bool):
        return any(lo <= a < hi and lo <= b < hi and abs(a - b) < day
                   for lo, hi, day in _EPOCH)
    return False


def _leaves(value: object, exact: str = "", general: str = "") -> dict[str, tuple[str, object]]:
    """Every leaf of a JSON value: exact pointer -> (the pointer with list indexes as ``*``,
    so that one rule covers every element; the value)."""
    items: list[tuple[str, object]] = []
    if isinstance(value, dict) and value:
        items = [(str(k).replace("~", "~0").replace("/", "~1"), v) for k, v in value.items()]
    elif isinstance(value, list) and value:
        items = [(str(i), v) for i, v in enumerate(value)]
    if not items:
        return {exact or "/": (general or "/", value)}
    out: dict[str, tuple[str, object]] = {}
    for segment, v in items:
        out.update(_leaves(v, f"{exact}/{segment}",
                           f"{general}/{'*' if isinstance(value, list) else segment}"))
    return out


def _json(rules: RuleSet, path: str, reply: Reply) -> object:
    assert reply.body is not None
    canonical = rules.for_response(path, reply.media(), reply.status).canonicalise(reply.body)
    if canonical.value is not None:
        return canonical.value
    try:
        return json.loads(reply.body)
    except ValueError:
        return None


def _body(rules: RuleSet, path: str, a: Reply, b: Reply) -> list[Difference]:
    status = a.status
    assert a.body is not None and b.body is not None
    ja, jb = _json(rules, path, a), _json(rules, path, b)
    if ja is not None and jb is not None:
        la, lb = _leaves(ja), _leaves(jb)
        out: list[Difference] = []
        for pointer in sorted(la.keys() | lb.keys()):
            name = (la.get(pointer) or lb[pointer])[0]
            va, vb = (side[pointer][1] if pointer in side else _ABSENT for side in (la, lb))
            if va == vb:
                continue
            both = pointer in la and pointer in lb
            benign = status >= 300 or (both and _volatile(va, vb))
            shown = " / ".join("(none)" if v is _ABSENT else json.dumps(v)[:60]
                               for v in (va, vb))
            d = Difference("json", status, name, "mask" if both else "ignore",
                           "" if benign else CONTENT, shown)
            if d not in out:
                out.append(d)
        return out
    masks = [p for p in _VOLATILE if p.search(a.body.decode("utf-8", "replace"))
             or p.search(b.body.decode("utf-8", "replace"))]
    rule = TextRule(masks=[p.pattern for p in masks])
    if masks and rule.canonicalise(a.body).key == rule.canonicalise(b.body).key:
        return [Difference("text", status, "\n".join(p.pattern for p in masks),
                           detail="volatile tokens")]
    if status >= 300 and a.body and b.body:
        return [Difference("text", status, _WHOLE_BODY, detail="the whole body")]
    return [Difference("text", status, withheld=TEXT,
                       detail=f"{len(a.body)} / {len(b.body)} bytes")]


def differences(rules: RuleSet, path: str, a: Reply, b: Reply) -> tuple[Difference, ...]:
    """How ``b`` differs from ``a`` under ``rules`` (for the request ``path``)."""
    if a.status != b.status:
        return (Difference("status", a.status, withheld=STATUS,
                           detail=f"{a.status} / {b.status}"),)
    status = a.status
    out: list[Difference] = []
    heads = [rules.headers.canonical_headers(r.headers, status) for r in (a, b)]
    for name in sorted({n for head in heads for n, _ in head}):
        va, vb = ([v for n, v in head if n == name] for head in heads)
        if va == vb:
            continue
        text = name.decode("latin-1")
        shown = " / ".join(b", ".join(v).decode("latin-1") or "(none)" for v in (va, vb))
        if text == "content-type" and _same_media(a, b):
            out.append(Difference("content-type", status, text, detail=shown))
            continue
        why = SECURITY if text in SECURITY_HEADERS or text.startswith("access-control-") \
            else ""
        out.append(Difference("header", status, text, withheld=why, detail=shown))
    if a.body is None or b.body is None:
        if not out:
            out.append(Difference("body", status, withheld=UNSEEN))
        return tuple(out)
    ca = rules.for_response(path, a.media(), status)
    cb = rules.for_response(path, b.media(), status)
    same = a.body == b.body or ca.equivalent(ca.canonicalise(a.body), cb.canonicalise(b.body))
    body = [] if same else _body(rules, path, a, b)
    if any(d.withheld for d in body):
        out = [Difference(d.kind, d.status, d.name, d.op, DEPENDS, d.detail)
               if d.name == "content-length" and not d.withheld else d for d in out]
    return (*out, *body)


def _same_media(a: Reply, b: Reply) -> bool:
    """Whether two Content-Types differ only in spelling (case, a UTF-8 charset)."""
    rule = compile_rules({"headers": {"content_type": "media-type"}}).headers

    def media(r: Reply) -> list[bytes]:
        return [v for n, v in rule.canonical_headers(r.headers, r.status)
                if n == b"content-type"]

    return media(a) == media(b)


def _response(reply: Reply) -> Response:
    return Response(reply.status, b"", reply.headers, reply.body or b"")


# -- observations ----------------------------------------------------------------------------

def _twins(config: Config) -> dict[str, set[str]]:
    """Executors built from the same components: each other's noise reference."""
    by_profile: dict[frozenset[str], set[str]] = defaultdict(set)
    for e in config.executors:
        by_profile[frozenset(e.profile)].add(e.name)
    return {name: group - {name} for group in by_profile.values() for name in group}


def _observe(twins: Mapping[str, set[str]], rules: RuleSet, index: int,
             event: Mapping[str, Any], record: Mapping[str, Any]) -> list[Observation]:
    verdict = record["verdict"]
    replies = {n: Reply.from_evidence(r) for n, r in record["replies"].items()}
    winner, path = verdict.get("winner"), str(verdict["path"])
    if winner not in replies:
        return []
    agreed, digests = set(event.get("agreed", ())), event.get("digests", {})
    klass = f"{verdict['method']} {template(path)}"
    out = []
    for name in event["dissented"]:
        if name not in replies:
            continue
        pairs = [(winner, bool(twins.get(name, set()) & agreed))]
        pairs += [(t, True) for t in sorted(twins.get(name, set()))
                  if t in replies and t != winner and digests.get(t) != digests.get(name)]
        for ref, noise in pairs:
            a, b = replies[ref], replies[name]
            out.append(Observation(index, str(event["evidence"]), klass, template(path), a.media(),
                                   ref, name, differences(rules, path, a, b), noise, (a, b),
                                   path))
    return out


def _benign(obs: Observation) -> bool:
    return bool(obs.diffs) and all(
        not d.withheld or (obs.noise and d.withheld == CONTENT) for d in obs.diffs)


# -- the patch -------------------------------------------------------------------------------

def apply_patch(data: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` (a configuration mapping) with ``patch`` merged in, as an operator would:
    mappings key by key, lists of names as a union in order, body rules before the existing
    ones (the first matching rule wins), anything else replaced."""
    out = copy.deepcopy(dict(data))
    for key, value in patch.items():
        current = out.get(key)
        if isinstance(value, Mapping) and isinstance(current, Mapping):
            out[key] = apply_patch(current, value)
        elif key == "bodies" and isinstance(current, list):
            out[key] = [*copy.deepcopy(value), *current]
        elif isinstance(value, list) and isinstance(current, list):
            out[key] = current + [v for v in value if v not in current]
        else:
            out[key] = copy.deepcopy(value)
    return out


def _existing_body(config: Mapping[str, Any], path: str, media: str, status: int | None
                   ) -> Mapping[str, Any]:
    """The configured body rule a reply of this class meets today (the first match), whose
    settings a rule put before it must keep."""
    rules = config.get("bodies") or []
    for raw, rule in zip(rules, compile_rules({"bodies": rules}).bodies, strict=True):
        if rule.matches(path, media, status or 200):
            return raw  # type: ignore[no-any-return]
    return {}


def _body_rule(existing: Mapping[str, Any], tmpl: str, media: str, status: int | None,
               diffs: Iterable[Difference]) -> dict[str, Any]:
    rule: dict[str, Any] = {"path": tmpl}
    if media:
        rule["content_type"] = media
    if status is not None:
        rule["status"] = status
    diffs = list(diffs)
    if diffs[0].kind == "json":
        body = dict(existing.get("json") or {})
        for op in ("ignore", "mask"):
            names = list(body.get(op) or [])
            names += [d.name for d in diffs if d.op == op and d.name not in names]
            if names:
                body[op] = names
        rule["json"] = body
    else:
        masks = list((existing.get("text") or {}).get("masks") or [])
        for d in diffs:
            masks += [m for m in d.name.split("\n") if m not in masks]
        rule["text"] = {"masks": masks}
    return rule


def _build(canon: Mapping[str, Any], accepted: Sequence[Observation]
           ) -> tuple[dict[str, Any], list[Proposal]]:
    headers: dict[str, Any] = {}
    bodies: dict[tuple[str, str, str, int | None], list[Difference]] = defaultdict(list)
    proposals: dict[str, Proposal] = {}

    def note(rule: str, obs: Observation, d: Difference) -> None:
        p = proposals.setdefault(rule, Proposal(rule, noise=obs.noise))
        p.classes.add(obs.klass)
        if obs.verdict not in {o.verdict for o in p.observations}:
            p.observations.append(obs)
        line = f"{obs.klass}: {obs.reference} / {obs.dissenter}: {d.describe()}"
        if line not in p.details:
            p.details.append(line)

    for obs in accepted:
        for d in obs.diffs:
            if d.kind == "header" and obs.noise:
                names = headers.setdefault("ignore", [])
                rule = f"canonicalise.headers.ignore: {d.name}"
            elif d.kind == "header":
                names = headers.setdefault("ignore_on_status", {}).setdefault(d.status, [])
                rule = f"canonicalise.headers.ignore_on_status: {{{d.status}: [{d.name}]}}"
            elif d.kind == "content-type":
                headers["content_type"] = "media-type"
                note("canonicalise.headers.content_type: media-type", obs, d)
                continue
            else:
                status = None if obs.noise else d.status
                media = obs.media if d.kind == "json" else ""
                key = (d.kind, obs.template, media, status)
                if d not in bodies[key]:
                    bodies[key].append(d)
                where = f"{obs.template}" + (f" on {status}" if status else "")
                note(f"canonicalise.bodies: {d.kind} rule for {where}", obs, d)
                continue
            if d.name not in names:
                names.append(d.name)
            note(rule, obs, d)
    patch: dict[str, Any] = {}
    if headers:
        patch["headers"] = headers
    if bodies:
        patch["bodies"] = [
            _body_rule(_existing_body(canon, tmpl, media, status), tmpl, media, status, diffs)
            for (_, tmpl, media, status), diffs in sorted(
                bodies.items(), key=lambda kv: (kv[0][1], kv[0][3] or 0, kv[0][0]))]
    return ({"canonicalise": patch} if patch else {}), list(proposals.values())


def _agrees(rules: RuleSet, obs: Observation) -> bool:
    """Whether the two replies agree under ``rules`` (on the head alone if bodies were not
    kept, unless the body was what differed)."""
    if any(d.kind == "body" for d in obs.diffs):
        return False
    a, b = (response_output(n, _response(r), rules, obs.path, 0.0)
            for n, r in (("a", obs.replies[0]), ("b", obs.replies[1])))
    return a.agrees_with(b)


def _dns(events: Sequence[Mapping[str, Any]], min_count: int) -> Learned:
    """DNS dissent carries no replies: repeated dissent on a query type nobody asks for real
    data is proposed for refusal before fan-out."""
    by_type: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for e in events:
        by_type[str(e["method"]).upper()].append(e)
    refuse, proposals, withheld = [], [], {}
    for qtype, seen in sorted(by_type.items()):
        names = sorted({str(e["path"]) for e in seen})
        who = sorted({n for e in seen for n in e["dissented"]})
        line = (f"{len(seen)} dissents on {len(names)} names "
                f"({', '.join(names[:3])}{', ...' if len(names) > 3 else ''}); "
                f"dissented: {', '.join(who)}")
        if qtype in COMMON_DNS_TYPES or len(seen) < min_count:
            why = ("a type clients ask for real data" if qtype in COMMON_DNS_TYPES
                   else f"seen {len(seen)} times (at least {min_count} needed)")
            withheld[f"{qtype} queries"] = [f"{line} - {why}"]
            continue
        refuse.append(qtype)
        proposals.append(Proposal(f"dns.refuse_types: {qtype}", {f"{qtype} queries"},
                                  details=[line]))
    patch = {"dns": {"refuse_types": refuse}} if refuse else {}
    return Learned(patch, proposals, withheld, dissents=len(events))


def _signature(obs: Observation) -> tuple[str, frozenset[tuple[str, int, str, str]]]:
    return obs.klass, frozenset(d.key() for d in obs.diffs)


def _unexplained(obs: Observation, seen: int, min_count: int) -> list[str]:
    who = f"{obs.reference} / {obs.dissenter}"
    if not obs.diffs:
        return [f"{who}: no difference under the rules in force (changed since, or the body "
                "was cut at evidence.max_body)"]
    withheld = [f"{who}: {d.describe()} - {d.withheld}" for d in obs.diffs if d.withheld]
    return withheld or [f"{who}: seen {seen} times (at least {min_count} needed)"]


def learn(config: Config, data: Mapping[str, Any], events: Sequence[Mapping[str, Any]],
          evidence: Path | None, *, min_count: int = 3) -> Learned:
    """Propose rules from ``events`` (dissent verdicts) and the ``evidence`` directory.

    ``config`` is the validated configuration (executors' profiles find twins), ``data`` the
    same file as plain data (what the patch is merged into).
    """
    if config.protocol == "dns":
        return _dns(events, min_count)
    canon: Mapping[str, Any] = data.get("canonicalise") or {}
    rules = compile_rules(canon)
    twins = _twins(config)
    observations: list[Observation] = []
    missing = 0
    for index, event in enumerate(events):
        file = None if evidence is None or not isinstance(event.get("evidence"), str) \
            else evidence / f"{event['evidence']}.json"
        if file is None or not file.is_file():
            missing += 1
            continue
        observations += _observe(twins, rules, index, event, json.loads(file.read_text()))
    seen: dict[tuple[str, frozenset[tuple[str, int, str, str]]], set[int]] = defaultdict(set)
    for obs in observations:
        if _benign(obs) and not obs.noise:
            seen[_signature(obs)].add(obs.verdict)
    accepted = [o for o in observations
                if _benign(o) and (o.noise or len(seen[_signature(o)]) >= min_count)]
    patch, proposals = _build(canon, accepted)
    patched = compile_rules(apply_patch(data, patch).get("canonicalise") or {})
    withheld: dict[str, list[str]] = defaultdict(list)
    explained = 0
    for obs in observations:
        if _agrees(patched, obs):
            explained += 1
            continue
        for reason in _unexplained(obs, len(seen[_signature(obs)]), min_count):
            if reason not in withheld[obs.klass]:
                withheld[obs.klass].append(reason)
    if missing:
        withheld["(no evidence)"].append(
            f"{missing} dissents: " + ("their evidence files are gone (evidence.keep bounds "
                                       "how many are kept)" if evidence is not None
                                       else "give --state-dir to read their evidence"))
    return Learned(patch, proposals, dict(withheld), dissents=len(events),
                   observed=len(observations), explained=explained, missing=missing)


# -- rendering -------------------------------------------------------------------------------

def render(learned: Learned, *, source: str, events: str) -> str:
    """The patch as YAML, preceded by comments giving the evidence for each rule."""
    lines = ["# endosec learn: proposed canonicalisation rules (nothing has been applied)",
             f"# configuration: {source}; events: {events}",
             f"# {learned.dissents} dissents read; {learned.observed} replies compared with "
             f"the winner's; with this patch merged, {learned.explained} of them agree.",
             "# Merge into the configuration: mappings key by key, lists of names as a union,",
             "# body rules before the existing ones (the first match wins). Review each rule:",
             "# an exempted difference is no longer voted on.", "#"]
    for i, p in enumerate(learned.proposals, 1):
        ids = sorted({o.evidence[:12] for o in p.observations})
        lines.append(f"# [{i}] {p.rule}" + (" (noise: twins differ)" if p.noise else ""))
        if ids:
            lines.append(f"#     {len(p.observations)} dissents on {', '.join(sorted(p.classes))}"
                         f"; evidence {', '.join(ids[:4])}{' ...' if len(ids) > 4 else ''}")
        lines += [f"#     {d}" for d in p.details[:6]]
    if learned.withheld:
        lines += ["#", "# Not explained (no rule proposed):"]
        for klass, reasons in sorted(learned.withheld.items()):
            lines += [f"#   {klass}: {r}" for r in reasons[:6]]
    body = yaml.safe_dump(learned.patch, sort_keys=False, default_flow_style=None,
                          allow_unicode=True) if learned.patch else "{}\n"
    return "\n".join(lines) + "\n" + body
