"""What broker nodes tell each other: the bus interface and its in-process implementation.

A single node runs on :class:`InProcessBus` (no NATS, nothing leaves the process); a
cluster node runs on :class:`broker.cluster.nats_bus.NatsBus`. Both speak NATS subjects
(dot-separated tokens, ``*`` matches one token, ``>`` the rest), so the code above them is
the same on one node and on many.

Errors (all :class:`ClusterError`, a :class:`broker.errors.BrokerError`):

ClusterError
├── BusUnavailable      the bus is not connected (NATS down): try again when it returns
├── NoResponder         nobody listens on the subject (the node named is not running)
└── NodeNameTaken       another running node has this node's name
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, Protocol

from broker.errors import BrokerError

log = logging.getLogger(__name__)

#: Every subject of ours starts with this, so a NATS shared with other systems stays apart.
PREFIX: Final = "secondline"


class ClusterError(BrokerError):
    code = "cluster_error"
    http_status = 503


class BusUnavailable(ClusterError):
    code = "bus_unavailable"


class NoResponder(ClusterError):
    code = "node_unreachable"


class NodeNameTaken(ClusterError):
    code = "node_name_taken"


@dataclass(frozen=True, slots=True)
class Message:
    subject: str
    data: bytes
    reply: str = ""  # where a request wants its answer; "" for a plain publish


Handler = Callable[[Message], Awaitable[None]]


class Subscription(Protocol):
    async def unsubscribe(self) -> None: ...


class Bus(Protocol):
    """Publish/subscribe and request/reply between nodes."""

    @property
    def connected(self) -> bool: ...

    async def publish(self, subject: str, data: bytes) -> None:
        """Send to every subscriber; raises BusUnavailable when not connected."""

    async def subscribe(self, subject: str, handler: Handler) -> Subscription:
        """Call ``handler`` for every message on ``subject`` (wildcards allowed)."""

    async def request(self, subject: str, data: bytes, wait: float) -> bytes:
        """One answer from one responder; NoResponder when nobody listens, TimeoutError
        when nobody answered within ``wait`` seconds."""

    async def gather(self, subject: str, data: bytes, wait: float) -> list[bytes]:
        """Every answer that arrives within ``wait`` seconds (from every node listening)."""

    def on_reconnect(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Call ``callback`` each time the bus comes back after an outage."""

    async def close(self) -> None: ...


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS matching (pure): ``*`` is one token, a trailing ``>`` one or more."""
    want, got = pattern.split("."), subject.split(".")
    for i, part in enumerate(want):
        if part == ">":
            return len(got) > i
        if i >= len(got) or (part != "*" and part != got[i]):
            return False
    return len(want) == len(got)


def valid_subject(subject: str) -> bool:
    """A subject we may publish to: non-empty tokens of printable ASCII without spaces or
    wildcards (a node name or id from outside must not widen a subject)."""
    tokens = subject.split(".")
    return all(
        t and t not in ("*", ">") and all(c.isascii() and c.isprintable() and c != " " for c in t)
        for t in tokens
    )


class _LocalSubscription:
    def __init__(self, bus: InProcessBus, pattern: str, handler: Handler) -> None:
        self._bus, self.pattern, self.handler = bus, pattern, handler

    async def unsubscribe(self) -> None:
        self._bus._subs.discard(self)


class InProcessBus:
    """The bus of a single node: handlers run as tasks of this process, in order of
    subscription; nothing is queued beyond the tasks themselves."""

    def __init__(self) -> None:
        self._subs: set[_LocalSubscription] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._inbox = 0

    @property
    def connected(self) -> bool:
        return True

    def _deliver(self, message: Message) -> int:
        count = 0
        for sub in list(self._subs):
            if subject_matches(sub.pattern, message.subject):
                task = asyncio.get_running_loop().create_task(self._run(sub.handler, message))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                count += 1
        return count

    @staticmethod
    async def _run(handler: Handler, message: Message) -> None:
        try:
            await handler(message)
        except Exception:  # a handler's boundary: one bad message does not stop the bus
            log.exception("bus handler for %s failed", message.subject)

    async def publish(self, subject: str, data: bytes) -> None:
        self._deliver(Message(subject, data))

    async def subscribe(self, subject: str, handler: Handler) -> Subscription:
        sub = _LocalSubscription(self, subject, handler)
        self._subs.add(sub)
        return sub

    async def request(self, subject: str, data: bytes, wait: float) -> bytes:
        answers = await self._ask(subject, data, wait, first=True)
        return answers[0]

    async def gather(self, subject: str, data: bytes, wait: float) -> list[bytes]:
        with contextlib.suppress(NoResponder):
            return await self._ask(subject, data, wait, first=False)
        return []

    async def _ask(self, subject: str, data: bytes, wait: float, *, first: bool) -> list[bytes]:
        self._inbox += 1
        inbox = f"_INBOX.local.{self._inbox}"
        answers: list[bytes] = []
        got = asyncio.Event()

        async def collect(message: Message) -> None:
            answers.append(message.data)
            got.set()

        sub = await self.subscribe(inbox, collect)
        try:
            if not self._deliver(Message(subject, data, inbox)):
                raise NoResponder(f"nobody listens on {subject}")
            if first:
                async with asyncio.timeout(wait):
                    await got.wait()
            else:
                await asyncio.sleep(wait)  # gathering: every answer within the window
        finally:
            await sub.unsubscribe()
        return answers

    def on_reconnect(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Never called: an in-process bus does not go away."""

    async def close(self) -> None:
        self._subs.clear()
        for task in list(self._tasks):
            task.cancel()
