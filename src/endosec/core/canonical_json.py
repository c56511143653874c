"""The JSON body rule: agree on a document's value, forgiving configured fields, order, rounding.

`JsonRule` parses JSON (key order is irrelevant), drops (``ignore``) or masks (``mask``) fields
by JSON pointer (``/created_at``, ``/items/0/id``) or glob path (``/*/created_at``, ``/**/id``,
``/meta/trace_*``: a segment with ``*``, ``?`` or ``[`` is an fnmatch pattern, ``**`` spans any
number of levels), optionally sorts lists (all, or those at given paths), and optionally
compares numbers within an absolute ``tolerance`` (then 1 and 1.0 also agree; without one
numbers must be spelled alike as JSON values: 1 and 1.0 differ). The key is the compact
sorted-keys encoding of the edited value. Invalid JSON gets the key ``INVALID_PREFIX + raw``,
which no valid document's key can equal.

Limits worth knowing: under a tolerance, classes are formed by comparing with each class's first
member, so a chain of values each within tolerance of the next may group differently by arrival
order; duplicate object keys keep the last value, as most parsers do; documents nested deeper
than the interpreter can walk count as invalid; ignored and masked fields are not protected by
the vote (the arbiter serves the byte-majority member of the class). Plain pointers are applied
directly; a glob path walks the document, ``**`` all of it.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import orjson

from endosec.core.model import Canonical

__all__ = ["INVALID_PREFIX", "MASK_TOKEN", "JsonRule"]

INVALID_PREFIX = b"\x00invalid\x00"
"""Key prefix for output a rule cannot parse; a valid JSON encoding never starts with NUL."""

MASK_TOKEN = "<masked>"
"""What masked JSON values and masked text become."""


# --- JSON paths --------------------------------------------------------------------------------

class _Wild(Enum):
    ANY = "*"  # exactly one level, any key or index
    DEEP = "**"  # zero or more levels


_Segment = str | re.Pattern[str] | _Wild
_Path = tuple[_Segment, ...]


class _Act(Enum):
    IGNORE = 0
    MASK = 1
    SORT = 2


def _compile_path(text: object) -> _Path:
    """A JSON pointer (RFC 6901) whose segments may be fnmatch patterns or ``**``."""
    if not isinstance(text, str):
        raise ValueError(f"a path must be a string, got {type(text).__name__}")
    if not text.startswith("/"):
        raise ValueError(f"invalid JSON pointer {text!r}: must start with '/'")
    segments: list[_Segment] = []
    for escaped in text[1:].split("/"):
        if re.search(r"~(?![01])", escaped):
            raise ValueError(f"invalid JSON pointer {text!r}: '~' must be followed by 0 or 1")
        part = escaped.replace("~1", "/").replace("~0", "~")
        if part == "**":
            if not segments or segments[-1] is not _Wild.DEEP:
                segments.append(_Wild.DEEP)
        elif part == "*":
            segments.append(_Wild.ANY)
        elif any(c in part for c in "*?["):
            segments.append(re.compile(fnmatch.translate(part)))
        else:
            segments.append(part)
    if segments[-1] is _Wild.DEEP:
        raise ValueError(f"invalid JSON pointer {text!r}: a path cannot end in '**'")
    return tuple(segments)


def _matches(segment: _Segment, key: str) -> bool:
    if isinstance(segment, str):
        return segment == key
    if isinstance(segment, _Wild):
        return True
    return segment.match(key) is not None


def _is_index(segment: str, length: int) -> bool:
    """RFC 6901 array index: decimal digits without a leading zero, within the array."""
    return segment.isdecimal() and segment.isascii() and (segment == "0" or segment[0] != "0") \
        and int(segment) < length


def _closure(program: Sequence[tuple[_Path, _Act]], states: list[tuple[int, int]]
             ) -> list[tuple[int, int]]:
    """Add the states reached by letting each ``**`` match zero levels."""
    out: dict[tuple[int, int], None] = {}
    for p, start in states:
        out[(p, start)] = None
        path = program[p][0]
        pos = start
        while path[pos] is _Wild.DEEP:
            pos += 1
            out[(p, pos)] = None
    return list(out)


def _edit(node: Any, states: list[tuple[int, int]], program: Sequence[tuple[_Path, _Act]],
          ) -> None:
    """Apply the program's actions below ``node`` in place (we own the freshly parsed value)."""
    if isinstance(node, dict):
        keys: list[Any] = list(node)
    elif isinstance(node, list):
        keys = list(range(len(node)))
    else:
        return
    literal = [s for p, pos in states if isinstance(s := program[p][0][pos], str)]
    if len(literal) == len(states):  # no wildcard: visit only the named children
        keys = [k for k in dict.fromkeys(literal) if k in node] if isinstance(node, dict) \
            else sorted({int(k) for k in literal if _is_index(k, len(node))})
    drop: list[Any] = []
    for key in keys:
        name = str(key)
        act: _Act | None = None
        nxt: list[tuple[int, int]] = []
        for p, pos in states:
            path, action = program[p]
            segment = path[pos]
            if segment is _Wild.DEEP:
                nxt.append((p, pos))
            elif _matches(segment, name):
                if pos + 1 == len(path):
                    act = action if act is None else _Act(min(act.value, action.value))
                else:
                    nxt.append((p, pos + 1))
        if act is _Act.IGNORE:
            drop.append(key)
            continue
        if act is _Act.MASK:
            node[key] = MASK_TOKEN
            continue
        child = node[key]
        if nxt:
            _edit(child, _closure(program, nxt), program)
        if act is _Act.SORT and isinstance(child, list):
            child.sort(key=_order)
    for key in reversed(drop):
        del node[key]


