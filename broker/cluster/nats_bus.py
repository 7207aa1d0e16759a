"""The bus of a cluster node: NATS core (no JetStream), through nats-py.

NATS keeps nothing for a node that is away, and that is what we want: presence is
re-announced and control messages are re-asked by whoever needs them, so a message is
either delivered now or refused now (:class:`BusUnavailable`), never queued for later. The
client reconnects forever; its subscriptions come back by themselves, and the callbacks
given to :meth:`NatsBus.on_reconnect` re-announce what the other nodes forgot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Final

import nats
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription

from broker.cluster.bus import BusUnavailable, Handler, Message, NoResponder, Subscription

log = logging.getLogger(__name__)

#: How long a node waits for NATS at start before it refuses to start.
CONNECT_WAIT_S: Final = 5.0
#: Between reconnection attempts while NATS is away.
RECONNECT_WAIT_S: Final = 1


class _NatsSubscription:
    def __init__(self, sub: NatsSubscription) -> None:
        self._sub = sub

    async def unsubscribe(self) -> None:
        with contextlib.suppress(nats.errors.Error):
            await self._sub.unsubscribe()


class NatsBus:
    """One NATS connection per node; see :class:`broker.cluster.bus.Bus`."""

    def __init__(self, client: Client) -> None:
        self._nc = client
        self._reconnected: list[Callable[[], Awaitable[None]]] = []

    @classmethod
    async def connect(cls, url: str, *, name: str, wait: float = CONNECT_WAIT_S) -> NatsBus:
        """Connect to ``url``; BusUnavailable (saying where) when NATS does not answer."""
        client = Client()
        bus = cls(client)

        async def quiet_error(exc: Exception) -> None:
            # Every failed reconnection lands here; the outage is logged once, below.
            log.debug("NATS: %s", type(exc).__name__)

        async def disconnected() -> None:
            log.warning("NATS connection lost; reconnecting (presence pauses meanwhile)")

        async def reconnected() -> None:
            log.warning("NATS connection back; announcing this node again")
            for callback in list(bus._reconnected):
                try:
                    await callback()
                except Exception:  # a callback's boundary: the others still run
                    log.exception("re-announcing after NATS came back failed")

        try:
            async with asyncio.timeout(wait):
                await client.connect(
                    servers=[url],
                    name=f"secondline-{name}",
                    error_cb=quiet_error,
                    disconnected_cb=disconnected,
                    reconnected_cb=reconnected,
                    connect_timeout=2,
                    reconnect_time_wait=RECONNECT_WAIT_S,
                    max_reconnect_attempts=-1,
                )
        except (TimeoutError, OSError, nats.errors.Error) as exc:
            with contextlib.suppress(Exception):
                await client.close()
            raise BusUnavailable(
                f"cannot reach NATS at {url} ({type(exc).__name__}); start nats-server or fix "
                "cluster.nats_url in secondline.toml"
            ) from None
        return bus

    @property
    def connected(self) -> bool:
        return bool(self._nc.is_connected)

    def _check(self) -> None:
        if not self._nc.is_connected:
            raise BusUnavailable(
                "this node has lost its NATS connection: cross-node actions wait until it "
                "returns; try again shortly"
            )

    async def publish(self, subject: str, data: bytes) -> None:
        self._check()
        try:
            await self._nc.publish(subject, data)
        except nats.errors.Error as exc:
            raise BusUnavailable(f"NATS refused a message ({type(exc).__name__})") from None

    async def subscribe(self, subject: str, handler: Handler) -> Subscription:
        async def deliver(msg: Msg) -> None:
            try:
                await handler(Message(msg.subject, msg.data, msg.reply or ""))
            except Exception:  # a handler's boundary: one bad message does not stop the rest
                log.exception("bus handler for %s failed", msg.subject)

        return _NatsSubscription(await self._nc.subscribe(subject, cb=deliver))

    async def request(self, subject: str, data: bytes, wait: float) -> bytes:
        self._check()
        try:
            msg = await self._nc.request(subject, data, timeout=wait)
        except nats.errors.NoRespondersError:
            raise NoResponder(f"nobody listens on {subject}") from None
        except nats.errors.TimeoutError:
            raise TimeoutError(f"no answer on {subject} within {wait:g} s") from None
        return bytes(msg.data)

    async def gather(self, subject: str, data: bytes, wait: float) -> list[bytes]:
        self._check()
        inbox = self._nc.new_inbox()
        answers: list[bytes] = []

        async def collect(msg: Msg) -> None:
            answers.append(bytes(msg.data))

        sub = await self._nc.subscribe(inbox, cb=collect)
        try:
            await self._nc.publish(subject, data, reply=inbox)
            await asyncio.sleep(wait)  # gathering: every answer within the window
        finally:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
        return answers

    def on_reconnect(self, callback: Callable[[], Awaitable[None]]) -> None:
        self._reconnected.append(callback)

    async def close(self) -> None:
        with contextlib.suppress(nats.errors.Error, OSError):
            await self._nc.close()
