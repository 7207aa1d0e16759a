"""The session note is written in the customer's language: a real broker, a real agent, the
real OpenSSH client; `secondline customer set acme --language de` switches it."""

from __future__ import annotations

import json

import pytest

from tests.support.site import Site, new_ticket, ok, sessions_of, start_agent, wait_note

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]


async def test_note_follows_the_customers_language(site: Site) -> None:
    """English by default; after `customer set --language de` the next note is German, and
    the customer shows its language."""
    await start_agent(site, "web01", "unattended")
    site.ticket = new_ticket(site, "web01")
    shown = json.loads(ok(site.admin("customer", "show", "acme", "--json")))
    assert shown["language"] == "en"

    mark = len(site.broker.output)
    assert (await site.ssh(site.ticket, "echo note-in-english")).code == 0
    sid = str(sessions_of(site, site.ticket)[0]["id"])
    english = str((await wait_note(site, site.ticket, sid, mark))["text"])
    assert english.startswith(f"Remote session {sid} on web01")
    assert "Commands run:" in english

    changed = json.loads(ok(site.admin("customer", "set", "acme", "--language", "de", "--json")))
    assert changed["language"] == "de"
    mark = len(site.broker.output)
    assert (await site.ssh(site.ticket, "echo note-auf-deutsch; exit 3")).code == 3
    sid = str(sessions_of(site, site.ticket)[0]["id"])
    german = str((await wait_note(site, site.ticket, sid, mark))["text"])
    assert german.startswith(f"Fernsitzung {sid} auf web01"), german
    assert "Ausgeführte Befehle:" in german
    assert "echo note-auf-deutsch; exit 3" in german
    assert "Exit-Status 3" in german
    assert "Remote session" not in german
