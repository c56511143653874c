"""A port squatter: takes over an executor's freed listening port and relays every connection
to the executor's real server, so every answer stays right.

    python -m endosec.redteam.squat --listen HOST:PORT --to HOST:PORT --seconds S [--pidfile F]

The ``hand-over-port`` implant starts it in a session of its own, outside the executor's
process group: cleansing the group does not stop it, and sampling the group does not see it.
Only asking who holds the listening socket does. It binds next to the implant's own listener
(both with ``SO_REUSEPORT``; it tries for five seconds), writes its pid to ``--pidfile`` (then
the implant closes its listener), and exits after
``--seconds`` whatever happens: a drill never leaves it behind for long.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
from pathlib import Path

__all__ = ["main"]

_BIND_FOR = 5.0
_CHUNK = 1 << 16


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(OSError):
        writer.close()


async def _relay(to: tuple[str, int], client_r: asyncio.StreamReader,
                 client_w: asyncio.StreamWriter) -> None:
    try:
        server_r, server_w = await asyncio.open_connection(*to)
    except OSError:
        client_w.close()
        return
    await asyncio.gather(_pipe(client_r, server_w), _pipe(server_r, client_w))


async def _main(listen: tuple[str, int], to: tuple[str, int], seconds: float,
                pidfile: Path | None) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _BIND_FOR
    while True:
        try:
            server = await asyncio.start_server(lambda r, w: _relay(to, r, w), *listen,
                                                reuse_address=True, reuse_port=True)
            break
        except OSError:
            if loop.time() > deadline:
                return
            await asyncio.sleep(0.02)
    if pidfile is not None:
        pidfile.write_text(f"{os.getpid()}\n")
    async with server:
        await asyncio.sleep(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", type=_address, required=True)
    parser.add_argument("--to", type=_address, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--pidfile", type=Path, default=None)
    args = parser.parse_args()
    asyncio.run(_main(args.listen, args.to, args.seconds, args.pidfile))


if __name__ == "__main__":
    main()
