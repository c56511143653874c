"""Vote over two independent SHA-256 implementations: hashlib (OpenSSL) and pycryptodome.

With unanimity, a digest is returned only when both agree. A deliberately broken third variant
(it drops the last byte of its input, as a truncating bug or a planted backdoor might) makes
unanimity fail closed, and a majority vote names it as the dissenter.

Run: python examples/nversion/hashes.py
"""

from __future__ import annotations

import hashlib

from Crypto.Hash import SHA256

from endosec.core.arbiter import Majority, Unanimity
from endosec.nversion import NoConsensus, NVersion


def sha256_hashlib(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_pycryptodome(data: bytes) -> str:
    return SHA256.new(data).hexdigest()


def sha256_broken(data: bytes) -> str:
    return hashlib.sha256(data[:-1]).hexdigest()


MESSAGES = [b"", b"abc", b"endogenous security " * 1000]


def main() -> int:
    honest = {"hashlib": sha256_hashlib, "pycryptodome": sha256_pycryptodome}
    digest = NVersion(honest, strategy=Unanimity())
    print("two honest implementations, unanimity:")
    for message in MESSAGES:
        print(f"  {len(message):6d} bytes -> {digest(message)}")

    with_broken = {**honest, "broken": sha256_broken}
    strict = NVersion(with_broken, strategy=Unanimity())
    print("\nadding a broken variant, unanimity:")
    try:
        strict(b"abc")
    except NoConsensus as refusal:
        print(f"  refused: {refusal}")

    majority = NVersion(with_broken, strategy=Majority())
    verdict = majority.vote(b"abc")
    print("\nthe same three, majority:")
    print(f"  {verdict.outcome.value}: agreed={', '.join(verdict.agreed)}"
          f"  dissented={', '.join(verdict.dissented)}")
    print(f"  digest {majority(b'abc')}")
    if verdict.dissented != ("broken",):
        print("  unexpected: the broken variant was not caught")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
