"""Ten minutes of a ticket system being down, on a controlled clock: the connector outbox's
back-off (``broker.connectors.outbound``, the same ``retry_delay`` schedule as the session
outbox) keeps trying through the outage at the default settings, and the change waiting in
it arrives exactly once, within ``ticket_retry_max_seconds`` and one poll of the system's
return. The real app and database; only the external system (an outside edge) is a
stand-in here, down until the clock says it is back. No sleeps: the test moves the clock."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import itertools
import random
from collections.abc import Sequence
from pathlib import Path

import pytest

from broker.config import BrokerConfig
from broker.connectors.errors import ExternalDown
from broker.connectors.keys import CONNECTORS
from broker.connectors.mirror import Mirror
from broker.connectors.outbound import Outbound
from broker.connectors.remote import Changes, Health, RemoteTicket
from broker.ports import NoteAttachment
from broker.rules import LevelChange
from broker.services import SERVICES
from broker.tickets import TICKET_STORE
from tests.support.api import Api
from tests.support.console import add_customer

pytestmark = pytest.mark.postgres

DEFAULTS = BrokerConfig(data_dir=Path())
OUTAGE = dt.timedelta(minutes=10)
POLL = dt.timedelta(seconds=DEFAULTS.connector_poll_seconds)
# After the system is back the next try is at most one full back-off step away, and the
# sync task runs the outbox once per poll.
BOUND = dt.timedelta(seconds=DEFAULTS.ticket_retry_max_seconds) + POLL


class Clock:
    def __init__(self, start: dt.datetime) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now


class Longest(random.Random):
    """The jitter that makes every back-off step as long as it can be (the worst case)."""

    def random(self) -> float:
        return 0.999999


class DownUntil:
    """An external system that cannot be reached before ``back``; after that it takes notes
    and moves as RT does, and counts them."""

    def __init__(self, clock: Clock, back: dt.datetime) -> None:
        self.clock = clock
        self.back = back
        self.place = "Level 1"
        self.notes: list[str] = []
        self.moves: list[str] = []
        self.tries: list[dt.datetime] = []

    def _reach(self) -> None:
        if self.clock() < self.back:
            raise ExternalDown("Request Tracker at http://rt.invalid cannot be reached")

    async def has_note(self, external_id: str, key: str) -> bool:
        self.tries.append(self.clock())
        self._reach()
        return any(key in note for note in self.notes)

    async def add_note(
        self,
        external_id: str,
        *,
        key: str,
        subject: str,
        text: str,
        attachments: Sequence[NoteAttachment],
    ) -> None:
        self._reach()
        self.notes.append(f"{subject} [{key}]\n{text}")

    async def ticket(self, external_id: str) -> RemoteTicket | None:
        self._reach()
        return RemoteTicket(
            external_id=external_id,
            title="Printer jammed",
            place=self.place,
            status="open",
            state="open",
            owner=None,
            requester="eve@example.com",
            url=f"http://rt.invalid/Ticket/Display.html?id={external_id}",
        )

    async def move(self, external_id: str, place: str) -> None:
        self._reach()
        self.place = place
        self.moves.append(place)

    async def check(self) -> Health:
        raise NotImplementedError

    async def start_cursor(self) -> str:
        raise NotImplementedError

    async def active_tickets(self) -> Sequence[str]:
        raise NotImplementedError

    async def changes(self, cursor: str) -> Changes:
        raise NotImplementedError

    async def assign(self, external_id: str, owner: str) -> None:
        raise NotImplementedError

    def status_for(self, status: str) -> str:
        return status

    async def set_status(self, external_id: str, status: str) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        return None


async def test_ten_minutes_down_then_one_delivery_within_the_bound(api: Api) -> None:
    """An escalation made in Secondline while the system is down for ten minutes is tried
    again and again on the default back-off (capped at ticket_retry_max_seconds), then
    written once, note and move, within the bound after the system returns; further rounds
    send nothing."""
    await add_customer(api, "acme")
    # The app's own sync reads this closed port, fails, and so never sends the outbox rows:
    # the test's Outbound, on the test's clock, is the only sender.
    body = {
        "name": "rt-acme",
        "kind": "rt",
        "url": "http://127.0.0.1:9",
        "credential": "1-14-secret",
        "customer": "acme",
    }
    await api.call("POST", "/connectors", body, expect=201)
    app = api.client.app
    clock = Clock(dt.datetime.now(dt.UTC))
    services = dataclasses.replace(app[SERVICES], clock=clock)
    store = app[TICKET_STORE]
    record = await app[CONNECTORS].get("rt-acme")
    line = await Mirror(services, store).apply(
        record,
        "77",
        RemoteTicket(
            "77", "Printer jammed", "Level 1", "open", "open", None, "eve@example.com", ""
        ),
    )
    assert line is not None
    seen = await store.get(int(line.rsplit("T-", 1)[1]))
    assert seen is not None
    down_at = clock()
    system = DownUntil(clock, back=down_at + OUTAGE)
    await store.change_level(
        seen,
        LevelChange(kind="escalate", from_level=1, to_level=2, reason="needs the spooler"),
        actor="lena",
    )
    outbound = Outbound(services, rng=Longest())
    assert (outbound.first, outbound.cap) == (2.0, 300.0)  # the defaults are what is shown

    delivered_at: dt.datetime | None = None
    while clock() < system.back + 2 * BOUND:
        # Down: the sync marks the connector unhealthy and goes on the next round.
        with contextlib.suppress(ExternalDown):
            await outbound.deliver(record, system)
        if system.moves and delivered_at is None:
            delivered_at = clock()
        clock.now += POLL

    during = [t for t in system.tries if t < system.back]
    # Retried through the outage, ever less often, never more than the cap apart.
    # At the defaults and the longest jitter: tries 15, 30, 45, 60, 90, 135, 210 and 345 s
    # into the outage, then the one that arrives 15 s after the system is back.
    assert len(during) >= 6, during
    gaps = [b - a for a, b in itertools.pairwise(during)]
    assert max(gaps) <= dt.timedelta(seconds=300) + POLL, gaps
    assert delivered_at is not None
    assert delivered_at - system.back <= BOUND, delivered_at - system.back
    assert system.moves == ["Level 2"]
    assert len(system.notes) == 1
    assert "Escalated in Secondline by lena from level 1 to level 2" in system.notes[0]
