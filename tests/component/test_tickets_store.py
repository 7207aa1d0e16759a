"""The built-in store through the TicketSystem interface the session machinery uses, and its
guarded writes under concurrency; on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from broker.connectors.tickets import ConnectedTickets
from broker.ports import NoteAttachment, TicketSystem
from broker.rules import escalate
from broker.tickets import (
    TICKETS,
    NewTicket,
    TicketConflict,
    TicketInputError,
    TicketNotFound,
)
from tests.component.test_tickets_support import World, make_world
from tests.support.api import Api

pytestmark = pytest.mark.postgres


@pytest.fixture
async def world(api: Api) -> World:
    return await make_world(api)


def system(world: World) -> TicketSystem:
    return world.app[TICKETS]


async def test_tickets_key_holds_the_builtin_store(world: World) -> None:
    """app[TICKETS] is the built-in store (behind the connectors, which pass a ticket with
    no external original straight to it); get() answers TicketInfo or None."""
    tickets = system(world)
    assert isinstance(tickets, ConnectedTickets)
    assert tickets.store is world.store
    ref = await world.escalated()
    info = await tickets.get(int(ref[2:]))
    assert info is not None
    assert (info.ref, info.status, info.level, info.customer) == (ref, "new", 2, "acme")
    assert info.agent_ids == frozenset({world.agents["web01"]})
    assert info.created_by == "lena"
    assert info.view().ref == ref
    for missing in (999_999, 0, -1, 10**12):
        assert await tickets.get(missing) is None


async def test_assign_takes_only_a_free_ticket(world: World) -> None:
    """assign() takes an unassigned ticket, repeats harmlessly, and never steals one."""
    tickets = system(world)
    number = int((await world.escalated())[2:])
    await tickets.assign(number, "bob", actor="bob")
    await tickets.assign(number, "bob", actor="bob")
    with pytest.raises(TicketConflict) as taken:
        await tickets.assign(number, "carl", actor="carl")
    assert taken.value.code == "assigned_to_other"
    with pytest.raises(TicketInputError):
        await tickets.assign(number, "Bob; rm", actor="x")
    with pytest.raises(TicketNotFound):
        await tickets.assign(999_999, "bob", actor="bob")
    info = await tickets.get(number)
    assert info is not None
    assert info.assignee == "bob"
    await world.store.apply_action(info, "resolve", actor="bob", solution="done")
    with pytest.raises(TicketConflict) as closed:
        await tickets.assign(number, "carl", actor="carl")
    assert closed.value.code == "ticket_not_open"


async def test_guarded_take_has_exactly_one_winner(world: World) -> None:
    """Two takes judged on the same unassigned ticket: the conditional UPDATE lets one through."""
    number = int((await world.escalated())[2:])
    seen = await world.store.get(number)
    assert seen is not None
    assert seen.assignee is None
    results = await asyncio.gather(
        world.store.set_assignee(seen, "bob", actor="bob", action="ticket.take"),
        world.store.set_assignee(seen, "carl", actor="carl", action="ticket.take"),
        return_exceptions=True,
    )
    won = [r for r in results if not isinstance(r, BaseException)]
    lost = [r for r in results if isinstance(r, TicketConflict)]
    assert len(won) == 1, results
    assert len(lost) == 1, results
    assert lost[0].code == "already_taken"
    assert str(won[0].assignee) in lost[0].message
    now = await world.store.get(number)
    assert now is not None
    assert now.assignee == won[0].assignee
    with pytest.raises(TicketConflict) as stale:
        await world.store.change_level(
            seen, escalate(2, 3, "stale view"), actor="bob"
        )  # judged on the unassigned view, which no longer holds
    assert stale.value.code == "ticket_changed"


async def test_change_status_follows_the_table(world: World) -> None:
    """change_status() applies table actions and refuses the others with the table's code."""
    tickets = system(world)
    number = int((await world.escalated())[2:])
    await tickets.change_status(number, "open", actor="bob")
    with pytest.raises(TicketConflict) as again:
        await tickets.change_status(number, "open", actor="bob")
    assert again.value.code == "already_in_status"
    with pytest.raises(TicketConflict) as unknown:
        await tickets.change_status(number, "explode", actor="bob")
    assert unknown.value.code == "unknown_action"
    with pytest.raises(TicketInputError):
        await tickets.change_status(number, "resolve", actor="bob")
    await world.store.change_status(number, "resolve", actor="bob", solution="fixed")
    with pytest.raises(TicketNotFound):
        await tickets.change_status(999_999, "open", actor="bob")
    info = await tickets.get(number)
    assert info is not None
    assert info.status == "resolved"


