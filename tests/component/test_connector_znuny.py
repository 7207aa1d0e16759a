"""The Znuny connector against the Znuny stand-in (tests/support/znuny_standin.py) over a
loopback socket: sessions, Znuny's error structure, the change feed, notes found again in
the ticket history, rate limiting, refused logins and missing rights."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from broker.connectors.errors import ExternalDown, ExternalRefused, ExternalRejected
from broker.connectors.settings import default_levels
from broker.connectors.znuny import ZnunySystem
from broker.ports import NoteAttachment
from tests.support.znuny_standin import ZnunyStandIn

HOSTILE = "\x1b[31mred\u202e <script>alert(1)</script> ../../etc/passwd"


@pytest.fixture
async def znuny() -> AsyncIterator[ZnunyStandIn]:
    async with ZnunyStandIn() as standin:
        yield standin  # type: ignore[misc]


def connect(znuny: ZnunyStandIn, login: str = "", password: str = "") -> ZnunySystem:
    credential = f"{login or znuny.login}:{password or znuny.password}"
    return ZnunySystem(znuny.webservice, credential, default_levels("znuny"))


@pytest.fixture
async def system(znuny: ZnunyStandIn) -> AsyncIterator[ZnunySystem]:
    client = connect(znuny)
    try:
        yield client
    finally:
        await client.close()


async def test_check_logs_in_reads_a_ticket_and_its_history(
    znuny: ZnunyStandIn, system: ZnunySystem
) -> None:
    """Every check passes for an agent with rights on the level queues; a queue without
    tickets is reported with the caveat that Znuny cannot tell it from a missing one."""
    znuny.create_ticket("Raw", "first")
    health = await system.check()
    assert health.ok, health.checks
    texts = [c for c, _ in health.checks]
    assert "level 1 is queue 'Raw'" in texts
    assert any("level 3 is queue '3rd Level' (no ticket there yet" in c for c in texts)
    assert "the ticket history can be read (TicketHistoryGet)" in texts


async def test_a_wrong_password_fails_the_check_and_every_call(znuny: ZnunyStandIn) -> None:
    """SessionCreate.AuthFail is a refusal naming the agent, never the password."""
    wrong = connect(znuny, password="nope")
    try:
        health = await wrong.check()
        assert not health.ok
        assert "refused the login of agent 'secondline'" in health.summary()
        assert "nope" not in health.summary()
        with pytest.raises(ExternalRefused, match="credential file"):
            await wrong.changes("1970-01-01 00:00:00")
    finally:
        await wrong.close()


async def test_a_forgotten_session_is_made_again(znuny: ZnunyStandIn, system: ZnunySystem) -> None:
    """When Znuny no longer knows the session (expired, Znuny restarted) the connector
    logs in again once and the call succeeds."""
    number = znuny.create_ticket("Raw", "x")
    assert await system.ticket(number) is not None
    znuny.sessions.clear()
    assert await system.ticket(number) is not None
    assert [s.path for s in znuny.seen].count(
        "/otrs/nph-genericinterface.pl/Webservice/GenericTicketConnectorREST/Session"
    ) == 2


async def test_changes_follow_the_cursor_and_tickets_read_raw(
    znuny: ZnunyStandIn, system: ZnunySystem
) -> None:
    """The feed holds a ticket changed at or after the cursor; a ticket reads as Znuny
    holds it (the mirror cleans it), and one out of the agent's sight is gone."""
    cursor = await system.start_cursor()
    number = znuny.create_ticket("Raw", HOSTILE)
    changes = await system.changes(cursor)
    assert number in changes.external_ids
    znuny.move(number, "2nd Level")
    again = await system.changes(changes.cursor)
    assert number in again.external_ids
    remote = await system.ticket(number)
    assert remote is not None
    assert (remote.title, remote.place, remote.status, remote.state) == (
        HOSTILE, "2nd Level", "new", "new",
    )  # fmt: skip
    assert remote.custom_fields["Customer"] == "acme"
    assert remote.changed_by == f"agent #{znuny.agents['anna'].id}"
    ticket_id = znuny.by_number(number).id
    assert remote.url.endswith(f"/otrs/index.pl?Action=AgentTicketZoom;TicketID={ticket_id}")
    znuny.agents[znuny.login].ro.discard("2nd Level")
    assert await system.ticket(number) is None
    assert await system.ticket("2026120699999999") is None


async def test_a_note_is_found_again_in_the_history_of_a_huge_ticket(
    znuny: ZnunyStandIn, system: ZnunySystem
) -> None:
    """A ticket of 10,000 articles with hostile names and files: the note's key is looked
    for in the ticket history only; the note is added once as an internal note with both
    files; no article is ever read."""
    number = znuny.create_ticket("2nd Level", "huge")
    for i in range(10_000):
        files = [(f"{HOSTILE}{i}.bin", b"\0" * 1024)] if i % 1000 == 0 else []
        znuny.add_article(number, f"{HOSTILE} {i}", HOSTILE, files)
    key = "secondline-session-note:s-test"
    assert not await system.has_note(number, key)
    note_files = [
        NoteAttachment("s-test.cast", "application/x-asciicast", b'{"version": 2}\n'),
        NoteAttachment("s-test.txt", "text/plain", b"$ echo hi\nhi\n"),
    ]
    await system.add_note(
        number, key=key, subject="Secondline session note", text="t", attachments=note_files
    )
    assert await system.has_note(number, key)
    [note] = znuny.notes(number)
    assert key in note.subject
    assert {n: d for n, _, d in note.attachments} == {f.name: f.data for f in note_files}
    assert not [s for s in znuny.seen if "AllArticles" in s.query or "Attachments" in s.query]


async def test_429_from_a_proxy_is_waited_out(znuny: ZnunyStandIn, system: ZnunySystem) -> None:
    """A 429 with Retry-After: 1 is waited out; one asking for an hour is 'try later'."""
    number = znuny.create_ticket("Raw", "slow")
    znuny.rate_limited = 1
    assert await system.ticket(number) is not None
    assert znuny.after_429.is_set()
    znuny.rate_limited, znuny.retry_after = 1, "3600"
    with pytest.raises(ExternalDown, match="429, retry after 3600 s"):
        await system.ticket(number)


async def test_refusals_carry_znunys_error_code(znuny: ZnunyStandIn, system: ZnunySystem) -> None:
    """An unknown queue is TicketUpdate.InvalidParameter (rejected: retrying will not help);
    a queue the agent may read but not write is TicketUpdate.AccessDenied (refused: an
    admin must grant rw)."""
    number = znuny.create_ticket("Raw", "move me")
    with pytest.raises(ExternalRejected, match=r"TicketUpdate\.InvalidParameter"):
        await system.move(number, "Nowhere")
    znuny.agents[znuny.login].rw.discard("Raw")
    with pytest.raises(ExternalRefused, match=r"TicketUpdate\.AccessDenied"):
        await system.move(number, "2nd Level")


async def test_a_merged_ticket_names_the_ticket_it_was_merged_into(
    znuny: ZnunyStandIn, system: ZnunySystem
) -> None:
    """Znuny's Merged history line names the main ticket: the connector hands its number
    on, and notes for the merged ticket can go there."""
    number = znuny.create_ticket("Raw", "duplicate")
    main = znuny.create_ticket("Raw", "original")
    znuny.merge(number, main)
    remote = await system.ticket(number)
    assert remote is not None
    assert (remote.merged_into, remote.status) == (main, "closed")
    await system.add_note(main, key="k-1", subject="s", text="t", attachments=())
    assert await system.has_note(main, "k-1")
