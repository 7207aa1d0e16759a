"""Fixtures of the end-to-end tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.broker import BrokerProcess, secondline
from tests.support.site import Site, keygen, ok, stop_agent


@pytest.fixture
async def site(broker: BrokerProcess, tmp_path: Path) -> AsyncIterator[Site]:
    d = broker.data_dir
    key = keygen(tmp_path / "bob_ed25519")
    ok(secondline("customer", "add", "acme", data_dir=d))
    ok(secondline("user", "add", "lena", "--role", "level1", "--customer", "acme", data_dir=d))
    ok(
        secondline(
            "user", "add", "bob", "--role", "level2", "--customer", "acme",
            "--ssh-key", f"{key}.pub", data_dir=d,
        )
    )  # fmt: skip
    host_key = (d / "keys" / "ssh_host_ed25519.pub").read_text().split()
    s = Site(broker, tmp_path, key, tmp_path / "known_hosts")
    s.known_hosts.write_text(f"[127.0.0.1]:{s.ssh_port} {host_key[0]} {host_key[1]}\n")
    try:
        yield s
    finally:
        await stop_agent(s)
