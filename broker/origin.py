"""Cross-site WebSocket hijacking defence: a browser's upgrade must come from our own page.

Compared exactly against the origins of our own URLs (the configured public URL and, on a
cluster node, the node's own address); a missing, ``null`` or look-alike Origin is refused.
A cookie alone is never enough."""

from __future__ import annotations

from urllib.parse import urlsplit


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    default = {"https": 443, "http": 80}.get(parts.scheme)
    port = parts.port
    suffix = f":{port}" if port is not None and port != default else ""
    return f"{parts.scheme}://{host}{suffix}"


def origin_allowed(origin_header: str | None, *own_urls: str) -> bool:
    """Whether ``origin_header`` is exactly the origin of one of ``own_urls``."""
    if not origin_header or origin_header == "null" or len(origin_header) > 300:
        return False
    try:
        origin = origin_of(origin_header)
        return origin_header.isascii() and any(origin == origin_of(url) for url in own_urls)
    except ValueError:
        return False
