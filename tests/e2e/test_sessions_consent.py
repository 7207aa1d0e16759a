"""Consent for every person who enters a session on an attended machine, and the recorded
reason of sessions ended by revoking their agent or disabling their owner: a real
`secondline serve`, a really enrolled `secondline-agent run` answered through its own CLI,
the real OpenSSH client for the owner, and console terminals (the broker's WebSocket) for
joiners and observers."""

from __future__ import annotations

import asyncio
import json
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from broker.config import load_config
from tests.support.site import (
    WAIT,
    Site,
    Terminal,
    agent_cli,
    new_ticket,
    ok,
    read_stderr_until,
    session_ids,
    sessions_of,
    start_agent,
    stop_agent,
    wait_note,
)

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]


@dataclass
class Console:
    """A console terminal of one staff member, as the browser sees it."""

    ws: aiohttp.ClientWebSocketResponse
    out: bytearray = field(default_factory=bytearray)
    controls: list[dict[str, Any]] = field(default_factory=list)

    def states(self) -> list[str]:
        return [c["state"] for c in self.controls if c["type"] == "state"]

    async def read_until_state(self, state: str) -> dict[str, Any]:
        """Read until the broker reports ``state``; that report."""
        async with asyncio.timeout(WAIT):
            while state not in self.states():
                msg = await self.ws.receive()
                if msg.type == aiohttp.WSMsgType.BINARY:
                    self.out += msg.data
                elif msg.type == aiohttp.WSMsgType.TEXT:
                    self.controls.append(json.loads(msg.data))
                else:
                    raise AssertionError(f"closed ({self.ws.close_code}): {self.controls}")
        return next(c for c in self.controls if c.get("state") == state)

    async def read_to_close(self) -> None:
        async with asyncio.timeout(WAIT):
            async for msg in self.ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    self.controls.append(json.loads(msg.data))


class Staff:
    """HTTPS and console access of one staff member to the site's broker."""

    def __init__(self, site: Site, http: aiohttp.ClientSession, name: str, role: str) -> None:
        ok(site.admin("user", "add", name, "--role", role, "--customer", "acme"))
        self.name = name
        self.token = ok(site.admin("user", "token", name))
        self._site = site
        self._http = http
        self._tls = ssl.create_default_context(cafile=str(load_config(site.data_dir).tls_cert_path))

    async def console(self, mode: str, session: str) -> Console:
        """Mint a terminal ticket and open the console terminal on ``session``."""
        body = {"ticket_id": self._site.ticket, "mode": mode, "session": session}
        async with self._http.post(
            self._site.broker.url + "/api/v1/sessions/terminal-tickets",
            json=body,
            headers={"Authorization": f"Bearer {self.token}"},
            ssl=self._tls,
        ) as resp:
            minted = await resp.json()
            assert resp.status == 201, minted
        ws = await self._http.ws_connect(
            self._site.broker.url.replace("https://", "wss://") + "/console/ws/terminal",
            headers={"Origin": self._site.broker.url, "Authorization": f"Bearer {self.token}"},
            ssl=self._tls,
        )
        await ws.send_str(json.dumps({"ticket": minted["ticket"]}))
        return Console(ws)


def pending(state: Path) -> list[tuple[str, str]]:
    """Who waits for the end user's approval: (staff, role) pairs."""
    listed = json.loads(ok(agent_cli(state, "sessions", "--json")))
    return sorted((p["staff"], p["role"]) for p in listed["pending"])


async def wait_pending(state: Path, expected: list[tuple[str, str]]) -> None:
    """Until the agent lists exactly ``expected`` as waiting (each check is a CLI run)."""
    async with asyncio.timeout(WAIT):
        while (now := pending(state)) != expected:
            await asyncio.to_thread(lambda: None)  # one CLI run per loop turn, no sleep
    assert now == expected


async def open_approved(site: Site, state: Path) -> tuple[Terminal, str]:
    """bob's interactive OpenSSH session, approved by the end user; its id."""
    term = await site.interactive(site.ticket)
    told = await read_stderr_until(term.proc, b"waiting for the end user's approval on web01")
    sid = session_ids(told.decode())[0]
    assert ok(agent_cli(state, "approve", sid)).endswith("approved")
    term.type("echo owner-$((1+1))\n")
    await term.expect(b"owner-2")
    return term, sid


def audit_consent(site: Site, sid: str) -> list[tuple[str, str, str]]:
    events = json.loads(
        ok(site.admin("audit", "list", "--action", "session.consent", "--limit", "100", "--json"))
    )
    return sorted(
        (e["details"]["staff"], e["details"]["role"], e["details"]["decision"])
        for e in events
        if e["target"] == sid
    )


