"""Checkpoints by vote: the executors' state, agreed on like any output, kept so recovery is
bounded.

Taking one (the data plane holds writes back meanwhile, so every voter is at the same seq):
every voter exports its state; the exports are canonicalised by ``checkpoint.canonicalise`` and
voted on by the boundary's arbiter; the winning export is written durably under
``STATE_DIR/checkpoints`` with its seq and SHA-256, and the journal before it is truncated. An
executor whose export dissents is reported like any dissenter (and quarantined). A cleansed or
new executor is restored from the latest checkpoint and replays only the journal after it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from endosec.config import Config
from endosec.core.arbiter import Strategy, judge
from endosec.core.canonicalise import ExactBytes, compile_rules
from endosec.core.model import Canonicaliser, ErrorKind, Output, Verdict
from endosec.runtime.state import StateError, StateTransfer, state_transfer

__all__ = ["Checkpoint", "Checkpoints", "Taken"]

_KEEP = 2  # checkpoints kept on disk: the latest and the one before it


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A durable, agreed state: every write up to ``seq`` applied."""

    seq: int
    sha256: str
    path: Path

    def read(self) -> bytes:
        data = self.path.read_bytes()
        if hashlib.sha256(data).hexdigest() != self.sha256:
            raise StateError(f"{self.path}: checkpoint does not match its recorded digest")
        return data


@dataclass(frozen=True, slots=True)
class Taken:
    """One attempt: the verdict on the exports, the checkpoint if one was kept, and failures."""

    verdict: Verdict
    checkpoint: Checkpoint | None
    digests: dict[str, str]
    errors: dict[str, str]


class Checkpoints:
    """The checkpoints of one boundary and the state transfer of each executor."""

    def __init__(self, config: Config, directory: Path) -> None:
        self.directory = directory
        self.transfers: dict[str, StateTransfer] = {
            e.name: state_transfer(e.state) for e in config.executors if e.state is not None}
        rules = compile_rules({"bodies": [config.checkpoint.canonicalise]}
                              if config.checkpoint.canonicalise else {})
        self.canonicaliser: Canonicaliser = (rules.bodies[0].canonicaliser if rules.bodies
                                             else ExactBytes())
        directory.mkdir(parents=True, exist_ok=True)
        self.latest = self._load()

    def _load(self) -> Checkpoint | None:
        best: Checkpoint | None = None
        for meta in sorted(self.directory.glob("*.json")):
            try:
                data = json.loads(meta.read_text())
                found = Checkpoint(int(data["seq"]), str(data["sha256"]),
                                   meta.with_suffix(".state"))
            except (OSError, ValueError, KeyError):
                continue  # a half-written checkpoint from a crash: the previous one stands
            if found.path.exists() and (best is None or found.seq > best.seq):
                best = found
        return best

    async def take(self, seq: int, addresses: Mapping[str, tuple[str, int]],
                   strategy: Strategy, weights: Mapping[str, float] | None,
                   discounted: Sequence[str] = ()) -> Taken:
        """Export from every voter in ``addresses``, vote (``discounted`` voters lend no
        support), keep the winner at ``seq``."""
        names = list(addresses)
        results = await asyncio.gather(
            *(self._export(n, addresses[n]) for n in names), return_exceptions=True)
        outputs, errors = [], {}
        for name, result in zip(names, results, strict=True):
            if isinstance(result, BaseException):
                errors[name] = str(result)
                outputs.append(Output.failure(name, ErrorKind.CRASH, self.canonicaliser))
            else:
                outputs.append(Output(name, result, self.canonicaliser))
        verdict = judge(strategy, outputs, weights, discounted)
        digests = {o.executor: o.digest.hex() for o in outputs}
        kept = None
        if verdict.winner is not None:
            kept = self._store(seq, verdict.winner.raw)
            self.latest = kept
        return Taken(verdict, kept, digests, errors)

    async def _export(self, name: str, address: tuple[str, int]) -> bytes:
        transfer = self.transfers.get(name)
        if transfer is None:
            raise StateError(f"{name} declares no state export")
        return await transfer.export(*address)

    async def restore(self, name: str, address: tuple[str, int]) -> int:
        """Import the latest checkpoint into ``name``; the seq it brings it to."""
        latest, transfer = self.latest, self.transfers.get(name)
        if latest is None or transfer is None:
            raise StateError(f"no checkpoint to restore {name} from")
        await transfer.restore(*address, latest.read())
        return latest.seq

    def _store(self, seq: int, state: bytes) -> Checkpoint:
        """Write the state, then its record, each fsynced: a crash leaves the previous one."""
        stem = self.directory / f"{seq:020d}"
        digest = hashlib.sha256(state).hexdigest()
        _write_durably(stem.with_suffix(".state"), state)
        _write_durably(stem.with_suffix(".json"),
                       json.dumps({"seq": seq, "sha256": digest}).encode())
        for old in sorted(self.directory.glob("*.json"))[:-_KEEP]:
            old.with_suffix(".state").unlink(missing_ok=True)
            old.unlink(missing_ok=True)
        return Checkpoint(seq, digest, stem.with_suffix(".state"))

    def can_take(self, voters: Sequence[str]) -> bool:
        return bool(voters) and all(v in self.transfers for v in voters)


def _write_durably(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
