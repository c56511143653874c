"""What an implant is and what it does to one exchange; pure functions, no I/O.

An implant is a JSON object (``implant.json`` in an executor's scratch directory, or an image
implant that survives cleansing) naming a ``kind`` and the conditions under which it acts:

* ``trigger`` - ``{"header": NAME, "value": VALUE}``: act only on requests carrying that header;
* ``after`` - act only from the Nth request counted since the implant was planted (1 = first);
* ``fraction`` - act on a deterministic share of requests (the same request numbers every run);
* ``paths`` - glob patterns on the request path; ``methods`` - request methods;
* ``informed`` - ``{"admin": "HOST:PORT", "allies": "A,B"}``: before acting, read the active set
  from the admin listener's ``/status`` (as any process on the host could try) and act only
  when the allies (the executors the attacker holds) are a majority of it; when the set cannot
  be read, act as an uninformed implant would (the wrapper does this part).

Requests to the executor's health path are never counted and never acted on, except by
``never-healthy``. Kinds and their parameters are listed in `KINDS`.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from endosec.protocols.http import Request, Response

__all__ = [
    "ALTERING",
    "COVERT",
    "KINDS",
    "Implant",
    "ImplantError",
    "alter_response",
    "fraction_draw",
    "parse_implant",
]

#: kind -> its required parameters (name -> accepted JSON types).
KINDS: Mapping[str, Mapping[str, tuple[type, ...]]] = {
    "exfiltrate-secret": {"secret": (str,)},
    "alter-json-field": {"field": (str,), "value": (str, int, float, bool, list, dict)},
    "inject-header": {"header": (str,), "value": (str,)},
    "alter-status": {"status": (int,)},
    "nudge-numbers": {"delta": (int,)},
    "crash": {},
    "hang": {},
    "delay": {"ms": (int,)},
    "garbage": {},
    "truncate": {},
    "reset": {},
    "never-healthy": {},
    "record": {"match": (str,)},
    "dormant": {},
    # Covert: the reply stays right while the executor does something else.
    "connect-out": {"host": (str,), "port": (int,)},
    "spawn-shell": {},
    "cpu-burn": {},
    "leak-memory": {},
    "read-outside-scratch": {"path": (str,)},
    "micro-delay": {"us": (int,)},
    "hand-over-port": {},
}
#: Kinds that answer right while doing something else (behaviour, not output, shows them).
COVERT = frozenset({"connect-out", "spawn-shell", "cpu-burn", "leak-memory",
                    "read-outside-scratch", "micro-delay", "hand-over-port"})
#: Kinds that answer with an altered version of the executor's real response.
ALTERING = frozenset({"alter-json-field", "inject-header", "alter-status", "nudge-numbers"})
_CONDITIONS = frozenset({"kind", "trigger", "after", "fraction", "paths", "methods", "note",
                         "informed"})
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HEADER_VALUE = re.compile(r"[\x20-\x7e]*")


class ImplantError(ValueError):
    """An implant description that cannot be used; the message names the field."""


@dataclass(frozen=True, slots=True)
class Implant:
    """One planted behaviour and the conditions under which it acts."""

    kind: str
    params: Mapping[str, Any]
    trigger: tuple[bytes, bytes] | None = None
    after: int = 1
    fraction: float = 1.0
    paths: tuple[str, ...] = ()
    methods: tuple[bytes, ...] = ()
    informed: tuple[tuple[str, int], frozenset[str]] | None = None  # admin address, allies

    def strikes(self, active: list[str] | None) -> bool:
        """Whether an informed implant acts, ``active`` being the active set it read (None:
        it could not); an uninformed one always does."""
        if self.informed is None or active is None:
            return True
        allies = self.informed[1]
        return 2 * sum(a in allies for a in active) > len(active)

    def matches(self, request: Request, count: int) -> bool:
        """Whether the ``count``-th counted request since planting is acted on."""
        if count < self.after or fraction_draw(count) >= self.fraction:
            return False
        if self.methods and request.method not in self.methods:
            return False
        if self.paths:
            path = request.target.partition(b"?")[0].decode("latin-1")
            if not any(fnmatch.fnmatchcase(path, p) for p in self.paths):
                return False
        if self.trigger is not None:
            name, value = self.trigger
            return any(n == name and v == value for n, v in request.headers)
        return True


def fraction_draw(n: int) -> float:
    """A fixed pseudo-random number in [0, 1) for request number ``n`` (Knuth's hash)."""
    return ((n * 2654435761) % 2**32) / 2**32


def _field(data: Mapping[str, Any], key: str, types: tuple[type, ...], what: str) -> Any:
    if key not in data:
        raise ImplantError(f"{what}: missing {key!r}")
    value = data[key]
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        names = "/".join(t.__name__ for t in types)
        raise ImplantError(f"{what}: {key!r} must be {names}, got {value!r}")
    return value


def parse_implant(data: Any, *, source: str = "implant") -> Implant:
    """Validate a decoded implant description."""
    if not isinstance(data, dict):
        raise ImplantError(f"{source}: expected a JSON object")
    kind = data.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        raise ImplantError(f"{source}: kind must be one of {', '.join(KINDS)}; got {kind!r}")
    required = KINDS[kind]
    unknown = set(data) - _CONDITIONS - set(required)
    if unknown:
        raise ImplantError(f"{source}: unknown field(s) {', '.join(sorted(unknown))}")
    params = {key: _field(data, key, types, source) for key, types in required.items()}
    if kind == "inject-header":
        if not _HEADER_NAME.fullmatch(params["header"]):
            raise ImplantError(f"{source}: 'header' is not a valid header name")
        if not _HEADER_VALUE.fullmatch(params["value"]):
            raise ImplantError(f"{source}: 'value' is not a valid header value")
    if kind == "alter-status" and not 200 <= params["status"] <= 599:
        raise ImplantError(f"{source}: 'status' must be in 200..599")
    trigger = None
    if "trigger" in data:
        t = data["trigger"]
        if not isinstance(t, dict):
            raise ImplantError(f"{source}: 'trigger' must be an object")
        name = _field(t, "header", (str,), f"{source}: trigger")
        value = _field(t, "value", (str,), f"{source}: trigger")
        trigger = (name.lower().encode("latin-1"), value.encode("latin-1"))
    after = data.get("after", 1)
    if not isinstance(after, int) or isinstance(after, bool) or after < 1:
        raise ImplantError(f"{source}: 'after' must be an integer >= 1")
    fraction = data.get("fraction", 1.0)
    if not isinstance(fraction, (int, float)) or isinstance(fraction, bool) \
            or not 0 < fraction <= 1:
        raise ImplantError(f"{source}: 'fraction' must be a number in (0, 1]")
    paths = data.get("paths", [])
    methods = data.get("methods", [])
    for key, items in (("paths", paths), ("methods", methods)):
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise ImplantError(f"{source}: {key!r} must be a list of strings")
    return Implant(kind, params, trigger, after, float(fraction), tuple(paths),
                   tuple(m.upper().encode("latin-1") for m in methods),
                   _informed(data["informed"], source) if "informed" in data else None)


def _informed(data: Any, source: str) -> tuple[tuple[str, int], frozenset[str]]:
    if not isinstance(data, dict):
        raise ImplantError(f"{source}: 'informed' must be an object")
    admin = _field(data, "admin", (str,), f"{source}: informed")
    allies = _field(data, "allies", (str,), f"{source}: informed")
    host, _, port = admin.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ImplantError(f"{source}: informed: 'admin' must be HOST:PORT, got {admin!r}")
    return (host, int(port)), frozenset(a for a in allies.split(",") if a)


def _set_field(data: Any, key: str, value: Any) -> bool:
    """Set ``key`` in every object holding it; True if anything changed."""
    changed = False
    if isinstance(data, dict):
        if key in data and data[key] != value:
            data[key] = value
            changed = True
        for v in data.values():
            changed = _set_field(v, key, value) or changed
    elif isinstance(data, list):
        for v in data:
            changed = _set_field(v, key, value) or changed
    return changed


def _nudge(data: Any, delta: int) -> Any:
    if isinstance(data, bool):
        return data
    if isinstance(data, int):
        return data + delta
    if isinstance(data, float):
        return data + delta / 1000
    if isinstance(data, dict):
        return {k: _nudge(v, delta) for k, v in data.items()}
    if isinstance(data, list):
        return [_nudge(v, delta) for v in data]
    return data


def _nudge_text(body: bytes, delta: int) -> bytes:
    """Change the first decimal digit of a non-JSON body by ``delta`` (mod 10)."""
    match = re.search(rb"[0-9]", body)
    if match is None:
        return body
    digit = (int(match.group()) + delta) % 10
    return body[:match.start()] + str(digit).encode() + body[match.end():]


def _json_body(response: Response) -> Any:
    try:
        return json.loads(response.body)
    except (ValueError, UnicodeDecodeError):
        return None


def alter_response(implant: Implant, response: Response) -> Response:
    """The response an `ALTERING` implant substitutes for the executor's real one."""
    p = implant.params
    match implant.kind:
        case "inject-header":
            name = p["header"].lower().encode("latin-1")
            return replace(response, headers=(*response.headers,
                                              (name, p["value"].encode("latin-1"))))
        case "alter-status":
            return replace(response, status=p["status"], reason=b"")
        case "alter-json-field":
            data = _json_body(response)
            if data is None or not _set_field(data, p["field"], p["value"]):
                return response
            return replace(response, body=json.dumps(data).encode())
        case "nudge-numbers":
            data = _json_body(response)
            nudged = _nudge(data, p["delta"])
            if data is None or nudged == data:
                return replace(response, body=_nudge_text(response.body, p["delta"]))
            return replace(response, body=json.dumps(nudged).encode())
    raise ValueError(f"{implant.kind} does not alter responses")