async def test_every_joiner_and_observer_waits_for_the_end_user(site: Site) -> None:
    """After the owner's approval, an observer and a joiner each wait for their own: a
    retry shares the waiting request, two waiting people must be named, a denial refuses
    with the reason, an approval lets the joiner type, and a denial after the approval cuts
    the joiner off at once (the owner's withdrawal ends the session). Every decision is a
    transcript marker and an audit event."""
    state = await start_agent(site, "web01", "attended")
    site.ticket = new_ticket(site, "web01")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT)) as http:
        tina = Staff(site, http, "tina", "level1")
        carol = Staff(site, http, "carol", "level3")
        term, sid = await open_approved(site, state)

        watcher = await tina.console("observe", sid)
        await watcher.read_until_state("waiting_consent")
        await wait_pending(state, [("tina", "observer")])
        retry = await tina.console("observe", sid)
        await retry.read_until_state("waiting_consent")
        joiner = await carol.console("join", sid)
        await joiner.read_until_state("waiting_consent")
        # The retry shares tina's request: one question each for tina and carol.
        await wait_pending(state, [("carol", "participant"), ("tina", "observer")])
        listed = ok(agent_cli(state, "sessions"))
        assert "tina (level 1, observer)" in listed
        assert "carol (level 3, participant)" in listed
        unnamed = agent_cli(state, "approve", sid)
        assert unnamed.code != 0
        assert "carol (participant), tina (observer)" in unnamed.err

        ok(agent_cli(state, "deny", sid, "tina"))
        for refused in (watcher, retry):
            await refused.read_to_close()
            ended = refused.controls[-1]
            assert ended["state"] == "ended"
            assert ended.get("code") == "consent_denied", ended
            assert f"the end user denied your request to observe session {sid}" in ended["reason"]
            assert "running" not in refused.states()
            assert b"owner-2" not in refused.out

        assert ok(agent_cli(state, "approve", sid, "carol")).endswith(
            "carol (participant) approved"
        )
        await joiner.read_until_state("running")
        await joiner.ws.send_bytes(b"echo carol-$((6*7))\n")
        await term.expect(b"carol-42")

        withdrawn = ok(agent_cli(state, "deny", sid, "carol"))
        assert withdrawn == f"session {sid}: carol (participant) withdrawn"
        await joiner.read_to_close()
        assert "withdrew their approval" in json.dumps(joiner.controls)
        term.type("echo still-$((2+3))\n")
        await term.expect(b"still-5")

        ok(agent_cli(state, "deny", sid, "bob"))
        code, _ = await term.finish()
        assert code != 0
    row = next(s for s in sessions_of(site, site.ticket) if s["id"] == sid)
    assert row["state"] == "ended"
    detail = json.loads(ok(site.admin("session", "show", sid, "--json")))
    assert detail["end_reason"] == "consent withdrawn"
    assert detail["consent"] == "approved"  # the owner's decision, not a joiner's
    rendered = site.tmp / "consent.txt"
    ok(site.admin("transcript", "export", sid, "--format", "txt", "-o", str(rendered)))
    text = rendered.read_text()
    for marker in (
        "consent approved by",
        "consent denied for tina (observer) by",
        "consent approved for carol (participant) by",
        "consent withdrawn for carol (participant) by",
        "consent withdrawn for bob (owner) by",
    ):
        assert marker in text, marker
    assert audit_consent(site, sid) == [
        ("bob", "owner", "approved"),
        ("bob", "owner", "withdrawn"),
        ("carol", "participant", "approved"),
        ("carol", "participant", "withdrawn"),
        ("tina", "observer", "denied"),
        ("tina", "observer", "denied"),
    ]


async def live_shell(site: Site) -> tuple[Terminal, str]:
    """bob's interactive OpenSSH session on the unattended agent; its id."""
    term = await site.interactive(site.ticket)
    term.type('echo "in-$SL_SESSION"\n')
    await term.expect_in_order(b"in-s-", b"\n")
    return term, session_ids(term.out.decode(errors="replace"))[0]


async def ended_as(site: Site, term: Terminal, sid: str, mark: int) -> tuple[str, str]:
    """Wait for the session's end to be recorded: its end reason and its note's text."""
    code, err = await term.finish()
    assert code != 0, err
    note = await wait_note(site, site.ticket, sid, mark)
    detail = json.loads(ok(site.admin("session", "show", sid, "--json")))
    return str(detail["end_reason"]), str(note["text"])


async def test_revoked_agent_and_disabled_owner_are_the_recorded_end(site: Site) -> None:
    """A session ended by `agent revoke` is recorded as "revoked", not "agent
    disconnected"; one whose owner is disabled as "account disabled"."""
    await start_agent(site, "web01", "unattended")
    site.ticket = new_ticket(site, "web01")
    term, sid = await live_shell(site)
    mark = len(site.broker.output)
    ok(site.admin("agent", "revoke", "web01"))
    reason, note = await ended_as(site, term, sid, mark)
    assert reason == "revoked"
    assert "revoked" in note
    await stop_agent(site)  # the revoked agent would knock forever

    await start_agent(site, "web02", "unattended")
    site.ticket = new_ticket(site, "web02")
    term, sid = await live_shell(site)
    mark = len(site.broker.output)
    ok(site.admin("user", "disable", "bob"))
    reason, note = await ended_as(site, term, sid, mark)
    assert reason == "account disabled"
    assert "account disabled" in note
