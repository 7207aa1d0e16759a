"""The hub's end of its agent channel: opening it, reading it only while nobody holds it
(and why it is held), and the agent's output taking its turn with every other session's
(:mod:`broker.sessions.output_turns`) before the hub records and fans it out.

:class:`~broker.sessions.hub_agent.AgentChannel` (asyncssh's side) reports here. The hub
(:class:`~broker.sessions.hub.LiveSession`) is the turns' lane for its session; it holds the
channel for the turns and for its own reasons (the core's pacing, a full recorder), and
writes participants' input to it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import TYPE_CHECKING

import asyncssh

from broker.sessions.channel_windows import ChannelWindows
from broker.sessions.hub_agent import AgentChannel, window_of
from broker.sessions.output_turns import OutputTurns

if TYPE_CHECKING:
    from broker.sessions.hub import LiveSession


class HubChannel:
    """One session's agent channel, as its hub sees it."""

    def __init__(self, live: LiveSession, turns: OutputTurns) -> None:
        self._live = live
        # The agent's output takes its turn with every other session's (small first).
        self.turns = turns
        # The window the agent may send ahead: a share of the tunnel's and the broker's.
        self.windows = ChannelWindows.for_loop()
        self.chan: asyncssh.SSHClientChannel[bytes] | None = None
        # Why the agent channel is not read: the core's pacing or recorder ("core"), or
        # its line at the turns being full ("turns").
        self.held: set[str] = set()
        self._resuming = False
        self.opened = False
        self.closed = asyncio.Event()

    async def open(self, conn: asyncssh.SSHClientConnection, env: Mapping[str, str]) -> None:
        """Open the shell or command on the agent; raises asyncssh errors when refused."""
        facts = self._live.facts
        files = self._live.files
        channel_env: dict[bytes | str, bytes | str] = dict(env.items())
        if files is not None:
            window = files.window
        else:
            window = self.windows.join(self, conn, window_of(conn))
        try:
            await conn.create_session(
                lambda: AgentChannel(self),
                facts.command if facts.kind == "exec" else None,
                subsystem="sftp" if facts.kind == "sftp" else None,
                env=channel_env,
                term_type=facts.term,
                term_size=(facts.cols, facts.rows) if facts.term else None,
                request_pty=facts.term is not None,
                encoding=None,
                window=window,
            )
        except BaseException:
            self.windows.leave(self)
            raise
        self.opened = True

    def close(self) -> None:
        """The session ends: close the channel (or, never made, count it closed)."""
        if self.chan is not None:
            with contextlib.suppress(OSError, asyncssh.Error):
                self.chan.close()
        else:
            self.windows.leave(self)
            self.closed.set()

    # AgentChannel: what asyncssh reports.

    def channel_made(self, chan: asyncssh.SSHClientChannel[bytes]) -> None:
        self.chan = chan
        self.windows.made(self, chan)
        if self.held:
            chan.pause_reading()
        # Not running: ended (killed) while the channel was being opened. (The core stops
        # running only when the hub's end() is called.)
        if not self._live.running:
            with contextlib.suppress(OSError, asyncssh.Error):
                chan.close()

    def pause_input(self, paused: bool) -> None:
        self._live.pause_input(paused)

    def agent_data(self, data: bytes, stderr: bool) -> None:
        """A chunk from the agent's channel: handled now, or when its turn comes."""
        if self._live.running:
            self.turns.offer(self._live, data, stderr)

    def agent_exit(self, status: int | None, signal: str | None, message: str) -> None:
        self._live.agent.exited(status, signal, message)

    def agent_closed(self, exc: Exception | None) -> None:
        """The channel closed: the session ends, if it had not already."""
        self.windows.leave(self)
        self.closed.set()
        live = self._live
        if live.running:
            reason, code, message = live.agent.end_of_channel(exc)
            live.end(reason, code=code, message=message)

    def deliver_waiting(self) -> None:
        """Hand the hub, now, what waits in the session's line for its turn."""
        self.turns.flush(self._live)

    def hold_for(self, why: str, held: bool) -> None:
        """Read the agent channel only while nobody holds it.

        A channel resumed hands over everything asyncssh held for it, at once and from
        inside ``resume_reading``; a hold asked for meanwhile is applied only once that
        returned. asyncssh grants the agent a whole window again at the first chunk it
        hands over, counting what it still holds as taken: paused halfway, it would keep
        granting a window per resume and hold ever more (88 MB in 8 s with 50 streams)."""
        before = bool(self.held)
        if held:
            self.held.add(why)
        else:
            self.held.discard(why)
        chan = self.chan
        if chan is None or self._resuming or before == bool(self.held):
            return
        if held:
            chan.pause_reading()
            return
        self._resuming = True
        try:
            chan.resume_reading()
        finally:
            self._resuming = False
        if self.held:
            chan.pause_reading()
