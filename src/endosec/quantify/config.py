"""Read what the quantifier needs from an endosec configuration: executors and their profiles.

Only ``executors`` (name and profile) and the optional ``quantify`` section are read; the rest
of the file belongs to the gateway and is ignored here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from endosec.core.model import Profile
from endosec.quantify.errors import ParameterError

__all__ = ["QuantifyConfig", "read_config"]


@dataclass(frozen=True, slots=True)
class QuantifyConfig:
    profiles: tuple[Profile, ...]
    components: dict[str, float]
    default_p: float | None


def _probability(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ParameterError(f"{where} must be a probability in [0, 1], got {value!r}")
    return float(value)


def _profile(path: Path, i: int, item: Any) -> Profile:
    where = f"{path}: executors[{i}]"
    if not isinstance(item, dict):
        raise ParameterError(f"{where} must be a mapping with name and profile")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise ParameterError(f"{where}.name must be a non-empty string")
    profile = item.get("profile", [])
    if not isinstance(profile, list) or not all(isinstance(c, str) and c for c in profile):
        raise ParameterError(f"{where}.profile must be a list of component strings")
    return Profile(name, frozenset(profile))


def _section(path: Path, data: dict[str, Any]) -> tuple[dict[str, float], float | None]:
    section = data.get("quantify") or {}
    if not isinstance(section, dict):
        raise ParameterError(f"{path}: quantify must be a mapping")
    comps = section.get("components") or {}
    if not isinstance(comps, dict):
        raise ParameterError(f"{path}: quantify.components must map component names to p")
    components = {str(c): _probability(f"{path}: quantify.components.{c}", v)
                  for c, v in comps.items()}
    raw_default = section.get("default_p")
    default = (None if raw_default is None
               else _probability(f"{path}: quantify.default_p", raw_default))
    return components, default


def read_config(path: str | Path) -> QuantifyConfig:
    """Parse the executors and the ``quantify`` section; errors name the file and the field."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ParameterError(f"{path}: cannot read ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise ParameterError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(data, dict):
        raise ParameterError(f"{path}: the top level must be a mapping")
    executors = data.get("executors")
    if not isinstance(executors, list) or not executors:
        raise ParameterError(f"{path}: executors must be a non-empty list")
    profiles = tuple(_profile(path, i, item) for i, item in enumerate(executors))
    names = [p.name for p in profiles]
    for name in names:
        if names.count(name) > 1:
            raise ParameterError(f"{path}: executors: duplicate name {name!r}")
    components, default = _section(path, data)
    return QuantifyConfig(profiles, components, default)
