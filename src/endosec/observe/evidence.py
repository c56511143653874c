"""Evidence of dissent: the replies of the dissenters and of the winner, kept for people.

When an executor dissents or fails, the data plane hands up each reply's status and headers
(and its body, cut at a bound, when ``evidence.bodies`` is on). The store redacts them by the
configured rules (header values, JSON fields by pointer or glob, text by regular expression:
the canonicalisers' own masks), writes one JSON file per verdict under
``STATE_DIR/evidence/``, named by the SHA-256 of its content (the ledger's dissent record names
that digest), and keeps at most ``keep`` files and ``max_bytes`` bytes, dropping the oldest.
`diff` renders a record as an operator reads it: the winner's reply against each dissenter's,
headers line by line and JSON bodies field by field.
"""

from __future__ import annotations

import base64
import contextlib
import difflib
import hashlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from endosec.core.canonical_json import MASK_TOKEN, JsonRule
from endosec.core.canonicalise import TextRule

__all__ = ["EvidenceStore", "Redaction", "diff", "find"]

_BINARY = "base64:"


@dataclass(frozen=True, slots=True)
class Redaction:
    """What never reaches the evidence files: header values, JSON fields, text patterns."""

    headers: frozenset[str] = frozenset({"authorization", "cookie", "set-cookie",
                                         "proxy-authorization"})
    fields: Sequence[str] = ()
    patterns: Sequence[str] = ()
    _json: JsonRule | None = field(init=False, repr=False, compare=False)
    _text: TextRule | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "headers", frozenset(h.lower() for h in self.headers))
        object.__setattr__(self, "_json", JsonRule(mask=self.fields) if self.fields else None)
        object.__setattr__(self, "_text", TextRule(masks=self.patterns) if self.patterns
                           else None)

    def header(self, name: str, value: str) -> str:
        return MASK_TOKEN if name.lower() in self.headers else value

    def body(self, raw: bytes) -> bytes:
        if self._json is not None:
            key = self._json.canonicalise(raw).key
            if not key.startswith(b"\x00"):  # valid JSON: masked fields, spelled canonically
                raw = key
        if self._text is not None:
            raw = self._text.canonicalise(raw).key
        return raw


def _body_text(body: bytes | None) -> str | None:
    if body is None:
        return None
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return _BINARY + base64.b64encode(body).decode()


class EvidenceStore:
    """Redacted, bounded, content-addressed records of dissenting verdicts."""

    def __init__(self, directory: Path, *, keep: int, max_bytes: int,
                 redaction: Redaction) -> None:
        self.directory = directory
        self.keep_files = keep
        self.max_bytes = max_bytes
        self.redaction = redaction
        directory.mkdir(parents=True, exist_ok=True)
        # Oldest first, name to size: read from the directory once, then kept here, since a
        # gateway under a dissent stream keeps hundreds of records a second.
        found = []
        for path in directory.glob("*.json"):
            with contextlib.suppress(FileNotFoundError):
                info = path.stat()
                found.append((info.st_mtime_ns, path.name, info.st_size))
        self._sizes = {name: size for _, name, size in sorted(found)}
        self._total = sum(self._sizes.values())
        self._prune()

    def keep(self, verdict: Mapping[str, Any], replies: Mapping[str, Mapping[str, Any]]) -> str:
        """Store one verdict's replies; its id (the SHA-256 of the file)."""
        r = self.redaction
        record = {
            "verdict": dict(verdict),
            "replies": {
                name: {"status": reply["status"],
                       "headers": [[n, r.header(n, v)] for n, v in reply["headers"]],
                       "body": _body_text(None if reply.get("body") is None
                                          else r.body(bytes(reply["body"])))}
                for name, reply in replies.items()},
        }
        # Compact: only then does json use its C encoder (`endosec evidence` renders it).
        data = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
        digest = hashlib.sha256(data).hexdigest()
        # Plain string paths: this runs for every dissent, and pathlib's objects were a
        # visible share of it.
        name, stem = f"{digest}.json", os.path.join(self.directory, digest)
        with open(f"{stem}.part", "wb") as out:
            out.write(data)
        os.replace(f"{stem}.part", f"{stem}.json")
        self._total += len(data) - self._sizes.pop(name, 0)
        self._sizes[name] = len(data)
        self._prune()
        return digest

    def _prune(self) -> None:
        while self._sizes and (len(self._sizes) > self.keep_files
                               or self._total > self.max_bytes):
            oldest = next(iter(self._sizes))
            self._total -= self._sizes.pop(oldest)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.directory, oldest))


def find(directory: Path, prefix: str) -> tuple[str, dict[str, Any]]:
    """The record whose id starts with ``prefix``; KeyError when none or several do."""
    found = list(directory.glob(f"{prefix}*.json")) if prefix.isalnum() else []
    if len(found) != 1:
        raise KeyError(f"{len(found)} evidence records match {prefix!r}")
    return found[0].stem, json.loads(found[0].read_text())


def _json_paths(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Every leaf of a JSON document as ``(pointer, encoded value)``."""
    if isinstance(value, dict) and value:
        for k, v in value.items():
            yield from _json_paths(v, f"{path}/{k}")
    elif isinstance(value, list) and value:
        for i, v in enumerate(value):
            yield from _json_paths(v, f"{path}/{i}")
    else:
        yield path or "/", json.dumps(value, ensure_ascii=False)


def _body_diff(a: str | None, b: str | None) -> list[str]:
    if a is None or b is None:
        return ["  (bodies not kept: evidence.bodies is off)"] if a is None and b is None else []
    try:
        left, right = dict(_json_paths(json.loads(a))), dict(_json_paths(json.loads(b)))
    except ValueError:
        return ["  " + line for line in difflib.unified_diff(
            a.splitlines(), b.splitlines(), "winner", "dissenter", lineterm="", n=1)]
    out = []
    for pointer in sorted(left.keys() | right.keys()):
        if left.get(pointer) != right.get(pointer):
            if pointer in left:
                out.append(f"  - {pointer}: {left[pointer]}")
            if pointer in right:
                out.append(f"  + {pointer}: {right[pointer]}")
    return out


def diff(evidence_id: str, record: Mapping[str, Any]) -> str:
    """The record as an operator reads it: the winner against each dissenter or failure."""
    v = record["verdict"]
    replies: Mapping[str, Any] = record["replies"]
    lines = [f"evidence {evidence_id}", f"{v.get('method')} {v.get('path')}: {v.get('outcome')}"
             f"; agreed {', '.join(v.get('agreed', ())) or '-'}; dissented "
             f"{', '.join(v.get('dissented', ())) or '-'}; failed "
             f"{', '.join(v.get('failed', ())) or '-'}"]
    winner = replies.get(v.get("winner") or "")
    for name in (*v.get("dissented", ()), *v.get("failed", ())):
        reply = replies.get(name)
        lines.append(f"\n--- {v.get('winner') or '(no winner)'}  +++ {name}")
        if reply is None:
            lines.append("  (no reply: " + str(v.get("errors", {}).get(name, "failed")) + ")")
            continue
        base = winner or {"status": None, "headers": [], "body": None}
        if base["status"] != reply["status"]:
            lines.append(f"  - status {base['status']}\n  + status {reply['status']}")
        ours = [f"{n}: {val}" for n, val in base["headers"]]
        theirs = [f"{n}: {val}" for n, val in reply["headers"]]
        lines += [f"  - {h}" for h in ours if h not in theirs]
        lines += [f"  + {h}" for h in theirs if h not in ours]
        lines += _body_diff(base["body"], reply["body"])
    return "\n".join(lines)
