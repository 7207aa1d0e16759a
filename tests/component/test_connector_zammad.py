"""The Zammad connector against the Zammad stand-in (tests/support/zammad_standin.py) over
a loopback socket: paging, the change feed, notes found again in the article list, rate
limiting, refused tokens and missing groups."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from broker.connectors.errors import ExternalDown, ExternalRejected
from broker.connectors.settings import default_levels
from broker.connectors.zammad import ZammadSystem
from broker.ports import NoteAttachment
from tests.support.zammad_standin import ZammadStandIn

HOSTILE = "\x1b[31mred\u202e <script>alert(1)</script> ../../etc/passwd"


@pytest.fixture
async def zammad() -> AsyncIterator[ZammadStandIn]:
    async with ZammadStandIn() as standin:
        yield standin  # type: ignore[misc]


@pytest.fixture
async def system(zammad: ZammadStandIn) -> AsyncIterator[ZammadSystem]:
    client = ZammadSystem(zammad.url, zammad.token, default_levels("zammad"))
    try:
        yield client
    finally:
        await client.close()


async def test_check_reports_every_level_group_and_the_search(
    zammad: ZammadStandIn, system: ZammadSystem
) -> None:
    """With the default map and a user with full access to all three groups every check
    passes; a group the user lacks is named with what to do."""
    health = await system.check()
    assert health.ok, health.checks
    assert "level 1 is group 'Users'" in [c for c, _ in health.checks]
    narrow = zammad.add_agent("narrow@example.com", ["Users", "2nd Level"])
    limited = ZammadSystem(zammad.url, narrow.token, default_levels("zammad"))
    try:
        health = await limited.check()
    finally:
        await limited.close()
    assert not health.ok
    assert "group '3rd Level' for level 3 is missing" in health.summary()


async def test_wrong_token_and_token_without_ticket_agent_fail_the_check(
    zammad: ZammadStandIn,
) -> None:
    """A refused token is one failing check saying to make a new token; a token without
    ticket.agent fails the search check."""
    wrong = ZammadSystem(zammad.url, "0" * 32, default_levels("zammad"))
    no_agent = zammad.add_agent("customer@example.com")
    no_agent.agent = False
    weak = ZammadSystem(zammad.url, no_agent.token, default_levels("zammad"))
    try:
        health = await wrong.check()
        assert [ok for _, ok in health.checks] == [False]
        assert "the token is refused" in health.summary()
        health = await weak.check()
        assert "tickets cannot be searched" in health.summary()
        assert "ticket.agent" in health.summary()
    finally:
        await wrong.close()
        await weak.close()


async def test_active_tickets_are_read_page_by_page(
    zammad: ZammadStandIn, system: ZammadSystem
) -> None:
    """250 open tickets in a level group come in three pages of 100; closed tickets and
    tickets of other groups are not asked for."""
    numbers = [zammad.create_ticket("Users", f"ticket {i}") for i in range(250)]
    zammad.by_number(numbers[0]).state = "closed"
    zammad.groups.append("Sales")
    zammad.agents[zammad.token].groups["Sales"] = ["full"]
    zammad.create_ticket("Sales", "not ours")
    found = await system.active_tickets()
    assert sorted(found) == sorted(numbers[1:])
    pages = [s.query for s in zammad.seen if s.path == "/api/v1/tickets/search"]
    assert len(pages) == 3
    assert all("per_page=100" in q for q in pages)


async def test_changes_follow_the_cursor_and_tickets_read_raw(
    zammad: ZammadStandIn, system: ZammadSystem
) -> None:
    """A ticket created and then moved after the cursor is in the feed; its hostile title
    comes as Zammad holds it (the mirror cleans it); its link opens the ticket in Zammad."""
    cursor = await system.start_cursor()
    number = zammad.create_ticket("Users", HOSTILE, organization="acme")
    changes = await system.changes(cursor)
    assert number in changes.external_ids
    assert changes.cursor >= cursor
    zammad.move(number, "2nd Level", by="anna@example.com")
    again = await system.changes(changes.cursor)
    assert number in again.external_ids
    remote = await system.ticket(number)
    assert remote is not None
    assert (remote.title, remote.place, remote.status) == (HOSTILE, "2nd Level", "new")
    assert remote.changed_by == "anna@example.com"
    assert remote.custom_fields["Customer"] == "acme"
    assert remote.url == f"{zammad.url}/#ticket/zoom/{zammad.by_number(number).id}"
    assert await system.ticket("99999") is None


async def test_a_note_is_found_again_in_a_huge_ticket_without_downloading_files(
    zammad: ZammadStandIn, system: ZammadSystem
) -> None:
    """A ticket of 10,000 articles, some with big hostile-named files: the note is looked
    for in the article list and added once as an internal note with both files; no
    attachment is ever downloaded."""
    number = zammad.create_ticket("2nd Level", "huge")
    for i in range(10_000):
        files = [(f"{HOSTILE}{i}.bin", b"\0" * 1024)] if i % 1000 == 0 else []
        zammad.add_article(number, f"{HOSTILE} {i}", HOSTILE * 3, files)
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
    [note] = zammad.notes(number)
    assert note.internal
    assert key in note.subject
    assert {n: d for _, n, _, d in note.attachments} == {f.name: f.data for f in note_files}
    assert not [s for s in zammad.seen if "ticket_attachment" in s.path]


async def test_429_is_waited_out_as_retry_after_says(
    zammad: ZammadStandIn, system: ZammadSystem
) -> None:
    """Two 429 answers with Retry-After: 1 are waited out and the call succeeds; a
    Retry-After longer than the connector waits is 'down, try later' at once."""
    number = zammad.create_ticket("Users", "slow")
    zammad.rate_limited = 2
    remote = await system.ticket(number)
    assert remote is not None
    assert [s.status for s in zammad.seen] == [429, 429, 200, 200]
    assert zammad.after_429.is_set()
    zammad.rate_limited, zammad.retry_after = 1, "3600"
    with pytest.raises(ExternalDown, match="429, retry after 3600 s"):
        await system.ticket(number)


async def test_changes_refused_by_zammad_are_rejections(
    zammad: ZammadStandIn, system: ZammadSystem
) -> None:
    """A move to a group Zammad does not have is refused with Zammad's own words."""
    number = zammad.create_ticket("Users", "move me")
    with pytest.raises(ExternalRejected, match="No lookup value found for 'group'"):
        await system.move(number, "Nowhere")


