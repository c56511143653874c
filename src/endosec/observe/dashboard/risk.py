"""The quantifier's estimate of P(defeat) for the live active set, for the dashboard.

It applies the components model (`endosec.quantify.components`) to the active executors'
profiles, every component exploited independently with the same probability: an attacker
defeats the boundary when enough executors to carry the vote are compromised. Shared components
(common mode) are what push the figure up, so the largest contributions are reported too.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from endosec.core.model import Profile
from endosec.quantify.components import ComponentsResult, ComponentSystem, analyse

__all__ = ["defeat_estimate", "votes_to_defeat"]


def votes_to_defeat(strategy: str, n: int, k: int | None) -> int:
    """How many of ``n`` voters must agree on a forged output for it to be the answer."""
    if strategy == "threshold" and k is not None:
        return min(k, n)
    if strategy == "unanimity":
        return n
    return n // 2 + 1  # majority, and the best an attacker can hope for against plurality


@functools.lru_cache(maxsize=64)
def _analyse(profiles: tuple[Profile, ...], k: int, p: float) -> ComponentsResult:
    return analyse(ComponentSystem(profiles, default_p=p), k=k, seed=0)


@functools.lru_cache(maxsize=64)
def _alone(profile: Profile, p: float) -> float:
    return _analyse((profile,), 1, p).p_defeat


def defeat_estimate(profiles: Sequence[Profile], *, strategy: str, k: int | None,
                    p: float, top: int = 5) -> dict[str, Any]:
    """P(defeat) of these voters as plain data, with each one's odds of falling on its own.

    Raises `endosec.quantify.errors.ParameterError` for a ``p`` outside [0, 1].
    """
    if not profiles:
        return {"executors": [], "n": 0, "k": 0, "p": p, "p_defeat": None,
                "single": {}, "contributions": []}
    ordered = tuple(sorted(profiles, key=lambda pr: pr.name))
    need = votes_to_defeat(strategy, len(ordered), k)
    result = _analyse(ordered, need, p)
    return {
        "executors": list(result.executors), "n": len(ordered), "k": need, "p": p,
        "strategy": strategy, "p_defeat": result.p_defeat, "method": result.method,
        "single": {pr.name: _alone(pr, p) for pr in ordered},
        "contributions": [c.as_dict() for c in result.contributions[:top]],
    }
