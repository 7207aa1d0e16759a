"""A live session's recording written to disk: the one flush task of a session.

The core (:class:`~broker.sessions.hub_core.HubCore`) asks for a flush (``Flush``);
:class:`RecordingFlush` has it run by the loop's :class:`~broker.transcript.DiskWriter`
(a writer thread: a slow disk stalls this session's flushes, never the loop), goes round
again while a flush's worth waits, is started anew by the manager's tick when it died (the
core still counts on it), and is awaited by the session's end before the transcript is
sealed. While a flush is under way the session goes on taking output, up to the core's
``recorder_high``: past it the core pauses the agent channel until the flush is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from typing import TYPE_CHECKING

from broker.sessions.hub_core import Flush
from broker.transcript import DiskWriter, RecorderError, Seal

if TYPE_CHECKING:
    from broker.sessions.hub import LiveSession


class RecordingFlush:
    """The flush task of one session's recorder."""

    def __init__(self, live: LiveSession) -> None:
        self._live = live
        self._task: asyncio.Task[None] | None = None
        self._again = False

    def start(self) -> None:
        """The core asked for a flush."""
        if self._task is not None and not self._task.done():
            # Asked from inside the running flush (resuming the agent delivers held
            # output at once): that flush goes round once more.
            self._again = True
            return
        # One task per session, kept and awaited at the end; when it dies, the next tick
        # starts another (the core still counts on it), so its failure is logged here.
        self._task = asyncio.get_running_loop().create_task(self._logged())

    def restart_lost(self) -> None:
        """Called by the hub's tick: a flush the core counts on that is not running is
        started again, so the agent is never left paused."""
        core = self._live.core
        if core.phase == "running" and core.flushing and (self._task is None or self._task.done()):
            # Only while running: an ending session's flush stops early on purpose (run()
            # writes the rest and seals), and one restarted then finds the recorder sealed.
            self._live.log.warning("session %s: restarting a lost flush", self._live.session_id)
            self._task = asyncio.get_running_loop().create_task(self._logged())

    async def finished(self) -> None:
        """Wait for the flush under way, if any (the session is ending)."""
        if self._task is not None:
            with contextlib.suppress(RecorderError):
                await self._task

    async def seal(self, reason: str) -> Seal:
        """Seal the transcript on the writer, after every flush of it; raises
        RecorderError."""
        recorder = self._live.recorder
        seal = functools.partial(recorder.seal, True, reason, time.time())
        return await DiskWriter.for_loop().run(recorder, seal)

    async def _logged(self) -> None:
        try:
            await self._flush()
        except Exception:  # a task boundary: nobody awaits it until the session ends
            self._live.log.exception("flushing the recording failed; the next tick starts again")

    async def _flush(self) -> None:
        """Flush until the core is satisfied: a flush that ends with more waiting than a
        flush's worth goes straight on (the core asks by returning Flush again)."""
        live = self._live
        while True:
            self._again = False
            try:
                # Encoded and digested here, in one go; only the writes go to the writer.
                write = live.recorder.prepare_flush()
                await DiskWriter.for_loop().run(live.recorder, write)
            except RecorderError as exc:
                live.recorder_failed(exc)
                return
            if live.core.phase != "running":
                return
            actions = live.core.flush_done(time.monotonic())
            again = any(isinstance(action, Flush) for action in actions)
            live.apply([action for action in actions if not isinstance(action, Flush)])
            if not (again or self._again):
                return
