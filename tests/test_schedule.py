"""A boundary that moves: every shipped configuration rotates at random times that nobody can
predict, and a seed (for tests and simulation) is the only way to repeat a schedule."""

from __future__ import annotations

import asyncio
import statistics
from pathlib import Path

import pytest

from endosec.config import Config, load_config
from endosec.core.controller_events import RequestWakeup
from endosec.gateway.engine import MimicGateway
from endosec.observe.events import EventLog
from tests.gatewayctl import DEMO, ROOT

SHIPPED = [DEMO, ROOT / "examples/web/endosec.yaml", ROOT / "examples/dns/endosec.yaml"]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.parent.name)
def test_no_shipped_configuration_fixes_a_seed_and_all_rotate(path: Path) -> None:
    config = load_config(path)
    assert config.scheduler.seed is None
    assert config.controller.rotate_every is not None and config.controller.cleanse_on_rotate


def _first_rotation(config: Config, tmp: Path) -> float:
    gw = MimicGateway(config, scratch_root=tmp, events=EventLog())
    [wakeup] = [a for a in gw.controller.start(0.0) if isinstance(a, RequestWakeup)]
    return wakeup.at


def test_two_runs_rotate_at_different_times_unless_seeded(tmp_path: Path) -> None:
    config = load_config(DEMO)
    served = [_first_rotation(config, tmp_path) for _ in range(5)]
    assert len(set(served)) == 5, served
    seeded = config.model_copy(update={"scheduler": config.scheduler.model_copy(
        update={"seed": 7})})
    assert _first_rotation(seeded, tmp_path) == _first_rotation(seeded, tmp_path)


def test_rotation_times_are_memoryless_with_the_configured_mean(tmp_path: Path) -> None:
    """Exponential waits: the mean is rotate_every and the spread equals the mean (a fixed
    period would have none, and would tell an attacker when the next one comes)."""
    config = load_config(DEMO)
    every = config.controller.rotate_every
    assert every is not None
    waits = [_first_rotation(config, tmp_path) for _ in range(3000)]
    mean, spread = statistics.fmean(waits), statistics.pstdev(waits)
    assert abs(mean / every - 1) < 0.1, mean
    assert abs(spread / mean - 1) < 0.1, spread
    # Memoryless: having waited the mean already, the rest is still the mean on average.
    beyond = [w - every for w in waits if w > every]
    assert abs(statistics.fmean(beyond) / every - 1) < 0.2


def test_the_host_load_waits_for_the_controller_to_start(tmp_path: Path) -> None:
    """The pump samples the CPU while executors are still starting: the controller hears the
    load only once it runs (a load told before would fail the pump)."""
    gw = MimicGateway(load_config(DEMO), scratch_root=tmp_path, events=EventLog())
    told: list[object] = []
    gw._dispatch = told.append  # type: ignore[method-assign,assignment]
    gw.load(0.9)  # not started: nothing told, nothing raised
    assert told == []
    gw.controller.start(0.0)
    asyncio.run(_load(gw, 0.9))
    assert [type(e).__name__ for e in told] == ["LoadChanged"]


async def _load(gw: MimicGateway, utilisation: float) -> None:
    gw.load(utilisation)  # on a running loop: the gateway's clock
