"""Benign traffic with a correct-answer oracle, used for availability and false alarms.

A `Workload` produces requests and judges each reply: `NotesWorkload` drives the demo's notes
API (mixed reads and writes, with a model of the notes created), `StaticWorkload` reads the
files of a docroot (the web example) and compares bytes. `drive` sends a number of requests,
or keeps going until told to stop, with bounded concurrency, and tallies the verdicts.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from endosec.redteam.client import Call, Client, ClientError, Reply

__all__ = ["NotesWorkload", "Probe", "StaticWorkload", "Tally", "Workload", "drive", "send"]

Check = Callable[[Reply], str | None]
"""Judge one reply: None when correct, else what was wrong."""


@dataclass(frozen=True, slots=True)
class Probe:
    """A benign request whose correct answer the workload knows, and its check."""

    call: Call
    check: Check


class Workload(Protocol):
    name: str
    json_field: tuple[str, str]  # (path glob, field name) that an alteration can target
    paths: list[str]  # what it serves (the benign-divergence class varies them)
    directories: list[str]  # directories, without their trailing slash

    def next(self, rng: random.Random) -> Probe: ...

    def probe(self, purpose: str) -> Probe:
        """A read suited to an attack: "json" (has `json_field`), "digits", or "any"."""
        ...

    def distinct(self, count: int) -> list[Probe]:
        """Up to ``count`` reads with pairwise different answers."""
        ...


@dataclass(slots=True)
class Tally:
    """Verdicts on the replies of one stretch of traffic.

    ``wrong`` replies carried content other than the correct answer (the attacker's, if any);
    ``failed`` ones got no reply or the gateway's fail-closed refusal, never an executor's output.
    """

    total: int = 0
    correct: int = 0
    wrong: int = 0
    failed: int = 0
    canary_seen: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def availability(self) -> float:
        return self.correct / self.total if self.total else 1.0

    def judge(self, reply: Reply, problem: str | None, canary: bytes) -> None:
        if canary and reply.contains(canary):
            self.canary_seen += 1
            self._add("wrong", problem or f"attacker canary in a reply ({reply.status})")
        elif problem is None:
            self._add("correct", None)
        else:
            self._add("failed" if reply.refusal else "wrong", problem)

    def failure(self, problem: str) -> None:
        self._add("failed", problem)

    def _add(self, kind: str, problem: str | None) -> None:
        self.total += 1
        setattr(self, kind, getattr(self, kind) + 1)
        if problem is not None and len(self.problems) < 20:
            self.problems.append(problem)

    def merge(self, other: Tally) -> None:
        for name in ("total", "correct", "wrong", "failed", "canary_seen"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.problems.extend(other.problems[:max(0, 20 - len(self.problems))])


def _json(reply: Reply) -> object:
    try:
        return json.loads(reply.body)
    except ValueError:
        return None


class NotesWorkload:
    """The demo's notes API: 5% writes, reads of known and missing notes, lists, HEAD.

    The model knows every note whose creation was confirmed; notes whose creation failed are
    "in doubt" and may or may not exist, so reads never depend on them. Listings stop once
    `LIST_UP_TO` notes exist (each carries them all; a long soak would be mostly listings).
    """

    LIST_UP_TO = 1000

    name = "notes"
    json_field = ("/notes*", "text")

    def __init__(self) -> None:
        self.paths = ["/notes"]
        self.directories: list[str] = []
        self.notes: dict[int, str] = {}
        self.sent = 0
        self.in_doubt: set[str] = set()

    def next(self, rng: random.Random) -> Probe:
        roll = rng.random()
        if roll < 0.05 or not self.notes:
            return self._post()
        if roll < 0.07 and len(self.notes) <= self.LIST_UP_TO:
            return self._list()
        if roll < 0.12:
            return self._missing()
        if roll < 0.16:
            return self._read(rng.choice(list(self.notes)), head=True)
        return self._read(rng.choice(list(self.notes)))

    def probe(self, purpose: str) -> Probe:
        if not self.notes:
            return self._post()
        return self._read(min(self.notes))

    def distinct(self, count: int) -> list[Probe]:
        return [self._read(nid) for nid in sorted(self.notes)[:count]] or [self._missing()]

    def _post(self) -> Probe:
        self.sent += 1
        text = f"note {self.sent}"
        self.in_doubt.add(text)

        def check(reply: Reply) -> str | None:
            data = _json(reply)
            if reply.status != 201 or not isinstance(data, dict):
                return f"POST /notes: status {reply.status}"
            nid = data.get("id")
            if data.get("text") != text or not isinstance(nid, int) or nid in self.notes \
                    or not 1 <= nid <= self.sent:
                return f"POST /notes: unexpected note {data!r}"
            self.notes[nid] = text
            self.in_doubt.discard(text)
            return None

        return Probe(Call("POST", "/notes", json.dumps({"text": text}).encode()), check)

    def _read(self, nid: int, *, head: bool = False) -> Probe:
        text = self.notes[nid]

        def check(reply: Reply) -> str | None:
            if reply.status != 200:
                return f"GET /notes/{nid}: status {reply.status}"
            if head:
                return None if not reply.body else f"HEAD /notes/{nid}: a body"
            data = _json(reply)
            if not isinstance(data, dict) or data.get("id") != nid or data.get("text") != text:
                return f"GET /notes/{nid}: wrong note {reply.body[:100]!r}"
            return None

        return Probe(Call("HEAD" if head else "GET", f"/notes/{nid}"), check)

    def _missing(self) -> Probe:
        target = f"/notes/{10_000_000 + self.sent}"

        def check(reply: Reply) -> str | None:
            return None if reply.status == 404 else f"GET {target}: status {reply.status}"

        return Probe(Call("GET", target), check)

    def _list(self) -> Probe:
        known = dict(self.notes)

        def check(reply: Reply) -> str | None:
            data = _json(reply)
            if reply.status != 200 or not isinstance(data, dict) \
                    or not isinstance(data.get("notes"), list):
                return f"GET /notes: status {reply.status}"
            seen: dict[object, object] = {}
            for n in data["notes"]:
                if not isinstance(n, dict):
                    return "GET /notes: not a note"
                seen[n.get("id")] = n.get("text")
                if n.get("id") not in self.notes and n.get("text") not in self.in_doubt:
                    return f"GET /notes: unknown note {n!r}"
            if any(seen.get(i) != t for i, t in known.items()):
                return "GET /notes: a confirmed note is missing or wrong"
            return None

        return Probe(Call("GET", "/notes"), check)


class StaticWorkload:
    """Static files: every reply must carry the docroot file's exact bytes.

    ``skip`` names files too large to fetch repeatedly; a missing path must answer 404.
    """

    name = "static"

    def __init__(self, docroot: Path, *, index: str = "index.html",
                 max_size: int = 1 << 20) -> None:
        self.files: dict[str, bytes] = {}
        for path in sorted(docroot.rglob("*")):
            if path.is_file() and path.stat().st_size <= max_size:
                rel = path.relative_to(docroot).as_posix()
                if not rel.startswith("errors/"):
                    self.files["/" + rel] = path.read_bytes()
        if f"/{index}" in self.files:
            self.files["/"] = self.files[f"/{index}"]
        if not self.files:
            raise ValueError(f"no files to serve under {docroot}")
        self.paths = sorted(self.files)
        self.directories = sorted("/" + d.relative_to(docroot).as_posix()
                                  for d in docroot.iterdir() if d.is_dir() and d.name != "errors")
        jsons = [p for p, b in self.files.items() if p.endswith(".json")
                 and isinstance(_json(Reply(200, (), b)), dict)]
        field_name = ""
        if jsons:
            keys = list(json.loads(self.files[jsons[0]]))
            field_name = keys[0] if keys else ""
        self.json_field = (jsons[0] if jsons else "/*.json", field_name)
        self.missing = 0

    def next(self, rng: random.Random) -> Probe:
        roll = rng.random()
        if roll < 0.05:
            return self._missing()
        return self._read(rng.choice(self.paths), head=roll < 0.1)

    def probe(self, purpose: str) -> Probe:
        if purpose == "json":
            return self._read(self.json_field[0])
        if purpose == "digits":
            with_digits = [p for p in self.paths
                           if any(48 <= c <= 57 for c in self.files[p])]
            return self._read((with_digits or self.paths)[0])
        return self._read(self.paths[0])

    def distinct(self, count: int) -> list[Probe]:
        unique: dict[bytes, str] = {}
        for path in self.paths:
            unique.setdefault(self.files[path], path)
        return [self._read(p) for p in list(unique.values())[:count]]

    def _read(self, path: str, *, head: bool = False) -> Probe:
        body = self.files[path]

        def check(reply: Reply) -> str | None:
            if reply.status != 200:
                return f"GET {path}: status {reply.status}"
            if reply.body != (b"" if head else body):
                return f"{'HEAD' if head else 'GET'} {path}: wrong bytes"
            return None

        return Probe(Call("HEAD" if head else "GET", path), check)

    def _missing(self) -> Probe:
        self.missing += 1
        target = f"/no-such-file-{self.missing}.html"

        def check(reply: Reply) -> str | None:
            return None if reply.status == 404 else f"GET {target}: status {reply.status}"

        return Probe(Call("GET", target), check)


async def send(client: Client, probe: Probe, tally: Tally, canary: bytes) -> None:
    """Make one request and judge the reply into ``tally``."""
    try:
        reply = await client.request(probe.call)
    except ClientError as exc:
        tally.failure(str(exc))
        return
    tally.judge(reply, probe.check(reply), canary)


async def _worker(client: Client, workload: Workload, rng: random.Random, tally: Tally, *,
                  budget: list[int], stop: asyncio.Event, canary: bytes, pause: float) -> None:
    try:
        while not stop.is_set() and budget[0] != 0:
            budget[0] -= 1
            await send(client, workload.next(rng), tally, canary)
            if pause:
                await asyncio.sleep(pause)
    finally:
        client.close()


async def drive(host: str, port: int, workload: Workload, *, requests: int | None,
                concurrency: int, rng: random.Random, canary: bytes = b"",
                stop: asyncio.Event | None = None, timeout: float = 20.0,
                pause: float = 0.0, sources: Sequence[str] = (),
                tally: Tally | None = None) -> Tally:
    """Send ``requests`` benign requests (None: until ``stop`` is set); return the tally.

    ``pause`` seconds between one worker's requests keep background traffic light;
    ``sources`` are loopback addresses the workers connect from, in turn (default: the
    system's choice); ``tally`` lets the caller watch the count as it grows.
    """
    stop = stop or asyncio.Event()
    tally = tally if tally is not None else Tally()
    budget = [-1 if requests is None else requests]
    await asyncio.gather(*(
        _worker(Client(host, port, timeout=timeout,
                       source=sources[i % len(sources)] if sources else None),
                workload, random.Random(rng.random()), tally, budget=budget, stop=stop,
                canary=canary, pause=pause)
        for i in range(concurrency)))
    return tally
