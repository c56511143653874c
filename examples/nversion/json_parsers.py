"""Vote over three independent JSON parsers from PyPI: orjson, simplejson and ujson.

Each document is parsed by all three; the parsed values are compared, and the agreed value is
used only if a majority produced it. Where the parsers legitimately differ, the verdict names
who dissented or failed, and a split with no majority fails closed.

Run: python examples/nversion/json_parsers.py
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson
import simplejson
import ujson

from endosec.core.model import Verdict
from endosec.nversion import NoConsensus, NVersion

DOCUMENTS: dict[str, bytes] = {
    "plain object": b'{"name": "endosec", "tags": ["dhr", "mimic"], "ratio": 0.25}',
    "duplicate keys": b'{"role": "user", "role": "admin"}',
    "big integer": b'{"id": 123456789012345678901234567890}',
    "lone surrogate": b'{"text": "\\ud800"}',
    "NaN literal": b'{"score": NaN}',
    "raw tab in string": b'{"cell": "a\tb"}',
}


def describe(verdict: Verdict, voters: Iterable[str]) -> str:
    parts = [f"{verdict.outcome.value}"]
    if verdict.winner is None:
        answered = [name for name in voters if name not in verdict.failed]
        parts.append(f"answered alone={', '.join(answered)}" if len(answered) == 1 else
                     f"answered={', '.join(answered)}")
    if verdict.agreed:
        parts.append(f"agreed={', '.join(verdict.agreed)}")
    if verdict.dissented:
        parts.append(f"dissented={', '.join(verdict.dissented)}")
    if verdict.failed:
        parts.append(f"failed={', '.join(verdict.failed)}")
    return "  ".join(parts)


def main() -> int:
    parse = NVersion({"orjson": orjson.loads, "simplejson": simplejson.loads,
                      "ujson": ujson.loads})
    for label, document in DOCUMENTS.items():
        print(f"{label}: {document.decode().replace(chr(9), '<TAB>')}")
        try:
            value = parse(document)
        except NoConsensus as refusal:
            print(f"  refused   {describe(refusal.verdict, parse.versions)}")
            for name, error in sorted(refusal.errors.items()):
                print(f"            {name}: {type(error).__name__}: {error}")
        else:
            print(f"  value     {value!r}")
        print(f"  verdict   {describe(parse.vote(document), parse.versions)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