async def test_a_merged_ticket_names_the_ticket_it_went_into_from_its_links(
    zammad: ZammadStandIn, system: ZammadSystem
) -> None:
    """Merged in Zammad: the ticket reads as closed and merged into the target's number,
    learnt from its one `parent` link (no history or article is read); a target the
    token's user cannot see leaves the ticket closed and merged into nothing known."""
    number = zammad.create_ticket("2nd Level", "scanner offline")
    target = zammad.create_ticket("2nd Level", "scanners of the second floor")
    zammad.add_article(number, "mail", "it is offline")
    assert await system.ticket(number) is not None  # mirrored before the merge
    zammad.merge(number, target)
    zammad.seen.clear()
    remote = await system.ticket(number)
    assert remote is not None
    assert (remote.state, remote.status, remote.owner) == ("merged", "closed", None)
    assert remote.merged_into == target
    paths = [s.path for s in zammad.seen]
    assert paths == [f"/api/v1/tickets/{zammad.by_number(number).id}", "/api/v1/links"]
    # The note of a session on it goes to the target, found there again by its key.
    key = "secondline-session-note:s-merged"
    await system.add_note(
        target, key=key, subject="Secondline session note", text="t", attachments=()
    )
    assert await system.has_note(target, key)

    hidden = zammad.create_ticket("Users", "elsewhere")
    other = zammad.create_ticket("Users", "merged away")
    zammad.groups.append("Secret")
    zammad.move(hidden, "Secret")
    zammad.merge(other, hidden)
    remote = await system.ticket(other)
    assert remote is not None
    assert (remote.status, remote.merged_into) == ("closed", None)
