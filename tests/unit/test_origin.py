"""The Origin check of browser WebSocket upgrades."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.config import BrokerConfig, own_urls
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


def test_any_of_our_own_urls_is_allowed() -> None:
    """With several own URLs (a cluster node: the public one and its own address) each one's
    origin passes, and nothing else does."""
    node = "https://node3.example:9443"
    assert origin_allowed("https://node3.example:9443", PUBLIC, node)
    assert origin_allowed("https://broker.example:8443", PUBLIC, node)
    assert not origin_allowed("https://node3.example:8443", PUBLIC, node)
    assert not origin_allowed("https://node4.example:9443", PUBLIC, node)
    assert not origin_allowed("https://node3.example:9443")


def test_a_cluster_node_serves_at_its_own_address_too(tmp_path: Path) -> None:
    """A single broker's pages come from its public URL only; a cluster node's also from its
    own address (its peer URL), where staff reach it past the load balancer."""
    single = BrokerConfig(data_dir=tmp_path, public_url=PUBLIC)
    assert own_urls(single) == (PUBLIC,)
    node = BrokerConfig(
        data_dir=tmp_path,
        public_url=PUBLIC,
        node="n3",
        cluster_nats_url="nats://127.0.0.1:4222",
        cluster_peer_url="https://node3.example:9443/",
    )
    assert own_urls(node) == (PUBLIC, "https://node3.example:9443")
