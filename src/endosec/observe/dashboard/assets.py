"""The dashboard's static files, looked up by name from a fixed list (no path is ever joined)."""

from __future__ import annotations

import functools
from importlib import resources

__all__ = ["ASSETS", "asset"]

ASSETS: dict[str, bytes] = {
    "index.html": b"text/html; charset=utf-8",
    "dashboard.js": b"text/javascript; charset=utf-8",
    "dashboard.css": b"text/css; charset=utf-8",
}


@functools.cache
def asset(name: str) -> tuple[bytes, bytes] | None:
    """``(body, content type)`` of a dashboard file, or None when ``name`` is not one of them."""
    content_type = ASSETS.get(name)
    if content_type is None:
        return None
    body = resources.files(__package__).joinpath(name).read_bytes()
    return body, content_type
