"""Reading settings files: YAML in, a validated model out, every error naming its field.

Shared by the gateway's configuration (`endosec.config`) and the agent's
(`endosec.runtime.agent`): an error names the file, the line and the field
(``endosec.yaml:12: executors[0].argv: ...``), and a key that is not known suggests the nearest
one that is (``did you mean `listen`?``).
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar, get_args

import yaml
from pydantic import BaseModel, ValidationError

__all__ = ["ConfigError", "Locate", "expand", "read_yaml", "readable_tls", "validate"]

M = TypeVar("M", bound=BaseModel)

Locate = Callable[[tuple[int | str, ...]], int | None]
"""Where a setting is in its file: ``loc`` to a 1-based line number, if known."""


class ConfigError(Exception):
    """A configuration that cannot be used; the message names the file and the field."""


def read_yaml(path: Path) -> tuple[dict[str, Any], Locate]:
    """The file's top-level mapping and a `Locate` over it."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: (top level): expected a mapping of settings")
    return data, _lines(node)


def validate(model: type[M], data: Mapping[str, Any], source: str,
             locate: Locate | None = None) -> M:
    """``model`` from ``data``, or a `ConfigError` listing every mistake."""
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            msg = str(err["msg"]).removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg += _suggestion(model, loc)
            line = locate(loc) if locate is not None else None
            where = f"{source}:{line}" if line is not None else source
            lines.append(f"{where}: {_location(loc)}: {msg}")
        raise ConfigError("\n".join(lines)) from exc


class _Tls(Protocol):
    @property
    def cert(self) -> Path: ...
    @property
    def key(self) -> Path: ...


def readable_tls(tls: _Tls, source: str) -> None:
    for key in ("cert", "key"):
        path: Path = getattr(tls, key)
        try:
            path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{source}: tls.{key}: cannot read {path}: "
                              f"{exc.strerror or exc}") from exc


def expand(value: Any, here: Path) -> Any:
    """Substitute ``{python}`` and ``{here}`` in strings; ``{port}`` etc. are left for runtime."""
    if isinstance(value, str):
        return value.replace("{python}", sys.executable).replace("{here}", str(here))
    if isinstance(value, list):
        return [expand(v, here) for v in value]
    if isinstance(value, dict):
        return {k: expand(v, here) for k, v in value.items()}
    return value


def _location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _model_at(root: type[BaseModel], loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The settings model holding the field at ``loc`` (list indices skipped)."""
    model = root
    for part in loc:
        if isinstance(part, int):
            continue
        field = next((f for n, f in model.model_fields.items() if (f.alias or n) == part), None)
        if field is None:
            return None
        inner = [field.annotation, *get_args(field.annotation)]
        inner += [a for t in inner[1:] for a in get_args(t)]
        found = next((t for t in inner if isinstance(t, type) and issubclass(t, BaseModel)),
                     None)
        if found is None:
            return None
        model = found
    return model


def _suggestion(root: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    """``(did you mean `listen`?)`` for a mistyped key, when one known key is close."""
    model = _model_at(root, loc[:-1])
    if model is None:
        return ""
    known = [f.alias or n for n, f in model.model_fields.items()]
    close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
    return f" (did you mean `{close[0]}`?)" if close else ""


def _lines(node: yaml.Node | None) -> Locate:
    """A `Locate` over the file's YAML node tree (a key's own line for the last part)."""
    def locate(loc: tuple[int | str, ...]) -> int | None:
        current = node
        for i, part in enumerate(loc):
            if isinstance(current, yaml.MappingNode):
                pair = next(((k, v) for k, v in current.value if k.value == part), None)
                if pair is None:
                    return None
                current = pair[0] if i == len(loc) - 1 else pair[1]
            elif isinstance(current, yaml.SequenceNode) and isinstance(part, int) \
                    and part < len(current.value):
                current = current.value[part]
            else:
                break
        return None if current is None else current.start_mark.line + 1
    return locate
