"""What identity costs: one attestation, one proof, one verification, admission at scale.

    python bench/bench_trust.py [--quick]

* **attestation** - `endosec.attest.measure.take` of a running Python process (its program
  and every library it maps) with a template of generated files, against hashing the same
  number of bytes from memory with hashlib (the floor: SHA-256 itself). Warm page cache;
  the median of several measurements.
* **proof / verification** - `endosec.identity.schnorr.prove` and `verify`, against an Ed25519
  signature and its verification (`cryptography`) on the same curve.
* **admission** - one verifier (an agent) that lists N identities admits each of them once:
  a nonce, the identity's proof over it, the check and the whitelist entry (the proofs are
  made as it goes; only the verifier's side is timed). Then, with N admitted, identities prove
  again: the time per admission is the median of these. Then *match*: finding an admitted
  identity by its session id, as every call after admission does. The paper among the project's
  sources reports the same sweep for its blockchains (on-chain time rising with the number of
  users, match time flat); here both should stay flat: PASS when the time per admission at the
  largest N is at most 1.5x the time at N=1. A match is one dict lookup: what grows with N is
  only its share of cache misses, so it is printed without a target.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from endosec.attest.measure import take
from endosec.identity.admission import Admission, Refusal, Verifier
from endosec.identity.keys import Trust
from endosec.identity.schnorr import prove, public_key, verify
from endosec.runtime.process import ExecutorSpec

MIB = 1 << 20
FLAT = 1.5


def _median_seconds(action: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _covered(digests: dict[str, str], template: Path) -> int:
    """Bytes behind the measured labels (programs and libraries as paths, template files)."""
    total = 0
    for label in digests:
        kind, _, where = label.partition(":")
        path = Path(where) if kind in ("exe", "lib", "config") else template / where
        if kind != "entry" and path.is_file():
            total += path.stat().st_size
    return total


def attestation(template_mib: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-trust-") as tmp:
        root = Path(tmp)
        template = root / "template"
        template.mkdir()
        for i in range(template_mib):
            (template / f"part-{i:03d}.bin").write_bytes(os.urandom(MIB))
        child = subprocess.Popen([sys.executable, "-c", "import ssl, sqlite3, time; "
                                  "print(flush=True); time.sleep(120)"],
                                 stdout=subprocess.PIPE)
        try:
            assert child.stdout is not None
            child.stdout.readline()  # imported: its libraries are mapped
            spec = ExecutorSpec(name="bench", argv=[sys.executable], scratch_root=root,
                                template=template)
            digests = dict(take(spec, [child.pid], argv=spec.argv, cwd=root,
                                scratch=root / "scratch").digests)
            measured = _covered(digests, template)
            seconds = _median_seconds(lambda: take(spec, [child.pid], argv=spec.argv, cwd=root,
                                                   scratch=root / "scratch"), rounds)
        finally:
            child.kill()
            child.wait()
    data = os.urandom(measured)
    floor = _median_seconds(lambda: hashlib.sha256(data).digest(), rounds)
    mib = measured / MIB
    print(f"  attestation: {len(digests) - 1} files, {mib:.1f} MiB, {seconds * 1e3:.1f} ms: "
          f"{seconds * 1e3 / mib:.2f} ms per MiB measured")
    print(f"    SHA-256 of as many bytes from memory: {floor * 1e3 / mib:.2f} ms per MiB; "
          f"attestation {seconds / floor:.2f}x of it")


def proofs(rounds: int) -> None:
    key = Ed25519PrivateKey.generate()
    verifier, nonce = os.urandom(32), os.urandom(32)
    proof = prove(key, verifier=verifier, nonce=nonce, role="gateway", expiry=1e12)
    assert verify(proof)
    message = nonce + verifier
    signature = key.sign(message)
    public = key.public_key()
    cases = {
        "one proof": (lambda: prove(key, verifier=verifier, nonce=nonce, role="gateway",
                                    expiry=1e12), lambda: key.sign(message), "signature"),
        "one verification": (lambda: verify(proof), lambda: public.verify(signature, message),
                             "signature check"),
    }
    for name, (ours, baseline, what) in cases.items():
        t, b = _per_call(ours, rounds), _per_call(baseline, rounds)
        print(f"  {name:17} {t * 1e6:7.1f} us   (Ed25519 {what} {b * 1e6:.1f} us: "
              f"{t / b:.2f}x)")


def _per_call(action: Callable[[], object], rounds: int, calls: int = 100) -> float:
    def batch() -> None:
        for _ in range(calls):
            action()
    return _median_seconds(batch, rounds) / calls


def _admit(whitelist: Admission, key: Ed25519PrivateKey, now: float) -> tuple[bytes, float]:
    """Admit ``key``: its session id and the verifier's time (nonce, check, whitelist)."""
    started = time.perf_counter()
    challenge = whitelist.verifier.challenge(now)
    spent = time.perf_counter() - started
    proof = prove(key, verifier=whitelist.verifier.key, nonce=challenge.nonce, role="gateway",
                  expiry=challenge.expiry)
    started = time.perf_counter()
    admitted = whitelist.admit(proof, None, now)
    spent += time.perf_counter() - started
    assert not isinstance(admitted, Refusal), admitted
    return admitted.session, spent


def admission(sizes: list[int], again: int) -> list[tuple[int, float, float, float]]:
    """Per N: seconds to admit all N, then per admission (median of ``again`` identities
    proving again with N admitted) and per match, the verifier's side only."""
    rows = []
    for n in sizes:
        keys = [Ed25519PrivateKey.generate() for _ in range(n)]
        whitelist = Admission(Verifier(public_key(Ed25519PrivateKey.generate()),
                                       Trust(keys=frozenset(public_key(k) for k in keys)),
                                       role="gateway"), admit_for=3600.0)
        admitted = [_admit(whitelist, key, i * 1e-3) for i, key in enumerate(keys)]
        latest = [session for session, _ in admitted]  # each identity's newest session
        steady = []
        for i in range(again):
            who = (i * 7919) % n
            latest[who], spent = _admit(whitelist, keys[who], (n + i) * 1e-3)
            steady.append(spent)
        now = (n + again) * 1e-3
        lookups = [latest[(i * 7919) % n] for i in range(20_000)]
        started = time.perf_counter()
        found = sum(whitelist.session(s, now) is not None for s in lookups)
        match = (time.perf_counter() - started) / len(lookups)
        assert found == len(lookups)
        rows.append((n, sum(spent for _, spent in admitted), statistics.median(steady), match))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, smaller template")
    args = parser.parse_args()
    rounds = 3 if args.quick else 7
    sizes = [1, 10, 100, 1000, 5000]
    print("identity and trust")
    attestation(8 if args.quick else 64, rounds)
    proofs(rounds)
    admission([10], 200)  # warm up: the first row is the baseline of the others
    rows = admission(sizes, 200 if args.quick else 1000)
    print(f"  {'identities':>10}  {'admit all':>10}  {'per admission':>13}  {'per match':>9}"
          "  vs N=1")
    first = rows[0]
    for n, total, admit, match in rows:
        print(f"  {n:>10,}  {total * 1e3:7.1f} ms  {admit * 1e6:10.1f} us  {match * 1e6:6.2f} us"
              f"  {admit / first[2]:.2f}x / {match / first[3]:.2f}x")
    last = rows[-1]
    ratio = last[2] / first[2]
    print(f"  [{'PASS' if ratio <= FLAT else 'MISS'}] time per admission at {last[0]:,} "
          f"identities <= {FLAT}x at 1: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