_MISSING = object()


def _step(node: Any, segment: str) -> Any:
    if isinstance(node, dict):
        return node.get(segment, _MISSING)
    if isinstance(node, list) and _is_index(segment, len(node)):
        return node[int(segment)]
    return _MISSING


def _literal_program(program: Sequence[tuple[_Path, _Act]]
                     ) -> tuple[tuple[tuple[str, ...], _Act], ...] | None:
    """Plain pointers, ordered so applying them one by one equals `_edit`'s single walk:
    masks first, then removals and sorts deepest first and from the last index back."""
    plain: dict[tuple[tuple[str, ...], _Act], None] = {}
    for path, act in program:
        if not all(isinstance(s, str) for s in path):
            return None
        plain[(tuple(s for s in path if isinstance(s, str)), act)] = None

    def order(item: tuple[tuple[str, ...], _Act]) -> tuple[Any, ...]:
        path, act = item
        if act is _Act.MASK:
            return (0,)
        # then post-order, later siblings first, as the walk does: no index shifts under us
        return (1, (*((0, -int(s), "") if _is_index(s, 1 << 62) else (1, 0, s) for s in path),
                    (2, 0, "")), act is _Act.IGNORE)

    return tuple(sorted(plain, key=order))


def _apply_pointers(root: Any, pointers: tuple[tuple[tuple[str, ...], _Act], ...]) -> None:
    for path, act in pointers:
        node = root
        for segment in path[:-1]:
            node = _step(node, segment)
        last = path[-1]
        if isinstance(node, dict):
            if last not in node:
                continue
            key: Any = last
        elif isinstance(node, list) and _is_index(last, len(node)):
            key = int(last)
        else:
            continue
        if act is _Act.IGNORE:
            del node[key]
        elif act is _Act.MASK:
            node[key] = MASK_TOKEN
        elif isinstance(node[key], list):
            node[key].sort(key=_order)


def _sort_all(node: Any) -> None:
    if isinstance(node, dict):
        for child in node.values():
            _sort_all(child)
    elif isinstance(node, list):
        for child in node:
            _sort_all(child)
        node.sort(key=_order)


