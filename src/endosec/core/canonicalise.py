"""Canonicalisers: what may legitimately differ between heterogeneous executors, and what may not.

Rules are compiled once from configuration; at run time they only run when raw bytes differ
(`Output.agrees_with` compares raw bytes first). Each rule is a `Canonicaliser`: ``canonicalise``
gives a key (equal keys mean agreement) and ``equivalent`` decides agreement between two keys.

* `ExactBytes` - the key is the raw bytes.
* `JsonRule` (`endosec.core.canonical_json`) - JSON compared by value, with ignored or masked
  fields by pointer or glob path, unordered lists and a numeric tolerance.
* `TextRule` - replace regex matches with a fixed token (UTF-8 text; undecodable bytes kept).
* `HeaderRule` (`endosec.core.canonical_http`) - canonical HTTP-like headers: names lowercased,
  ignored headers dropped, an optional allow list, presence-only headers whose value does not
  matter, and content-type normalisation.

Configuration (a YAML-derived mapping) for `compile_rules`::

    headers:
      ignore: [x-powered-by]       # added to DEFAULT_IGNORED_HEADERS
      default_ignore: true         # false: only the listed headers are ignored
      allow: [content-type, ...]   # or absent/null: keep every header not ignored
      presence_only: [set-cookie]  # compared by presence, not value (always kept)
      content_type: media-type     # or "exact"
      ignore_on_status: {416: [content-range]}   # also ignored, for these statuses only
    bodies:                        # first matching rule wins; default exact bytes
      - path: "/notes*"            # fnmatch glob on the request path (default "*")
        content_type: application/json   # prefix of the media type (default: any)
        status: [200, 201]         # a status or a list of statuses (default: any)
        json: {ignore: [/created_at], mask: [/**/etag], tolerance: 0.0,
               unordered_lists: false}   # or a list of paths whose lists are unordered
      - text: {masks: ['\\d{4}-\\d\\d-\\d\\dT[0-9:.]+Z?']}
      - exact: {}

A bad configuration raises ValueError naming the field, e.g.
``bodies[1].json.ignore[0]: invalid JSON pointer 'created_at': must start with '/'``.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from endosec.core.canonical_http import (
    DEFAULT_IGNORED_HEADERS,
    HeaderRule,
    header_names,
    http_status,
)
from endosec.core.canonical_json import MASK_TOKEN, JsonRule
from endosec.core.model import Canonical, Canonicaliser

__all__ = ["BodyRule", "ExactBytes", "RuleSet", "TextRule", "compile_rules"]


@dataclass(frozen=True, slots=True)
class ExactBytes:
    """Outputs agree only byte for byte."""

    def canonicalise(self, raw: bytes) -> Canonical:
        return Canonical(raw)

    def equivalent(self, a: Canonical, b: Canonical) -> bool:
        return a.key == b.key


# --- text --------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class TextRule:
    """Text whose regex matches (timestamps, nonces) are replaced by a fixed token."""

    masks: Sequence[str] = ()
    _patterns: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.masks, str) or not isinstance(self.masks, Sequence):
            raise ValueError("masks: expected a list of regular expressions")
        patterns = []
        for i, text in enumerate(self.masks):
            if not isinstance(text, str):
                raise ValueError(f"masks[{i}]: expected a string")
            try:
                patterns.append(re.compile(text))
            except re.error as exc:
                raise ValueError(f"masks[{i}]: invalid regular expression {text!r}: {exc}"
                                 ) from None
        object.__setattr__(self, "masks", tuple(self.masks))
        object.__setattr__(self, "_patterns", tuple(patterns))

    def canonicalise(self, raw: bytes) -> Canonical:
        text = raw.decode("utf-8", "surrogateescape")
        for pattern in self._patterns:
            text = pattern.sub(MASK_TOKEN, text)
        return Canonical(text.encode("utf-8", "surrogateescape"))

    def equivalent(self, a: Canonical, b: Canonical) -> bool:
        return a.key == b.key


# --- rule sets ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class BodyRule:
    """A body canonicaliser for the responses whose path, media type and status match.

    ``statuses`` empty: any status. A legitimate difference confined to one status (a 416
    page one server words its own way) is then exempt there and still voted everywhere else.
    """

    canonicaliser: Canonicaliser
    path: str = "*"
    content_type: str = ""
    statuses: tuple[int, ...] = ()
    _path: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_path", re.compile(fnmatch.translate(self.path)))

    def matches(self, path: str, media_type: str, status: int) -> bool:
        return (media_type.startswith(self.content_type)
                and (not self.statuses or status in self.statuses)
                and self._path.match(path) is not None)


@dataclass(frozen=True, slots=True)
class RuleSet:
    """The compiled canonicalisation config: header rule plus ordered body rules."""

    headers: HeaderRule = field(default_factory=HeaderRule)
    bodies: tuple[BodyRule, ...] = ()
    default: Canonicaliser = field(default_factory=ExactBytes)

    def for_response(self, path: str, content_type: str, status: int) -> Canonicaliser:
        """The first body rule matching the request path, the response's media type and its
        status (0 for an executor that gave no response: only rules without ``status``)."""
        if not self.bodies:
            return self.default
        media = content_type.partition(";")[0].strip().lower()
        for rule in self.bodies:
            if rule.matches(path, media, status):
                return rule.canonicaliser
        return self.default


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _known(config: Mapping[str, Any], where: str, allowed: tuple[str, ...]) -> None:
    for key in config:
        if key not in allowed:
            prefix = f"{where}." if where else ""
            raise ValueError(f"{prefix}{key}: unknown field (expected one of "
                             f"{', '.join(allowed)})")


def _string(config: Mapping[str, Any], key: str, where: str, default: str) -> str:
    value = config.get(key, default)
    if not isinstance(value, str):
        raise ValueError(f"{where}.{key}: expected a string, got {type(value).__name__}")
    return value


def _header_rule(config: Mapping[str, Any]) -> HeaderRule:
    _known(config, "headers", ("ignore", "default_ignore", "allow", "presence_only",
                               "content_type", "ignore_on_status"))
    ignore = config.get("ignore") or []
    default_ignore = config.get("default_ignore", True)
    if not isinstance(default_ignore, bool):
        raise ValueError("headers.default_ignore: expected true or false")
    if isinstance(ignore, str) or not isinstance(ignore, Sequence):
        raise ValueError("headers.ignore: expected a list of header names")
    try:
        header_names("ignore", ignore)
        names = (*DEFAULT_IGNORED_HEADERS, *ignore) if default_ignore else tuple(ignore)
        on_status: Mapping[Any, Any] = _mapping(config.get("ignore_on_status"),
                                                "headers.ignore_on_status")
        return HeaderRule(ignore=names, allow=config.get("allow"),
                          presence_only=config.get("presence_only") or (),
                          content_type=_string(config, "content_type", "headers", "media-type"),
                          ignore_on_status=dict(on_status))
    except ValueError as exc:
        message = str(exc)
        raise ValueError(message if message.startswith("headers.") else f"headers.{message}"
                         ) from None


def _statuses(value: object, where: str) -> tuple[int, ...]:
    """A body rule's ``status``: one status, or a non-empty list of them."""
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ValueError(f"{where}: an empty list matches no response")
    out = []
    for i, item in enumerate(items):
        at = f"{where}[{i}]" if isinstance(value, list) else where
        try:
            status = http_status(item)
        except ValueError as exc:  # more digits than int() reads
            raise ValueError(f"{at}: {exc}") from None
        if status is None:
            raise ValueError(f"{at}: {item!r} is not an HTTP status")
        out.append(status)
    return tuple(out)


