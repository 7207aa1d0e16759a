"""`secondline session kill --reason`: the reason reaches everyone who needs it, with a
real broker, agent and OpenSSH client (the `site` fixture of tests/e2e/conftest.py)."""

from __future__ import annotations

import json

import pytest

from tests.support.site import Site, new_ticket, ok, sessions_of, start_agent, wait_note

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

REASON = "maintenance window: web01 reboots at 18:00"


async def test_kill_reason_reaches_participants_transcript_note_and_audit(site: Site) -> None:
    """An admin ends bob's live shell with a reason: bob's ssh shows it on stderr, the
    transcript holds a marker with it, the ticket's note names who ended it and why, and
    the audit record of the kill carries it; a reason with control characters is refused
    and the session goes on."""
    await start_agent(site, "web01", "unattended")
    site.ticket = new_ticket(site, "web01")
    term = await site.interactive(site.ticket)
    term.type("echo up-$((40+2))\n")
    await term.expect(b"up-42")
    sid = str(sessions_of(site, site.ticket)[0]["id"])

    refused = site.admin("session", "kill", sid, "--reason", "line one\nline two")
    assert refused.code == 1
    assert "--reason must be one line" in refused.err
    term.type("echo still-$((6*7))\n")
    await term.expect(b"still-42")

    mark = len(site.broker.output)
    assert ok(site.admin("session", "kill", sid, "--reason", REASON)).startswith(
        f"Session {sid} ended"
    )
    code, err = await term.finish()
    assert code == 255
    assert f"the session was ended by admin: {REASON}" in err

    note = await wait_note(site, site.ticket, sid, mark)
    assert f"Ended by:     admin: {REASON}" in str(note["text"])

    cast = site.tmp / "killed.cast"
    ok(site.admin("transcript", "export", sid, "--format", "cast", "-o", str(cast)))
    markers = [
        json.loads(line)[2]
        for line in cast.read_text().splitlines()[1:]
        if json.loads(line)[1] == "m"
    ]
    assert f"ended by admin: {REASON}" in markers

    audit = json.loads(ok(site.admin("audit", "list", "--action", "session.kill", "--json")))
    assert [(e["target"], e["details"].get("reason")) for e in audit] == [(sid, REASON)]
