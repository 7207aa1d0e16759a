"""Starting, attaching to, killing and draining sessions on this broker node: the thin
executor of ``broker.sessions.lifecycle``.

The table decides the order; this module performs its actions and feeds back what
happened. A session starts only when, in this order: the staff member, the ticket and the
agent pass the session rules (``admission``); the session row is written; the agent is
reached; the end user approved (attended agents, ``consent``); the recorder exists; the
start is audited. Any store that fails on the way refuses the session ("audit store
unavailable"): every session has a ticket, a recorder and an audit trail, or it does not
start. After that the session is a :class:`~broker.sessions.hub.LiveSession`; when it ends,
``broker.sessions.finish`` writes its row, its audit event and its note to the outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Final, Literal

from broker.ports import AgentTunnels, TicketSystem
from broker.rules import Refused
from broker.services import Services
from broker.sessions import lifecycle as lc
from broker.sessions import opening, store
from broker.sessions.admission import Admitted, JoinRequest, OpenRequest, admit, refuse
from broker.sessions.chunks import in_chunks
from broker.sessions.consent import Grants
from broker.sessions.errors import (
    AUDIT_STORE_UNAVAILABLE,
    DB_ERRORS,
    SessionNotFound,
    SessionRefused,
    StoreUnavailable,
)
from broker.sessions.facts import SessionFacts, Terminal
from broker.sessions.finish import Finisher
from broker.sessions.hooks import SessionStartHook
from broker.sessions.hub import END_SHUTDOWN, LiveSession
from broker.sessions.hub_core import Member, Role
from broker.sessions.joining import join
from broker.sessions.opening import SessionRun, killed_refusal, session_env
from broker.sessions.recording import (
    END_REVOKED,
    end_disabled_accounts,
    end_sessions_of,
    new_recorder,
)
from broker.sessions.routing import SessionRouter
from broker.supervision import OnFailure, Supervisor
from broker.transcript import TranscriptRecorder

log = logging.getLogger(__name__)

ACCOUNT_CHECK_TICKS: Final = 3
# A live session's transcript is copied to the shared store this often: what a node that
# dies leaves unsealed is sealed from the copy, so this bounds what its death loses.
SHIP_EVERY_S: Final = 1.0
# A kill waits this long for a start to stop, a hub to seal and its end to be written.
KILL_WAIT: Final = 3.0


def _tick_one(live: LiveSession) -> None:
    try:
        live.tick()
    except Exception:
        log.exception("session %s: tick failed", live.session_id)


class SessionManager:
    """The live sessions of this node, and the only way to start or reach one."""

    def __init__(
        self,
        services: Services,
        *,
        tickets: Callable[[], TicketSystem | None],
        tunnels: Callable[[], AgentTunnels | None],
        node: str | None = None,
        router: Callable[[], SessionRouter | None] = lambda: None,
    ) -> None:
        self.services = services
        # Looked up at each use (and by ``cross_node``): the app may put others in place.
        self.tickets = tickets
        self.tunnels = tunnels
        self.router = router
        self.node = (node or socket.gethostname())[:64]
        self.live: dict[str, LiveSession] = {}
        self.finisher = Finisher(services, tickets)
        self._runs: dict[str, SessionRun] = {}  # from the row's insert to the end's write
        # Each live session's end-watcher, the tick and background writes, in one group.
        self._tasks = Supervisor("sessions")
        self._supervisors: dict[str, asyncio.Task[None]] = {}
        self._closing = False
        # Run in the transaction that marks a session live (broker.sessions.hooks).
        self.start_hooks: list[SessionStartHook] = []
        # The end user's approvals in force; a withdrawal's audit is retried like the end's.
        self.grants = Grants(
            services,
            self.spawn,
            lambda sid, what, write: self.finisher.until_stored(
                sid, what, write, lambda: self._closing
            ),
        )

    # -- plumbing --------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the task group and start the once-a-second tick (flushes, idle and length
        limits)."""
        await self._tasks.open()
        # RESTART: the tick's state is the live sessions themselves; a new tick goes on
        # with them (a session's own failure is caught and logged inside the round).
        self._tasks.keep("tick", self._tick, on_failure=OnFailure.RESTART)
        if self.services.transcripts.shared:
            # RESTART: what is copied is read back from the database each round, so a new
            # loop goes on where the old one stopped.
            self._tasks.keep(
                "transcript copies", self._copy_transcripts, on_failure=OnFailure.RESTART
            )

    async def _copy_transcripts(self) -> None:
        """Copy every live session's new transcript lines where every node reads them,
        about once a second (what a node that dies leaves is sealed from this copy)."""
        while True:
            await asyncio.sleep(SHIP_EVERY_S)
            for sid in list(self.live):
                try:
                    await self.services.transcripts.ship(sid)
                except DB_ERRORS as exc:
                    # The files keep every byte; the next round, or the end, copies it.
                    log.error("session %s: copying its transcript failed (%s)", sid, exc)
                    break

    async def _tick(self) -> None:
        rounds = 0
        while True:
            await asyncio.sleep(1.0)
            rounds += 1
            # With the sockets read between chunks of sessions (broker.sessions.chunks).
            await in_chunks(list(self.live.values()), _tick_one)
            if rounds % ACCOUNT_CHECK_TICKS == 0 and self.live:
                try:
                    await self.end_disabled_accounts()
                except DB_ERRORS as exc:
                    log.error("checking accounts failed: %s", type(exc).__name__)

    async def end_disabled_accounts(self) -> None:
        """Disabling an account ends its sessions and detaches it from others within seconds."""
        await end_disabled_accounts(self.services, self.live.values())

    def end_account_sessions(self, name: str) -> None:
        """Disabling ``name`` ends its sessions here at once, as "account disabled" (its
        console terminals are cut within seconds too, which would read as a plain leave);
        the periodic check covers other nodes."""
        end_sessions_of(self.live.values(), {name})

    def end_agent_sessions(self, agent_id: str) -> int:
        """Revoking an agent ends its sessions here as "revoked" (before its tunnel closes,
        which would read as "agent disconnected"); how many."""
        ended = [live for live in self.live.values() if live.facts.agent_id == agent_id]
        message = "the agent was revoked, so the session ended"
        for live in ended:
            self._feed_now(live.session_id, lc.EndAsked(END_REVOKED, "agent_revoked", message))
        return len(ended)

    def spawn(self, work: Awaitable[object], what: str) -> None:
        """Run ``work`` in the background to its end; a database outage is one line, any
        other failure is logged with its traceback by the supervisor."""

        async def guarded() -> None:
            try:
                await work
            except DB_ERRORS as exc:
                log.error("%s failed: the database is unavailable (%s)", what, type(exc).__name__)

        if self._tasks.spawn(what, guarded()) is None and inspect.iscoroutine(work):
            work.close()  # refused (the manager has stopped): nothing is left un-awaited

    async def audit(
        self,
        actor: str,
        action: str,
        target: str,
        *,
        outcome: str = "ok",
        source: str = "",
        details: dict[str, object] | None = None,
    ) -> None:
        await self.services.audit.record(
            actor=actor,
            action=action,
            target=target,
            outcome=outcome,
            source=source,
            details=details or {},
        )

    # -- opening ---------------------------------------------------------------------------

    async def open(self, req: OpenRequest, owner: Terminal) -> tuple[LiveSession, Member]:
        """Start a session on this node with ``owner`` attached; raises SessionRefused
        (audited)."""
        self.refuse_if_closing()
        tunnels = self.tunnels()
        admitted = await admit(self.services, req, self.tickets(), tunnels)
        return await self.start_admitted(req, admitted, owner, tunnels)

    def refuse_if_closing(self) -> None:
        """A draining node starts nothing (``open_anywhere`` asks before it routes too)."""
        if self._closing:
            raise SessionRefused(
                "the broker is shutting down; try again in a minute",
                code="shutting_down",
                status=503,
            )

    async def start_admitted(
        self,
        req: OpenRequest,
        admitted: Admitted,
        owner: Terminal,
        tunnels: AgentTunnels | None,
    ) -> tuple[LiveSession, Member]:
        """Start on this node a session the rules admitted, ``owner`` attached: feed the
        lifecycle from the row's insert until it is live, or raise its refusal."""
        facts, decision = admitted.facts, admitted.decision
        lifecycle, insert = lc.SessionLifecycle.begin(
            lc.StartPlan(
                needs_consent=decision.needs_consent,
                assign=decision.assign_to_caller,
                ticket_new=admitted.ticket_status == "new",
            )
        )
        env = session_env(facts, facts.owner, facts.owner_level, "owner")
        run = SessionRun(lifecycle, req, admitted, owner, env, tunnels)
        await self._insert(run, insert)
        run.task = asyncio.current_task()
        self._runs[run.sid] = run
        try:
            event: lc.Event | None = lc.RowInserted()
            while event is not None:
                event = await self._step(run, event)
            assert run.live is not None
            assert run.member is not None
            return run.live, run.member
        except BaseException as exc:
            refusal = self._broke_off(run, exc)
            if refusal is None:
                raise
            raise refusal from None
        finally:
            run.task = None
            if not run.registered:
                self._runs.pop(run.sid, None)

    async def _insert(self, run: SessionRun, insert: lc.InsertRow) -> None:
        now = self.services.clock()
        try:
            async with self.services.db() as db, db.begin():
                await store.insert_session(
                    db, run.facts, state=insert.state, now=now, node=self.node
                )
        except DB_ERRORS:
            raise StoreUnavailable(AUDIT_STORE_UNAVAILABLE) from None

    async def _step(self, run: SessionRun, event: lc.Event) -> lc.Event | None:
        """Feed ``event`` and perform what it leads to; the next event, if any."""
        if not run.lifecycle.accepts(event):
            if run.killed_by is not None:
                raise killed_refusal(run.killed_by)  # killed while the last step ran
            if run.lifecycle.has_ended:
                return None  # the hub ended before its channel did: nothing left to start
        following: lc.Event | None = None
        for action in run.lifecycle.feed(event):
            following = await self._perform(run, action) or following
        return following

    async def _perform(self, run: SessionRun, action: lc.Action) -> lc.Event | None:
        """One action of a start; what it reports."""
        match action:
            case lc.ReachAgent():
                return opening.reach_agent(run)
            case lc.AuditRefusal(code=code, reason=reason):
                raise await refuse(self.services, run.req, Refused(code, reason), target=run.sid)
            case lc.AssignTicket():
                await opening.assign_ticket(run)
            case lc.AskConsent():
                return await opening.ask_owner(self.services, run)
            case lc.RecordStart():
                recorder = self._recorder(run.facts)

                def on_member(member: Member, what: Literal["joined", "left"], why: str) -> None:
                    self._member_changed(run, member, what, why)

                return await opening.record_start(self.services, run, recorder, on_member)
            case lc.RegisterHub():
                self._register(run)
            case lc.OpenChannel():
                return await opening.open_channel(run)
            case _:
                self._perform_now(run, action)
        return None

    def _perform_now(self, run: SessionRun, action: lc.Action) -> None:
        """An action that needs no waiting: handed to the hub or to the background."""
        match action:
            case lc.MarkLive():
                failed = functools.partial(self._feed_now, run.sid, lc.MarkFailed())
                work = opening.mark_live(self.services, run, action, failed, self.start_hooks)
                self.spawn(work, f"starting {run.sid}")
            case lc.EndHub(reason=reason, code=code, message=message):
                if run.live is not None:
                    run.live.end(reason, code=code, message=message)
            case lc.KillHub(by=by, reason=reason):
                if run.live is not None:
                    run.live.kill(by, reason)
            case lc.WriteEnd():
                self.spawn(self._write_start_end(run, action), f"abandoning session {run.sid}")
            case _:
                raise AssertionError(f"{action} is not performed here")

    def _feed_now(self, sid: str, event: lc.Event) -> None:
        """Feed a session of this node an event whose actions need no waiting."""
        run = self._runs.get(sid)
        if run is not None and run.lifecycle.accepts(event):
            for action in run.lifecycle.feed(event):
                self._perform_now(run, action)

    def _broke_off(self, run: SessionRun, exc: BaseException) -> BaseException | None:
        """The start raised ``exc``: feed it to the table; what to raise instead (None:
        ``exc`` itself)."""
        if run.grant is not None:
            run.grant.close()
        if run.live is not None and not run.registered:
            # Made but never run (killed meanwhile): sealed as not started.
            seal = run.live.recorder.seal
            work = asyncio.to_thread(seal, False, lc.END_NOT_STARTED, time.time())
            self.spawn(work, f"sealing session {run.sid}")
        if run.killed_by is not None and run.lifecycle.state == "refused":
            if isinstance(exc, asyncio.CancelledError):
                # Killed while it waited (for the end user): a refusal, not a cancellation.
                if run.task is not None:
                    run.task.uncancel()
                return killed_refusal(run.killed_by)
            return None
        if isinstance(exc, SessionRefused) and not run.registered:
            self._feed_now(run.sid, lc.StartRefused(exc.message))
        else:
            self._feed_now(run.sid, lc.StartFailed())
        return None

    def _register(self, run: SessionRun) -> None:
        live, facts = run.live, run.facts
        assert live is not None
        self.live[run.sid] = live
        run.registered = True
        supervisor = self._tasks.spawn(f"session {run.sid}", self._supervise(run))
        if supervisor is not None:
            self._supervisors[run.sid] = supervisor
        run.member = live.attach(run.owner, facts.owner, "owner", facts.via, announce=False)
        if run.grant is not None:
            self.grants.keep(live, run.member, run.env, run.grant, run.req.source)

    def _recorder(self, facts: SessionFacts) -> TranscriptRecorder:
        return new_recorder(self.services, facts)

    async def _write_start_end(self, run: SessionRun, write: lc.WriteEnd) -> None:
        await self.finisher.finish_unstarted(run.facts, write, closing=lambda: self._closing)

    # -- the end ---------------------------------------------------------------------------

    async def _supervise(self, run: SessionRun) -> None:
        live = run.live
        assert live is not None
        try:
            outcome = await live.run()
        finally:
            self.live.pop(run.sid, None)
        actions = run.lifecycle.feed(
            lc.HubEnded(opened=live.channel_opened, sealed=outcome.seal is not None)
        )
        write = next(a for a in actions if isinstance(a, lc.WriteEnd))
        audit = next((a for a in actions if isinstance(a, lc.AuditEnd)), None)
        await self.finisher.finish(live, outcome, write, audit, closing=lambda: self._closing)
        self._supervisors.pop(run.sid, None)
        self._runs.pop(run.sid, None)

    def _member_changed(
        self, run: SessionRun, member: Member, what: Literal["joined", "left"], why: str
    ) -> None:
        if what == "left":
            self.grants.release(run.sid, member.pid)
            # The hub reports a terminal still attached at the end as left ("session
            # ended") and again when its channel closes ("disconnected"): record one leave.
            if member.pid in run.left:
                return
            run.left.add(member.pid)
        self.spawn(
            self.finisher.member_changed(run.sid, member, what, why, closing=lambda: self._closing),
            f"recording {what}",
        )

    # -- attaching, killing, draining ------------------------------------------------------

    async def attach(
        self,
        *,
        staff_name: str,
        session_id: str,
        ticket_id: int,
        role: Role,
        terminal: Terminal,
        source: str,
    ) -> tuple[LiveSession, Member]:
        """Join (type) or observe (watch) a live session of this node; audited
        (``joining``)."""
        if role == "owner":
            raise ValueError("the owner attaches by opening the session")
        req = JoinRequest(
            staff=staff_name, session_id=session_id, ticket_id=ticket_id, role=role, source=source
        )
        return await join(
            self.services,
            req,
            self.live.get(session_id),
            terminal,
            tickets=self.tickets,
            tunnels=self.tunnels,
            grants=self.grants,
        )

    async def kill(self, session_id: str, by: str, *, source: str = "", reason: str = "") -> bool:
        """End a session of this node within two seconds (a live one is sealed; one still
        waiting for the end user is refused); False when none runs here. ``reason`` (may
        be empty) goes to the participants, the transcript, the note and the audit."""
        run = self._runs.get(session_id)
        event = lc.Killed(by, reason)
        if run is None or not run.lifecycle.accepts(event):
            return False
        details: dict[str, object] = {"reason": reason} if reason else {}
        # Audited before anything changes: a kill the audit log cannot take does not happen.
        await self.audit(by, "session.kill", session_id, source=source, details=details)
        if not run.lifecycle.accepts(event):
            return True  # it ended while the kill was audited
        if not run.registered:
            run.killed_by = by
        for action in run.lifecycle.feed(event):
            if isinstance(action, lc.CancelStart):
                if run.task is not None:
                    run.task.cancel()
                    await asyncio.wait({run.task}, timeout=KILL_WAIT)
            elif isinstance(action, lc.WriteEnd):
                await self._write_start_end(run, action)
            else:
                self._perform_now(run, action)
        if run.live is not None and run.registered:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(KILL_WAIT):
                    await run.live.done.wait()
            supervisor = self._supervisors.get(session_id)
            if supervisor is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(KILL_WAIT):
                        await asyncio.shield(supervisor)
        return True

    async def drain(self, grace: float = 10.0) -> None:
        """SIGTERM: tell everyone, end every session, seal and record them, stop."""
        self._closing = True
        message = (
            "the broker is shutting down, so the session ended; "
            "its transcript is saved. Open a new session in a minute"
        )
        for sid in list(self.live):
            self._feed_now(sid, lc.EndAsked(END_SHUTDOWN, "shutdown", message))
        pending = list(self._supervisors.values())
        if pending:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await asyncio.gather(*pending, return_exceptions=True)
        # The tick ends; background writes (leaves, audits) get two seconds to finish.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await self._tasks.stop()

    def get(self, session_id: str) -> LiveSession | None:
        return self.live.get(session_id)

    def refuse_if_missing(self, session_id: str) -> LiveSession:
        live = self.live.get(session_id)
        if live is None:
            raise SessionNotFound(f"there is no live session {session_id} on this broker")
        return live
