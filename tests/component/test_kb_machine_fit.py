"""Suggestions use the ticket's machine: the same printer words on a Windows machine's ticket
put the Windows article first, on a Debian machine's ticket the CUPS article."""

from __future__ import annotations

import pytest

from tests.component.test_kb_api import DEBIAN, seed_ticket, staff
from tests.support.api import Api

pytestmark = pytest.mark.postgres

WINDOWS: dict[str, object] = {
    "hostname": "pc-042",
    "os": "Windows",
    "os_version": "11 Pro 23H2",
    "kernel": "10.0.22631",
    "arch": "AMD64",
    "users": [],
}
CUPS = {
    "title": "Printer not printing: print jobs stuck in the queue",
    "problem": "The printer does not print; print jobs stay stuck in the queue.",
    "solution": "Reinstall cups-filters and restart CUPS.",
    "commands": [
        {"command": "lpstat -t", "exit_status": 0},
        {"command": "systemctl restart cups", "exit_status": 0},
    ],
}
SPOOLER = {
    "title": "Jobs stay in the spooler",
    "problem": "Documents sent to the printer never come out.",
    "solution": "Restart the Print Spooler service and empty the spool folder.",
    "commands": [
        {"command": "net stop spooler", "exit_status": 0},
        {"command": "net start spooler", "exit_status": 0},
    ],
    "os": ["Windows 11"],
}


async def test_suggestions_put_articles_for_the_tickets_os_first(api: Api) -> None:
    """The CUPS article matches the words best, but a Windows machine gets the Windows one
    first (the CUPS one stays in the list, after it); a Debian machine keeps CUPS first."""
    tokens = await staff(api)
    refs = []
    for body in (CUPS, SPOOLER):
        _, made = await api.call("POST", "/kb/articles", body, token=tokens["l2"], expect=201)
        assert isinstance(made, dict)
        await api.call("POST", f"/kb/articles/{made['id']}/publish", token=tokens["l2"], expect=200)
        refs.append(made["ref"])
    cups, spooler = refs
    text = "printer not printing, print jobs stuck in the queue"

    plain = await seed_ticket(api, "acme", "Printer not printing", text)
    on_windows = await seed_ticket(api, "acme", "Printer not printing", text, facts=WINDOWS)
    on_debian = await seed_ticket(api, "acme", "Printer not printing", text, facts=DEBIAN)
    order = {}
    for ticket in (plain, on_windows, on_debian):
        _, sugg = await api.call(
            "GET", f"/kb/suggestions?ticket={ticket}", token=tokens["l1"], expect=200
        )
        assert isinstance(sugg, dict)
        order[ticket] = [a["ref"] for a in sugg["articles"]]
    assert order[plain] == [cups, spooler]  # words alone: CUPS ranks first
    assert order[on_windows] == [spooler, cups]
    assert order[on_debian] == [cups, spooler]
