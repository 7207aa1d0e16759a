"""The agent's SSH server offers the tunnel's algorithms and little else: every choice the
broker makes on a tunnel is among them (else handshakes would fail or fall back), and the
long default lists that the broker would keep per tunnel are gone."""

from __future__ import annotations

import asyncssh

from agent.ssh_server import tunnel_algorithms
from broker.agents.tunnel_ssh import (
    TUNNEL_ENCRYPTION_ALGS,
    TUNNEL_KEX_ALGS,
    TUNNEL_MAC_ALGS,
)


def _names(value: object) -> set[str]:
    assert isinstance(value, list)
    return {str(name) for name in value}


def test_every_algorithm_the_broker_chooses_is_offered_by_the_agent() -> None:
    offered = tunnel_algorithms()
    supported = {alg.decode() for alg in asyncssh.kex.get_kex_algs()}
    assert {a for a in TUNNEL_KEX_ALGS if a in supported} <= _names(offered["kex_algs"])
    assert set(TUNNEL_ENCRYPTION_ALGS) <= _names(offered["encryption_algs"])
    assert set(TUNNEL_MAC_ALGS) <= _names(offered["mac_algs"])
    assert offered["signature_algs"] == ["ssh-ed25519"]
    assert offered["compression_algs"] is None


def test_the_agent_offers_short_lists() -> None:
    """asyncssh's defaults are dozens of names each (GSS, DH groups, CBC, SHA-1 MACs)."""
    offered = tunnel_algorithms()
    for key in ("kex_algs", "encryption_algs", "mac_algs"):
        algs = offered[key]
        assert isinstance(algs, list)
        assert 1 <= len(algs) <= 3
        assert not any("cbc" in a or "gss" in a or "sha1" in a for a in algs)
