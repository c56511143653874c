"""Fixtures shared by several test files: executors launched by the test, control stores."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from endosec.cluster.embedded import EmbeddedStore
from endosec.cluster.store import ControlStore, open_store
from endosec.runtime.process import ProcessExecutor
from tests.etcd_cluster import EtcdCluster


@pytest.fixture
async def executors() -> AsyncIterator[list[ProcessExecutor]]:
    made: list[ProcessExecutor] = []
    yield made
    for executor in made:
        await executor.stop()


@pytest.fixture(params=["embedded", "etcd"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ControlStore]:
    """A control store of each kind: embedded, and a one-member etcd of the test's own."""
    cluster = EtcdCluster(tmp_path / "etcd", members=1) if request.param == "etcd" else None
    opened: ControlStore = EmbeddedStore(tmp_path / "control.json") if cluster is None \
        else open_store(cluster.url, tmp_path)
    try:
        yield opened
    finally:
        await opened.close()
        if cluster is not None:
            cluster.stop()
