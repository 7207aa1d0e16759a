"""Telling every broker node's live sessions that their ticket is gone over there.

Only one node sees a ticket deleted or merged in its external system: the one whose sync
read it first, or that took the inbound webhook. That node tells its own live sessions on
the ticket at once and publishes a :class:`broker.cluster.messages.TicketNotice` on the
cluster bus; every other node tells its own. A single node's in-process bus hands the
notice back to its sender, which skips it (it told its sessions already). The bus being
away (NATS down) costs only the other nodes' notice: it is logged, and the ticket is closed
in the database all the same.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from broker.cluster.bus import Bus, BusUnavailable, Message, Subscription
from broker.cluster.messages import NOTICE_MAX, BadMessage, TicketNotice
from broker.rules import sanitize_display_text

log = logging.getLogger(__name__)

# Tells this node's live sessions on a ticket: (our ticket number, what to tell them).
Tell = Callable[[int, str], None]


class GoneNotices:
    """One node's part: tell its own sessions, tell the others, hear the others."""

    def __init__(self, bus: Bus, subject: str, node: str, tell: Tell) -> None:
        self.bus = bus
        self.subject = subject
        self.node = node
        self.tell = tell
        self._sub: Subscription | None = None

    async def start(self) -> None:
        self._sub = await self.bus.subscribe(self.subject, self._heard)

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    async def gone(self, ticket_id: int, message: str) -> None:
        """A ``mirror.GoneHook``: this node's sessions now, the other nodes' by the bus."""
        self.tell(ticket_id, message)
        notice = TicketNotice(ticket_id, message[:NOTICE_MAX], self.node)
        try:
            await self.bus.publish(self.subject, notice.serialize())
        except BusUnavailable:
            log.warning(
                "the cluster bus is away: sessions on T-%d on other nodes are not told that %s",
                ticket_id,
                message,
            )

    async def _heard(self, message: Message) -> None:
        try:
            notice = TicketNotice.parse(message.data)
        except BadMessage as exc:
            log.warning("dropped a ticket notice: %s", exc)
            return
        if notice.origin == self.node:
            return  # sent by this node, which told its sessions already
        # From another node of ours, but through a bus others may share: cleaned like any
        # text shown beside a terminal.
        self.tell(notice.ticket_id, sanitize_display_text(notice.message, NOTICE_MAX))
