"""The Origin check of browser WebSocket upgrades."""

from __future__ import annotations

import pytest

from broker.origin import origin_allowed

PUBLIC = "https://broker.example:8443"


@pytest.mark.parametrize(
    "origin",
    [
        None,
        "",
        "null",
        "https://evil.example",
        "https://broker.example",
        "https://broker.example:8444",
        "http://broker.example:8443",
        "https://broker.example.evil.example:8443",
        "https://br\u043eker.example:8443",  # Cyrillic o, a look-alike host
        "https://broker.example:8443@evil.example",
        "https://[::1",
        "x" * 400,
    ],
)
def test_foreign_origins_are_refused(origin: str | None) -> None:
    """Missing, null, other hosts, ports, schemes and look-alikes are refused."""
    assert not origin_allowed(origin, PUBLIC)


def test_own_origin_is_allowed() -> None:
    """The public URL's own origin passes, case-insensitively in the host."""
    assert origin_allowed("https://broker.example:8443", PUBLIC)
    assert origin_allowed("https://BROKER.example:8443", PUBLIC)
    assert origin_allowed("https://broker.example", "https://broker.example:443")