def _order(v: Any) -> tuple[int, int | float, str, bytes]:
    """A total order on JSON values: numbers by value, then strings, then the rest encoded."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return (0, v, "", b"")
    if isinstance(v, str):
        return (1, 0, v, b"")
    return (2, 0, "", _encode(v))


# --- JSON parsing and encoding -----------------------------------------------------------------

_DIGITS = bytes(0x31 if 0x30 <= i <= 0x39 else 0x30 for i in range(256))
_LONG_NUMBER = b"1" * 19  # orjson turns integers beyond 64 bits into floats: parse those exactly


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse(raw: bytes) -> Any:
    if _LONG_NUMBER in raw.translate(_DIGITS):
        return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    return orjson.loads(raw)


def _encode(value: Any) -> bytes:
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:  # an integer beyond 64 bits
        return json.dumps(value, sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False).encode()


def _close(a: Any, b: Any, tolerance: float) -> bool:
    """Structural equality where numbers (not booleans) may differ by ``tolerance``."""
    if isinstance(a, (int, float)) and not isinstance(a, bool):
        return (isinstance(b, (int, float)) and not isinstance(b, bool)
                and abs(a - b) <= tolerance)
    if isinstance(a, dict):
        return (isinstance(b, dict) and a.keys() == b.keys()
                and all(_close(v, b[k], tolerance) for k, v in a.items()))
    if isinstance(a, list):
        return (isinstance(b, list) and len(a) == len(b)
                and all(_close(x, y, tolerance) for x, y in zip(a, b, strict=True)))
    return type(a) is type(b) and a == b


@dataclass(frozen=True, slots=True)
class JsonRule:
    """Compare JSON documents by value, forgiving configured fields, order and rounding."""

    ignore: Sequence[str] = ()
    mask: Sequence[str] = ()
    tolerance: float = 0.0
    unordered_lists: bool | Sequence[str] = False
    _program: tuple[tuple[_Path, _Act], ...] = field(init=False, repr=False, compare=False)
    _start: list[tuple[int, int]] = field(init=False, repr=False, compare=False)
    _pointers: tuple[tuple[tuple[str, ...], _Act], ...] | None = field(
        init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        program: list[tuple[_Path, _Act]] = []
        sort_paths: Sequence[str] = ()
        if not isinstance(self.unordered_lists, bool):
            sort_paths = self.unordered_lists
        for name, paths, act in (("ignore", self.ignore, _Act.IGNORE),
                                 ("mask", self.mask, _Act.MASK),
                                 ("unordered_lists", sort_paths, _Act.SORT)):
            if isinstance(paths, str) or not isinstance(paths, Sequence):
                raise ValueError(f"{name}: expected a list of paths")
            for i, text in enumerate(paths):
                try:
                    program.append((_compile_path(text), act))
                except ValueError as exc:
                    raise ValueError(f"{name}[{i}]: {exc}") from None
        t = self.tolerance
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 <= t < float("inf"):
            raise ValueError(f"tolerance: must be a finite number >= 0, got {t!r}")
        object.__setattr__(self, "ignore", tuple(self.ignore))
        object.__setattr__(self, "mask", tuple(self.mask))
        if not isinstance(self.unordered_lists, bool):
            object.__setattr__(self, "unordered_lists", tuple(sort_paths))
        object.__setattr__(self, "_program", tuple(program))
        object.__setattr__(self, "_start", _closure(program, [(p, 0) for p in range(len(program))]))
        object.__setattr__(self, "_pointers", _literal_program(program))

    def canonicalise(self, raw: bytes) -> Canonical:
        try:
            value = _parse(raw)
            if self._pointers is not None:
                _apply_pointers(value, self._pointers)
            else:
                _edit(value, self._start, self._program)
            if self.unordered_lists is True:
                _sort_all(value)
            return Canonical(_encode(value), value)
        except (ValueError, RecursionError):  # incl. JSONDecodeError, UnicodeDecodeError
            return Canonical(INVALID_PREFIX + raw)

    def equivalent(self, a: Canonical, b: Canonical) -> bool:
        if a.key == b.key:
            return True
        if not self.tolerance or a.key.startswith(INVALID_PREFIX) \
                or b.key.startswith(INVALID_PREFIX):
            return False
        try:
            return _close(a.value, b.value, self.tolerance)
        except RecursionError:  # nested beyond what we compare: fail closed
            return False
