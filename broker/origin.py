"""Cross-site WebSocket hijacking defence: a browser's upgrade must come from our own page.

Compared exactly against the configured public URL's origin; a missing, ``null`` or
look-alike Origin is refused. A cookie alone is never enough."""

from __future__ import annotations

from urllib.parse import urlsplit


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    default = {"https": 443, "http": 80}.get(parts.scheme)
    port = parts.port
    suffix = f":{port}" if port is not None and port != default else ""
    return f"{parts.scheme}://{host}{suffix}"


def origin_allowed(origin_header: str | None, public_url: str) -> bool:
    if not origin_header or origin_header == "null" or len(origin_header) > 300:
        return False
    try:
        return origin_of(origin_header) == origin_of(public_url) and origin_header.isascii()
    except ValueError:
        return False
