"""The DNS executors' health probe; the DNS request path itself is the native data plane's.

The gateway asks executors over UDP and, for answers that do not fit, over TCP; the probe
asks over TCP, which every executor must serve for those.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype

from endosec.config import parse_dns_question
from endosec.runtime.base import HealthProbe

__all__ = ["dns_health_probe"]

_LENGTH = struct.Struct("!H")


def dns_health_probe(question: str) -> HealthProbe:
    """A probe asking ``"NAME TYPE"`` over TCP: healthy on an authoritative NOERROR answer."""
    name, rdtype = parse_dns_question(question)

    async def probe(host: str, port: int) -> bool:
        query = dns.message.make_query(name, dns.rdatatype.from_text(rdtype), flags=0)
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            return False
        try:
            wire = query.to_wire()
            writer.write(_LENGTH.pack(len(wire)) + wire)
            await writer.drain()
            (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
            reply = dns.message.from_wire(await reader.readexactly(length))
        except Exception:  # a half-started server may answer anything; it is not healthy
            return False
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        return (reply.id == query.id and reply.rcode() == dns.rcode.NOERROR
                and bool(reply.flags & dns.flags.AA) and bool(reply.answer))

    return probe
