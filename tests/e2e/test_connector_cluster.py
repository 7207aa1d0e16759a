"""A ticket merged in its external system while a session on it runs on another node of a
cluster: two real nodes on PostgreSQL and NATS, a really enrolled agent, the real OpenSSH
client, and the signed webhook as the ticket system (it needs no server of its own). The
merge is told to node n2; the session on n1 is told all the same."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import pytest

from broker.config import load_config
from tests.e2e.test_cluster_nodes import site_on
from tests.support.broker import secondline
from tests.support.cluster import Cluster
from tests.support.site import ok, sessions_of, start_agent, ticket_json
from tests.support.webhook import post_event, signature, ticket_event

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]


async def test_a_merge_seen_by_one_node_is_told_to_the_session_on_another(
    cluster: Cluster, tmp_path: Path
) -> None:
    """The system's ticket.merged reaches n2; bob's shell on the ticket runs on n1: n1's
    session is told (beside the terminal and in the transcript) and the ticket is closed."""
    site = await site_on(cluster, tmp_path)
    n1, n2 = cluster.nodes["n1"], cluster.nodes["n2"]
    secret = secrets.token_hex(32)
    secret_file = tmp_path / "webhook.secret"
    secret_file.write_text(secret + "\n")
    secret_file.chmod(0o600)
    # Outbound events go nowhere (a closed port): this test is about the inbound merge.
    ok(
        secondline(
            "connector", "add", "wh-acme", "--kind", "webhook", "--url", "http://127.0.0.1:9",
            "--credential-file", str(secret_file), "--customer", "acme", data_dir=n1.data_dir,
        )
    )  # fmt: skip
    cafile = load_config(n1.data_dir, env={}).tls_cert_path

    async def send(node_url: str, body: bytes) -> dict[str, object]:
        url = f"{node_url}/webhooks/wh-acme"
        status, answer = await asyncio.to_thread(
            post_event, url, cafile, body, signature(secret, body)
        )
        assert status == 200, answer
        return answer

    created = await send(
        n1.url,
        ticket_event(
            "evt-1", "ticket.created", id="7100", title="Printer jammed", queue="Level 1",
            status="open", requester="eve@example.com",
        ),
    )  # fmt: skip
    ref = str(created["ticket"])
    await start_agent(site, "web01", "unattended")
    lena = ok(secondline("user", "token", "lena", data_dir=n1.data_dir))
    ok(secondline("--token", lena, "ticket", "link", ref, "web01", data_dir=n1.data_dir))
    await send(
        n1.url,
        ticket_event(
            "evt-2", "ticket.updated", id="7100", title="Printer jammed", queue="Level 2",
            status="open",
        ),
    )  # fmt: skip

    term = await site.interactive("WH-7100")  # on n1, where the agent's tunnel is
    term.type("echo before-merge\n")
    await term.expect(b"before-merge")
    mark = len(n1.output)
    await send(n2.url, ticket_event("evt-3", "ticket.merged", id="7100", merged_into="7101"))
    await n1.wait_for_line(b"session .*: told that WH-7100 was merged into WH-7101", mark)
    term.type("exit 0\n")
    code, err = await term.finish()
    assert code == 0
    assert "WH-7100 was merged into WH-7101 in the ticket system" in err
    assert ticket_json(site, ref)["status"] == "closed"
    assert sessions_of(site, ref)
    if site.agent is not None:
        site.agent.kill()
        await site.agent.wait()
