"""The catalogue of implant drills: what is planted, where, and what DHR should make of it.

Each `Case` is data: the implant (with ``{canary}`` and ``{field}`` filled in at run time), how
many executors carry it, which probe requests exercise it, and whether DHR can be expected to
suppress it. Differential-mode backdoors sit in one executor; common-mode ones in a majority
or in every executor, which no vote can outvote.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["CLASSES", "COMMON_MODE", "COVERT", "DIFFERENTIAL", "FAULTS", "Case", "catalogue",
           "fill"]

DIFFERENTIAL = "differential"
COMMON_MODE = "common-mode"
FAULTS = "faults"
COVERT = "covert"
#: Every class in report order (benign traffic first: it sets the false-alarm figure).
CLASSES = ("benign", DIFFERENTIAL, COMMON_MODE, "incremental", FAULTS, COVERT,
           "benign-divergence", "reconnaissance", "identity", "immune", "evidence", "input-agent")
TRIGGER = {"header": "X-Debug", "value": "letmein"}


@dataclass(frozen=True, slots=True)
class Case:
    """One implant drill.

    ``victims`` is "one", "majority" or "all" of the active executors; ``probe`` names the kind
    of read that exercises the implant ("json", "digits", "any"); ``image`` plants it in the
    executor's image (cleansing does not remove it) instead of its scratch directory.
    """

    name: str
    cls: str
    implant: dict[str, Any]
    description: str
    victims: str = "one"
    probe: str = "json"
    trigger: bool = False
    probes: int = 20
    image: bool = False
    expected_suppressible: bool = True
    tags: tuple[str, ...] = field(default=())


def fill(value: Any, **subst: str) -> Any:
    """Replace ``{key}`` in every string of an implant description."""
    if isinstance(value, str):
        for k, v in subst.items():
            value = value.replace("{" + k + "}", v)
        return value
    if isinstance(value, list):
        return [fill(v, **subst) for v in value]
    if isinstance(value, dict):
        return {k: fill(v, **subst) for k, v in value.items()}
    return value


def _alter(**extra: Any) -> dict[str, Any]:
    return {"kind": "alter-json-field", "field": "{field}", "value": "{canary}",
            "paths": ["{json_path}"], "methods": ["GET"], **extra}


def catalogue(read_timeout: float) -> list[Case]:
    """Every implant drill; fault timings scale with the gateway's read timeout."""
    slow_ms = int(read_timeout * 1000) + 1000
    d, c, f = DIFFERENTIAL, COMMON_MODE, FAULTS
    return [
        Case("exfiltrate-secret-on-trigger", d,
             {"kind": "exfiltrate-secret", "secret": "SECRET {canary}", "trigger": TRIGGER},
             "answers a request carrying X-Debug: letmein with a secret", trigger=True,
             probe="any"),
        Case("alter-json-field", d, _alter(), "rewrites a JSON field in every read"),
        Case("informed-alter-json-field", d,
             _alter(informed={"admin": "{admin}", "allies": "{allies}"}),
             "rewrites a JSON field in every read, but only while the admin listener shows "
             "that the executors the attacker holds are a majority of the active set (when "
             "it cannot tell, as alter-json-field)"),
        Case("inject-set-cookie", d,
             {"kind": "inject-header", "header": "Set-Cookie", "value": "sid={canary}"},
             "adds a Set-Cookie header", probe="any"),
        Case("inject-location", d,
             {"kind": "inject-header", "header": "Location",
              "value": "https://attacker.invalid/{canary}"},
             "adds a Location header (open redirect)", probe="any"),
        Case("alter-status", d, {"kind": "alter-status", "status": 418},
             "answers with another status code", probe="any"),
        Case("nudge-numbers", d, {"kind": "nudge-numbers", "delta": 1, "methods": ["GET"]},
             "changes numbers in the body by one", probe="digits"),
        Case("delayed-activation", d, _alter(after=40),
             "dormant for 40 requests, then rewrites a JSON field", probes=80),
        Case("fractional-activation", d, _alter(fraction=0.2),
             "rewrites a JSON field on one request in five", probes=60),
        Case("common-mode-majority", c, _alter(),
             "the same rewrite in a majority of the active executors", victims="majority",
             expected_suppressible=False),
        Case("common-mode-all", c, _alter(),
             "the same rewrite in every active executor", victims="all",
             expected_suppressible=False),
        Case("crash", f, {"kind": "crash"}, "the executor dies on its next request",
             probe="any"),
        Case("hang", f, {"kind": "hang"}, "the executor never answers", probe="any",
             probes=3),
        Case("slow", f, {"kind": "delay", "ms": slow_ms},
             f"answers {slow_ms} ms late (beyond the read timeout)", probe="any", probes=3),
        Case("garbage", f, {"kind": "garbage"}, "answers with random bytes", probe="any"),
        Case("truncate", f, {"kind": "truncate"}, "closes halfway through the body",
             probe="any"),
        Case("reset", f, {"kind": "reset"}, "resets the connection (TCP RST)", probe="any"),
        # Every reply stays right: only what the executor does shows them.
        Case("connect-out", COVERT, {"kind": "connect-out", "host": "192.0.2.1", "port": 443},
             "calls home (TEST-NET-1) while every reply stays right", probe="any"),
        Case("spawn-shell", COVERT, {"kind": "spawn-shell"},
             "leaves a shell running while every reply stays right", probe="any"),
        Case("cpu-burn", COVERT, {"kind": "cpu-burn"},
             "burns a core (mining) while every reply stays right", probe="any"),
        Case("leak-memory", COVERT, {"kind": "leak-memory"},
             "keeps 32 MiB more per request while every reply stays right", probe="any"),
        Case("read-outside-scratch", COVERT,
             {"kind": "read-outside-scratch", "path": "/etc/shadow"},
             "reads /etc/shadow while every reply stays right", probe="any"),
        Case("micro-delay", COVERT, {"kind": "micro-delay", "us": 200},
             "answers every request right, 200 µs late", probe="any"),
        Case("never-healthy", f, {"kind": "never-healthy"},
             "a flaw in the image: health fails, and a cleansed instance never becomes healthy",
             probe="any", image=True, probes=0),
    ]