async def test_add_note_is_idempotent_with_attachments(world: World) -> None:
    """A note sent twice with one key is stored once; its files land under the ticket's dir."""
    tickets = system(world)
    number = int((await world.escalated())[2:])
    cast = b'{"version": 2}\n[0.1, "o", "hi"]\n'
    files = [
        NoteAttachment("s-abc.cast", "application/x-asciicast", cast),
        NoteAttachment("s-abc.txt", "text/plain; charset=utf-8", b"hi\n"),
    ]
    for _ in range(2):
        await tickets.add_note(
            number,
            author="secondline",
            text="Session s-abc by bob on web01 ended (exit 0).",
            internal=True,
            attachments=files,
            idempotency_key="session:s-abc",
        )
    results = await asyncio.gather(
        *(
            tickets.add_note(
                number, author="secondline", text="race", internal=True, idempotency_key="k:race"
            )
            for _ in range(3)
        )
    )
    assert results == [None, None, None]
    detail = await world.store.detail(number)
    assert detail is not None
    assert [(n.text, n.attachments) for n in detail.notes] == [
        ("Session s-abc by bob on web01 ended (exit 0).", ("s-abc.cast", "s-abc.txt")),
        ("race", ()),
    ]
    by_name = {a.name: a for a in detail.attachments}
    assert by_name["s-abc.cast"].sha256 == hashlib.sha256(cast).hexdigest()
    assert by_name["s-abc.txt"].content_type == "text/plain"
    folder = world.services.config.attachments_dir / f"T-{number}"
    assert sorted(p.name for p in folder.iterdir()) == ["s-abc.cast", "s-abc.txt"]
    assert (folder / "s-abc.cast").read_bytes() == cast


async def test_add_note_writes_back_to_resolved_tickets_and_refuses_bad_input(
    world: World,
) -> None:
    """Write-back reaches resolved tickets; unknown tickets, bad names and sizes add nothing."""
    tickets = system(world)
    number = int((await world.escalated())[2:])
    await world.store.change_status(number, "resolve", actor="bob", solution="fixed")
    await tickets.add_note(number, author="secondline", text="late session", internal=True)
    with pytest.raises(TicketNotFound):
        await tickets.add_note(999_999, author="x", text="x", internal=True)
    limit = world.services.config.max_attachment_bytes
    bad = [
        ([NoteAttachment("../escape.cast", "text/plain", b"x")], "bad_attachment_name"),
        ([NoteAttachment("a\x00b.txt", "text/plain", b"x")], "bad_attachment_name"),
        ([NoteAttachment("big.bin", "x/y", b"x" * (limit + 1))], "attachment_too_large"),
    ]
    for attachments, code in bad:
        with pytest.raises(TicketInputError) as refused:
            await tickets.add_note(
                number, author="x", text="with file", internal=True, attachments=attachments
            )
        assert refused.value.code == code
    with pytest.raises(TicketInputError) as key:
        await tickets.add_note(number, author="x", text="x", internal=True, idempotency_key="a b")
    assert key.value.code == "bad_idempotency_key"
    detail = await world.store.detail(number)
    assert detail is not None
    assert [n.text for n in detail.notes] == ["late session"]
    root = world.services.config.attachments_dir
    assert not root.exists() or not any(p.is_file() for p in root.rglob("*"))


async def test_concurrent_creates_get_distinct_numbers(world: World) -> None:
    """Tickets created at the same moment get distinct numbers counting up from 1001."""
    made = await asyncio.gather(
        *(
            world.store.create(NewTicket(title=f"t{i}", customer="acme"), actor="lena")
            for i in range(6)
        )
    )
    assert sorted(info.id for info in made) == list(range(1001, 1007))
    with pytest.raises(TicketInputError) as unknown:
        await world.store.create(NewTicket(title="t", customer="nobody"), actor="lena")
    assert unknown.value.code == "unknown_customer"
