"""Suggestions use the software a real agent reports: `secondline-agent` lists the machine's
installed packages (dpkg-query or rpm) in `sl:facts`, the broker stores them, and for a
ticket linked to that machine the article whose commands act on an installed package comes
before one that matches the ticket's words a little better; on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import ssl
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.test_agents_processes import agent_cli, agents_json, cli, start_agent
from tests.support.broker import BrokerProcess, secondline
from tests.support.console import PASSWORD

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

TEXT = "ssh connection refused when connecting to the server"


async def _ticket(data_dir: Path, token: str, title: str) -> str:
    made = await cli(
        data_dir, "--token", token, "ticket", "create", "--title", title, "--customer", "acme",
        "--requester", "Anna Schmidt", "--description", TEXT,
    )  # fmt: skip
    assert made.code == 0, made.err
    return made.out.strip()


async def test_articles_acting_on_installed_packages_are_suggested_first(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    data_dir = broker.data_dir
    assert (await cli(data_dir, "customer", "add", "acme")).code == 0
    added = secondline(
        "user", "add", "max", "--role", "level2", "--customer", "acme", "--password-stdin",
        data_dir=data_dir, stdin=PASSWORD + "\n",
    )  # fmt: skip
    assert added.code == 0, added.err
    staff = json.loads(secondline("user", "token", "max", "--json", data_dir=data_dir).out)
    token = str(staff["token"])
    created = await cli(
        data_dir, "token", "create", "--customer", "acme", "--consent", "unattended"
    )
    assert created.code == 0, created.err

    state = tmp_path / "web01"
    enrolled = await agent_cli(state, "enroll", broker.url, created.out.strip(), "--name", "web01")
    assert enrolled.code == 0, enrolled.err
    agent_id = json.loads((state / "state.json").read_text())["agent_id"]
    agent = await start_agent(state)
    try:
        await broker.wait_for_line(
            rb"agent %s facts stored: [1-9][0-9]* packages" % agent_id.encode()
        )
        facts = (await agents_json(data_dir))["web01"]["facts"]
        assert isinstance(facts, dict)
        installed = facts["packages"]
        assert isinstance(installed, list)
        # The tests run the real OpenSSH client, so its package is installed here.
        ssh = next(p for p in ("openssh-client", "openssh-clients", "openssh") if p in installed)

        tls = ssl.create_default_context(cafile=str(data_dir / "keys" / "tls.crt"))
        headers = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession(base_url=broker.url, headers=headers) as http:

            async def call(method: str, path: str, body: object = None) -> dict[str, object]:
                async with http.request(method, f"/api/v1{path}", json=body, ssl=tls) as r:
                    data = await r.json()
                    assert r.status in (200, 201), data
                    assert isinstance(data, dict)
                    return data

            refs = []
            for body in (
                {
                    "title": "SSH connection refused when connecting to the server",
                    "problem": "ssh says connection refused when connecting to the server.",
                    "solution": "Start the daemon of the remote access tool again.",
                    "commands": [{"command": "systemctl restart remote-access-tool"}],
                },
                {
                    "title": "Connection refused by ssh",
                    "problem": "The ssh client stops with connection refused.",
                    "solution": "Reinstall the SSH client; its configuration was broken.",
                    "commands": [{"command": f"apt-get install --reinstall {ssh}"}],
                },
            ):
                article = await call("POST", "/kb/articles", body)
                await call("POST", f"/kb/articles/{article['id']}/publish")
                refs.append(article["ref"])
            by_words, by_software = refs

            plain = await _ticket(data_dir, token, "SSH connection refused")
            on_web01 = await _ticket(data_dir, token, "SSH connection refused")
            linked = await cli(data_dir, "--token", token, "ticket", "link", on_web01, "web01")
            assert linked.code == 0, linked.err
            order = {}
            for ticket in (plain, on_web01):
                sugg = await call("GET", f"/kb/suggestions?ticket={ticket}")
                articles = sugg["articles"]
                assert isinstance(articles, list)
                order[ticket] = [a["ref"] for a in articles]
        assert order[plain][:2] == [by_words, by_software]
        assert order[on_web01][:2] == [by_software, by_words]
    finally:
        await agent.stop()
