"""One runtime driver per configured executor: the only place that knows the three kinds."""

from __future__ import annotations

from pathlib import Path

from endosec.config import ExecutorConfig
from endosec.runtime.base import HealthProbe, RuntimeDriver
from endosec.runtime.opens import Opens
from endosec.runtime.process import ExecutorSpec, ProcessExecutor
from endosec.runtime.remote import AgentExecutor
from endosec.runtime.segment import segment_possible
from endosec.runtime.unmanaged import UrlExecutor

__all__ = ["driver_for", "local_spec", "segmented"]


def local_spec(e: ExecutorConfig, *, scratch_root: Path, health_probe: HealthProbe | None,
               segmented: bool = False) -> ExecutorSpec:
    """How to run an ``argv`` executor here (the gateway's own, or an agent's)."""
    assert e.argv is not None
    return ExecutorSpec(
        name=e.name, argv=list(e.argv), cwd=e.cwd, env=dict(e.env), host=e.host, port=e.port,
        health_path=e.health.path, health_probe=health_probe, health_timeout=e.health.timeout,
        start_timeout=e.health.start_timeout, template=e.template, scratch_root=scratch_root,
        sandbox=e.sandbox, segmented=segmented)


def segmented(e: ExecutorConfig) -> bool:
    """Whether the gateway runs ``e`` in a network segment of its own: always when asked
    (``isolated``: its start fails, saying why, where that cannot be done), when possible with
    ``auto`` (root, ``ip`` and ``nft``, an IPv4 loopback ``host``)."""
    if e.network == "auto":
        return segment_possible() is None and e.host.startswith("127.")
    return e.network == "isolated"


def driver_for(e: ExecutorConfig, *, scratch_root: Path, health_probe: HealthProbe | None,
               opens: Opens | None = None) -> RuntimeDriver:
    if e.agent is not None:
        return AgentExecutor(e.name, e.agent, start_timeout=e.health.start_timeout,
                             health_timeout=e.health.timeout)
    if e.url is not None:
        return UrlExecutor(e.name, e.url, cleanse=e.cleanse, health_path=e.health.path,
                           health_probe=health_probe, health_timeout=e.health.timeout,
                           start_timeout=e.health.start_timeout)
    return ProcessExecutor(local_spec(e, scratch_root=scratch_root, health_probe=health_probe,
                                      segmented=segmented(e)), opens)
