"""Attested launch at the gateway: every start measured against a reference, and every running
executor measured again at random times (`endosec.attest` measures; this module judges).

The reference is the operator's signed manifest (``attest.manifest``) or, without one, the
executor's first measurement here (trust on first use: later changes are caught, not the first
image). A launch must match its reference exactly. A running executor may map a library its
launch did not (a module imported on first use): such a new ``lib:`` label joins the reference
and is reported, it is not a mismatch; a changed or vanished digest always is.

Re-measurement times are exponentially distributed with mean ``attest.remeasure_mean``
(memoryless: the last one says nothing of the next), drawn from the random source passed in.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from endosec.attest.manifest import AttestError, load_manifest
from endosec.attest.measure import Measurement, differences
from endosec.config import AttestConfig
from endosec.observe.ledger_format import LedgerError, load_public_key
from endosec.runtime.base import RuntimeDriverError

__all__ = ["AttestationFailed", "Attestor"]

_NEW_LIBRARY = "lib:"


class AttestationFailed(RuntimeDriverError):
    """A launch did not match its reference: another start from the same image would not."""


@dataclass(slots=True)
class Attestor:
    """The references, and when each executor is next measured."""

    references: dict[str, dict[str, str]]
    signed: bool
    mean: float
    rng: random.Random
    due: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: AttestConfig, rng: random.Random) -> Attestor:
        """Load and verify the manifest when one is configured (`AttestError` otherwise)."""
        if config.manifest is None:
            return cls({}, False, config.remeasure_mean, rng)
        assert config.public_key is not None  # the configuration requires it
        try:
            key = load_public_key(config.public_key)
        except OSError as exc:
            raise AttestError(f"public_key: {config.public_key}: cannot read it: "
                              f"{exc.strerror or exc}") from exc
        except LedgerError as exc:
            raise AttestError(f"public_key: {exc}") from exc
        manifest = load_manifest(config.manifest, key)
        return cls({n: dict(d) for n, d in manifest.executors.items()}, True,
                   config.remeasure_mean, rng)

    def judge(self, seen: Measurement, *, launch: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """``(differing labels, libraries learnt)`` for ``seen``; an empty first part is a
        match. Without a manifest the first measurement becomes the reference."""
        reference = self.references.get(seen.executor)
        if reference is None:
            if self.signed:
                return ("manifest: no measurement of this executor",), ()
            self.references[seen.executor] = dict(seen.digests)
            return (), ()
        differ = differences(reference, seen.digests)
        learnt: tuple[str, ...] = ()
        if not launch:
            learnt = tuple(label for label in differ
                           if label.startswith(_NEW_LIBRARY) and label not in reference)
            differ = tuple(label for label in differ if label not in learnt)
            if not differ:
                reference.update((label, seen.digests[label]) for label in learnt)
        return differ, learnt

    def schedule(self, name: str, now: float) -> None:
        """Draw ``name``'s next re-measurement time."""
        self.due[name] = now + self.rng.expovariate(1.0 / self.mean)

    def forget(self, name: str) -> None:
        """``name`` left the pool; a new entry of that name is measured afresh."""
        self.due.pop(name, None)
        if not self.signed:
            self.references.pop(name, None)
