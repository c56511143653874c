"""Labelled traffic: the requests detectors learn from, and their JSON-lines file format.

One request per line::

    {"method": "GET", "target": "/notes/7", "headers": [["User-Agent", "curl/8.5"]],
     "body": "", "label": 0, "family": "self"}

``body`` is text (UTF-8); ``body_b64`` (base64) replaces it for bytes that are not. ``label``
is 1 for an antigen (an executor dissented after it) and 0 for self. ``family`` names the
kind of antigen (``self`` for label 0) and decides the non-IID split: each client gets the
antigens of one family. Blank lines and lines starting with ``#`` are skipped.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from endosec.core.antigen import request_features

__all__ = ["SELF", "Labelled", "TrafficError", "dump_jsonl", "parse_jsonl"]

SELF = "self"


class TrafficError(ValueError):
    """A line of a traffic file is malformed; the message names the line and field."""


@dataclass(frozen=True, slots=True)
class Labelled:
    """One request and what happened after it."""

    method: bytes
    target: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    label: int
    family: str = SELF

    def features(self) -> list[int]:
        return request_features(self.method, self.target, self.headers, self.body)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "method": self.method.decode("latin-1"), "target": self.target.decode("latin-1"),
            "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in self.headers],
            "label": self.label, "family": self.family}
        try:
            out["body"] = self.body.decode()
        except UnicodeDecodeError:
            out["body_b64"] = base64.b64encode(self.body).decode()
        return out


def _text(row: dict[str, Any], name: str, where: str) -> bytes:
    value = row.get(name)
    if not isinstance(value, str):
        raise TrafficError(f"{where}: {name!r} must be a string")
    return value.encode("latin-1", "strict") if name != "body" else value.encode()


def _row(row: Any, where: str) -> Labelled:
    if not isinstance(row, dict):
        raise TrafficError(f"{where}: expected a JSON object")
    headers = row.get("headers", [])
    if not isinstance(headers, list) or not all(
            isinstance(h, list) and len(h) == 2 and all(isinstance(s, str) for s in h)
            for h in headers):
        raise TrafficError(f"{where}: 'headers' must be a list of [name, value] strings")
    if "body_b64" in row:
        try:
            body = base64.b64decode(str(row["body_b64"]), validate=True)
        except ValueError as exc:
            raise TrafficError(f"{where}: 'body_b64' is not base64") from exc
    else:
        body = _text(row, "body", where) if "body" in row else b""
    label = row.get("label")
    if label not in (0, 1) or isinstance(label, bool):
        raise TrafficError(f"{where}: 'label' must be 0 or 1")
    family = row.get("family", SELF if label == 0 else "unknown")
    if not isinstance(family, str) or not family:
        raise TrafficError(f"{where}: 'family' must be a non-empty string")
    try:
        return Labelled(_text(row, "method", where), _text(row, "target", where),
                        tuple((n.encode("latin-1"), v.encode("latin-1")) for n, v in headers),
                        body, int(label), family)
    except UnicodeEncodeError as exc:
        raise TrafficError(f"{where}: method, target and headers must be latin-1") from exc


def parse_jsonl(lines: Iterable[str], source: str = "<traffic>") -> list[Labelled]:
    """Every request of a traffic file; `TrafficError` names the first bad line."""
    out = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{source}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TrafficError(f"{where}: not JSON ({exc.msg})") from exc
        out.append(_row(row, where))
    return out


def dump_jsonl(requests: Sequence[Labelled]) -> str:
    return "".join(json.dumps(r.to_json()) + "\n" for r in requests)
