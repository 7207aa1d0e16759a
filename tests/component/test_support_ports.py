"""The suite's own harness: an in-process broker whose SSH port another worker took first
starts again on new ports instead of failing the test (tests/support/broker.py)."""

from __future__ import annotations

import socket
from pathlib import Path

from broker.app import create_app
from broker.config import load_config
from tests.support.broker import start_in_process


async def test_an_in_process_broker_whose_ssh_port_is_taken_starts_on_new_ports(
    data_dir: Path,
) -> None:
    before = load_config(data_dir, env={})
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", before.ssh_port))
        taken.listen()
        client = await start_in_process(data_dir, lambda: create_app(load_config(data_dir, env={})))
        after = load_config(data_dir, env={})
        assert after.ssh_port != before.ssh_port
        assert after.https_port != before.https_port
        assert after.public_url == f"https://127.0.0.1:{after.https_port}"
        try:
            response = await client.get("/healthz")
            assert response.status == 200
        finally:
            await client.close()
