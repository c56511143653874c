"""The control-state store on etcd (v3 API, through the asyncio client ``aetcd``).

One gRPC channel over every endpoint given (gRPC's ``ipv4:``/``ipv6:`` address list with its
default pick-first balancing): when the member in use dies, the next call that fails is tried
again on the next member, within the timeout, so a boundary rides out the loss of any minority
of etcd members.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aetcd
import aetcd.exceptions

from endosec.cluster.store import Health, Item, StoreError

__all__ = ["EtcdStore"]

T = TypeVar("T")


def _resolved(endpoints: tuple[tuple[str, int], ...]) -> tuple[tuple[str, int], ...]:
    """Every endpoint as an IP address (a name is looked up once, here): gRPC's address-list
    target takes only addresses, all of one family."""
    out = []
    for host, port in endpoints:
        try:
            address = str(ipaddress.ip_address(host))
        except ValueError:
            try:
                found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError as exc:
                raise StoreError(f"etcd endpoint {host}:{port}: {exc}") from exc
            ipv4 = [a for a in found if a[0] == socket.AF_INET]  # localhost: 127.0.0.1
            address = str((ipv4 or found)[0][4][0])
        out.append((address, port))
    if len({":" in host for host, _ in out}) > 1:
        raise StoreError("etcd endpoints: give addresses of one family (all IPv4 or all IPv6)")
    return tuple(out)


def _target(endpoints: tuple[tuple[str, int], ...]) -> tuple[str, int]:
    """aetcd dials ``f"{host}:{port}"``: a host of ``ipv4:A:P,B:P,C`` and the last port
    make gRPC's multi-address target ``ipv4:A:P,B:P,C:P``."""
    family = "ipv6" if ":" in endpoints[0][0] else "ipv4"
    spelled = [f"[{h}]" if ":" in h else h for h, _ in endpoints]
    head = [f"{h}:{p}" for h, (_, p) in zip(spelled[:-1], endpoints[:-1], strict=True)]
    return f"{family}:{','.join([*head, spelled[-1]])}", endpoints[-1][1]


async def _status(host: str, port: int) -> Any:
    """One member's own status, asked on a connection of its own (None: no answer)."""
    one = aetcd.Client(host=host, port=port, timeout=1)
    try:
        return await asyncio.wait_for(one.status(), 1.5)
    except (aetcd.exceptions.ClientError, TimeoutError, ValueError):
        return None
    finally:
        await one.close()


class EtcdStore:
    """A `ControlStore` on an etcd cluster."""

    def __init__(self, endpoints: tuple[tuple[str, int], ...], *, timeout: float = 2.0) -> None:
        if not endpoints:
            raise ValueError("etcd: at least one endpoint")
        self.url = "etcd://" + ",".join(f"{h}:{p}" for h, p in endpoints)
        self.endpoints = _resolved(endpoints)
        self.timeout = timeout
        host, port = _target(self.endpoints)
        # A member back after a cut is dialled again within a second, not gRPC's default 2 min.
        self._client = aetcd.Client(host=host, port=port, timeout=max(1, round(timeout)),
                                    options={"grpc.max_reconnect_backoff_ms": 1000})

    async def _call(self, what: str, action: Callable[[], Awaitable[T]]) -> T:
        """``action``, tried again on a failed connection until the timeout has passed."""
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                return await asyncio.wait_for(action(), max(0.1, deadline - time.monotonic()))
            except (aetcd.exceptions.ClientError, TimeoutError) as exc:
                if time.monotonic() + 0.1 >= deadline:
                    raise StoreError(f"{self.url}: {what} failed: "
                                     f"{type(exc).__name__}: {exc}") from exc
                await asyncio.sleep(0.1)

    async def get(self, key: bytes) -> Item | None:
        found = await self._call("get", lambda: self._client.get(key))
        return None if found is None else Item(key, found.value, found.mod_revision,
                                               found.lease)

    async def prefix(self, prefix: bytes) -> list[Item]:
        found = await self._call("get", lambda: self._client.get_prefix(prefix))
        return [Item(kv.key, kv.value, kv.mod_revision, kv.lease) for kv in found]

    async def put(self, key: bytes, value: bytes, *, lease: int | None = None) -> int:
        done = await self._call("put", lambda: self._client.put(key, value, lease=lease))
        return int(done.header.revision)

    async def create(self, key: bytes, value: bytes, *, lease: int | None = None) -> Item:
        ops = self._client.transactions

        async def transaction() -> tuple[bool, list[Any]]:
            result: tuple[bool, list[Any]] = await self._client.transaction(
                compare=[ops.create(key) == 0], success=[ops.put(key, value, lease=lease)],
                failure=[ops.get(key)])
            return result

        created, responses = await self._call("create", transaction)
        if created:
            return Item(key, value, int(responses[0].response_put.header.revision), lease or 0)
        existing, meta = responses[0][0]
        return Item(key, existing, int(meta.mod_revision), int(meta.lease))

    async def delete(self, key: bytes) -> None:
        await self._call("delete", lambda: self._client.delete(key))

    async def grant(self, ttl: int) -> int:
        lease = await self._call("lease", lambda: self._client.lease(ttl))
        return int(lease.id)

    async def refresh(self, lease: int) -> bool:
        reply = await self._call("refresh", lambda: self._client.refresh_lease(lease))
        return reply is not None and int(reply.TTL) > 0

    async def revoke(self, lease: int) -> None:
        try:
            await self._call("revoke", lambda: self._client.revoke_lease(lease))
        except StoreError as exc:
            if "not found" not in str(exc):
                raise

    async def health(self) -> Health:
        """Each member asked on its own, so one that is down shows as not answering."""
        async def members() -> list[Any]:
            return [m async for m in self._client.members()]

        listed = await self._call("member list", members)
        answers: list[tuple[str, str, bool]] = []
        leader: str | None = None
        index = 0
        for member in sorted(listed, key=lambda m: m.name):
            url = member.client_urls[0] if member.client_urls else ""
            host, _, port = url.removeprefix("http://").rpartition(":")
            status = await _status(host.strip("[]"), int(port or 0))
            answers.append((member.name, url, status is not None))
            if status is not None:
                leader = status.leader.name if status.leader is not None else leader
                index = max(index, int(status.raft_index))
        return Health("etcd", tuple(answers), leader, index)

    async def reachable(self) -> bool:
        statuses = await asyncio.gather(*(_status(h, p) for h, p in self.endpoints))
        return any(status is not None for status in statuses)

    async def close(self) -> None:
        await self._client.close()