def _body_rule(config: Mapping[str, Any], where: str) -> BodyRule:
    kinds = [k for k in ("json", "text", "exact") if k in config]
    if len(kinds) != 1:
        raise ValueError(f"{where}: needs exactly one of json, text or exact")
    _known(config, where, ("path", "content_type", "status", kinds[0]))
    kind = kinds[0]
    body = _mapping(config[kind], f"{where}.{kind}")
    canonicaliser: Canonicaliser
    try:
        if kind == "json":
            _known(body, f"{where}.json", ("ignore", "mask", "tolerance", "unordered_lists"))
            canonicaliser = JsonRule(ignore=body.get("ignore") or (),
                                     mask=body.get("mask") or (),
                                     tolerance=body.get("tolerance", 0.0),
                                     unordered_lists=body.get("unordered_lists", False))
        elif kind == "text":
            _known(body, f"{where}.text", ("masks",))
            canonicaliser = TextRule(masks=body.get("masks") or ())
        else:
            _known(body, f"{where}.exact", ())
            canonicaliser = ExactBytes()
    except ValueError as exc:
        message = str(exc)
        raise ValueError(message if message.startswith(where) else f"{where}.{kind}.{message}"
                         ) from None
    path = _string(config, "path", where, "*")
    content_type = _string(config, "content_type", where, "").strip().lower()
    statuses = _statuses(config["status"], f"{where}.status") if "status" in config else ()
    return BodyRule(canonicaliser, path=path, content_type=content_type, statuses=statuses)


def compile_rules(config: Mapping[str, Any]) -> RuleSet:
    """Compile the ``canonicalise`` configuration (see the module docstring) into a RuleSet."""
    config = _mapping(config, "canonicalise")
    _known(config, "", ("headers", "bodies"))
    headers = _header_rule(_mapping(config.get("headers"), "headers"))
    bodies = config.get("bodies") or []
    if isinstance(bodies, str) or not isinstance(bodies, Sequence):
        raise ValueError("bodies: expected a list of body rules")
    rules = tuple(_body_rule(_mapping(b, f"bodies[{i}]"), f"bodies[{i}]")
                  for i, b in enumerate(bodies))
    return RuleSet(headers=headers, bodies=rules)
