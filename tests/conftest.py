"""Fixtures shared by the tests that launch executors themselves."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from endosec.runtime.process import ProcessExecutor


@pytest.fixture
async def executors() -> AsyncIterator[list[ProcessExecutor]]:
    made: list[ProcessExecutor] = []
    yield made
    for executor in made:
        await executor.stop()
