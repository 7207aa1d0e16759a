"""A draft pre-filled from a ticket (pure)."""

from __future__ import annotations

from broker.kb.article import CommandEntry, check_content
from broker.kb.drafting import (
    MachineFacts,
    SessionCommands,
    TicketDigest,
    draft_from_ticket,
    successful_commands,
)

S1, S2 = "s-" + "a" * 22, "s-" + "b" * 22


def test_facts_keep_os_and_drop_the_rest() -> None:
    """OS, version, kernel and arch are read; hostnames, users and non-text values are not."""
    facts = MachineFacts.from_facts(
        {"hostname": "pc1", "os": "Windows\u202e 11", "os_version": 5, "kernel": "", "arch": "x64"}
    )
    assert facts == MachineFacts("Windows 11", "", "", "x64")
    assert facts.line() == "Windows 11 (x64)"
    assert MachineFacts("Debian", "12").line() == "Debian 12"


def test_successful_commands_once_each() -> None:
    """Only exit status 0 counts, each command line once, in session order."""
    sessions = (
        SessionCommands(
            S1, (CommandEntry("ls", 0), CommandEntry("bad", 2), CommandEntry("top", None))
        ),
        SessionCommands(S2, (CommandEntry(" ls ", 0), CommandEntry("fix", 0), CommandEntry("", 0))),
    )
    assert successful_commands(sessions) == (CommandEntry("ls", 0, S1), CommandEntry("fix", 0, S2))


def test_draft_from_ticket() -> None:
    """Title, description, reasons, solution, machines and commands fill the draft."""
    ticket = TicketDigest(
        id=1042,
        customer="acme",
        title="VPN drops",
        description="  It drops every hour.  ",
        status="resolved",
        solution="Raised the MTU.",
        escalation_reasons=("needs admin rights", " "),
        machines=(MachineFacts("Debian", "12", "6.1", "x86_64"),) * 2 + (MachineFacts(),),
        sessions=(SessionCommands(S1, (CommandEntry("ip link set mtu 1400 dev wg0", 0),)),),
    )
    c = draft_from_ticket(ticket)
    assert ticket.ref == "T-1042"
    assert ticket.solved
    assert c.title == "VPN drops"
    assert c.problem == "It drops every hour."
    assert c.cause.endswith("- needs admin rights")
    assert c.environment == "Debian 12 (kernel 6.1, x86_64)"
    assert c.os == ("Debian 12",)
    assert c.commands[0].session == S1
    assert c.solution == "Raised the MTU."
    assert check_content(c) == c


def test_draft_of_a_bare_ticket() -> None:
    """A ticket without title text, machines or sessions still gives a valid draft."""
    c = draft_from_ticket(TicketDigest(7, "acme", "\x00", "d" * 30_000, "open", ""))
    assert c.title == "Solution of T-7"
    assert c.cause == ""
    assert c.commands == ()
    assert len(c.problem) == 20_000
    assert c.problem.endswith("…")
    assert check_content(c).problem == c.problem


def test_secrets_in_every_field_are_scrubbed() -> None:
    """A password on a command line, in the description, the reasons or the solution comes
    out as the redaction marker (session rows from before the scrubber still hold them)."""
    r = "\u2039redacted\u203a"
    ticket = TicketDigest(
        id=9,
        customer="acme",
        title="DB login fails PGPASSWORD=Hunter2",
        description="I ran mysql -u root -pHunter2 shop and it failed.",
        status="resolved",
        solution="Use https://app:Hunter2@db.example.com now.",
        escalation_reasons=("token: Hunter2",),
        sessions=(SessionCommands(S1, (CommandEntry("mysql -u root -pHunter2 shop", 0),)),),
    )
    c = draft_from_ticket(ticket)
    assert "Hunter2" not in repr(c)
    assert c.commands[0].command == f"mysql -u root -p{r} shop"
    assert c.problem == f"I ran mysql -u root -p{r} shop and it failed."
    assert c.title == f"DB login fails PGPASSWORD={r}"
