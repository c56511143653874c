"""Read what the quantifier needs from an endosec configuration: executors and their profiles.

The file is validated exactly as `endosec check` validates it (`endosec.config.load_config`),
so a configuration the quantifier accepts is one the gateway runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from endosec.config import ConfigError, load_config
from endosec.core.model import Profile
from endosec.quantify.errors import ParameterError

__all__ = ["QuantifyConfig", "read_config"]


@dataclass(frozen=True, slots=True)
class QuantifyConfig:
    profiles: tuple[Profile, ...]
    components: dict[str, float]
    default_p: float | None


def read_config(path: str | Path) -> QuantifyConfig:
    """The executors' profiles and the ``quantify`` section; errors name the file and field."""
    try:
        config = load_config(path)
    except ConfigError as exc:
        raise ParameterError(str(exc)) from exc
    return QuantifyConfig(tuple(e.as_profile() for e in config.executors),
                          dict(config.quantify.components), config.quantify.default_p)
