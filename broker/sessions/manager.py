"""Starting, attaching to, killing and draining sessions on this broker node.

A session starts only when, in this order: the staff member, the ticket and the agent pass
the session rules (``admission``); the session row is written; the end user approved
(attended agents, ``consent``); the recorder exists; the start is audited. Any store that
fails on the way refuses the session ("audit store unavailable"): every session has a
ticket, a recorder and an audit trail, or it does not start. After that the session is a
:class:`~broker.sessions.hub.LiveSession`; when it ends, ``broker.sessions.finish`` writes
its row, its audit event and its note to the outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Final, Literal

import asyncssh
from sqlalchemy.exc import SQLAlchemyError

from agent.protocol import SessionEnv
from broker.errors import BrokerError
from broker.ports import AgentTunnels, TicketSystem
from broker.rules import (
    Allowed,
    LiveSessionView,
    Refused,
    may_join_session,
    may_observe_session,
)
from broker.services import Services
from broker.sessions import store
from broker.sessions.access import load_agents, load_staff
from broker.sessions.admission import OpenRequest, admit, refuse
from broker.sessions.consent import ASKED_ROLE, ConsentGrant, Grants, ask_consent
from broker.sessions.errors import (
    AUDIT_STORE_UNAVAILABLE,
    SessionNotFound,
    SessionRefused,
    StoreUnavailable,
)
from broker.sessions.facts import SessionFacts, Terminal
from broker.sessions.finish import Finisher
from broker.sessions.hub import END_SHUTDOWN, LiveSession
from broker.sessions.hub_core import HubClosed, HubFull, HubLimits, Member, Role
from broker.sessions.recording import (
    END_REVOKED,
    end_disabled_accounts,
    end_sessions_of,
    new_recorder,
)
from broker.transcript import TranscriptRecorder

log = logging.getLogger(__name__)

DB_ERRORS: Final = (SQLAlchemyError, OSError)
ACCOUNT_CHECK_TICKS: Final = 3


class SessionManager:
    """The live sessions of this node, and the only way to start or reach one."""

    def __init__(
        self,
        services: Services,
        *,
        tickets: Callable[[], TicketSystem | None],
        tunnels: Callable[[], AgentTunnels | None],
        node: str | None = None,
    ) -> None:
        self.services = services
        self._tickets = tickets
        self._tunnels = tunnels
        self.node = (node or socket.gethostname())[:64]
        self.live: dict[str, LiveSession] = {}
        self.finisher = Finisher(services, tickets)
        self._supervisors: dict[str, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._closing = False
        self._ticker: asyncio.Task[None] | None = None
        self._starting: dict[str, asyncio.Task[object]] = {}  # waiting to start (consent)
        self._killed: dict[str, str] = {}  # killed while starting: by whom
        # The end user's approvals in force; a withdrawal's audit is retried like the end's.
        self.grants = Grants(
            services,
            self.spawn,
            lambda sid, what, write: self.finisher.until_stored(
                sid, what, write, lambda: self._closing
            ),
        )

    # -- plumbing --------------------------------------------------------------------------

    def tickets(self) -> TicketSystem | None:
        return self._tickets()

    def tunnels(self) -> AgentTunnels | None:
        return self._tunnels()

    def start(self) -> None:
        """Start the once-a-second tick (flushes, idle and length limits)."""
        self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def _tick(self) -> None:
        rounds = 0
        while True:
            await asyncio.sleep(1.0)
            rounds += 1
            for live in list(self.live.values()):
                try:
                    live.tick()
                except Exception:
                    log.exception("session %s: tick failed", live.session_id)
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
        for live in ended:
            live.end(
                END_REVOKED,
                code="agent_revoked",
                message="the agent was revoked, so the session ended",
            )
        return len(ended)

    def spawn(self, work: Awaitable[object], what: str) -> None:
        """Run ``work`` in the background, keeping a reference and logging failures."""

        async def guarded() -> None:
            try:
                await work
            except DB_ERRORS as exc:
                log.error("%s failed: the database is unavailable (%s)", what, type(exc).__name__)
            except Exception:
                log.exception("%s failed", what)

        task = asyncio.get_running_loop().create_task(guarded())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

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
        """Start a session with ``owner`` attached; raises SessionRefused (audited)."""
        if self._closing:
            raise SessionRefused(
                "the broker is shutting down; try again in a minute",
                code="shutting_down",
                status=503,
            )
        tickets, tunnels = self._tickets(), self._tunnels()
        admitted = await admit(self.services, req, tickets, tunnels)
        facts, decision = admitted.facts, admitted.decision
        now = self.services.clock()
        sid = facts.session_id
        try:
            async with self.services.db() as db, db.begin():
                state = "waiting_consent" if decision.needs_consent else "starting"
                await store.insert_session(db, facts, state=state, now=now, node=self.node)
        except DB_ERRORS:
            raise StoreUnavailable(AUDIT_STORE_UNAVAILABLE) from None
        current = asyncio.current_task()
        if current is not None:
            self._starting[sid] = current
        try:
            return await self._start(
                req, facts, decision, admitted.tickets, tunnels, owner, admitted.ticket_status
            )
        except BaseException as exc:
            killed_by = self._killed.pop(sid, None)
            if killed_by is not None and isinstance(exc, asyncio.CancelledError):
                # Killed while it waited (for the end user): a refusal, not a cancellation.
                if current is not None:
                    current.uncancel()
                exc = SessionRefused(
                    f"the session was ended by {killed_by} before it started", code="killed"
                )
            reason = exc.message if isinstance(exc, SessionRefused) else "not started"
            state = "refused" if isinstance(exc, SessionRefused) else "failed"
            # Retried while the database is down: a row left "starting" or
            # "waiting_consent" would count against the owner's limit until a restart.
            abandon = functools.partial(self._abandon, sid, state, reason)
            retried = self.finisher.until_stored(sid, "its refusal", abandon, lambda: self._closing)
            self.spawn(retried, f"abandoning session {sid}")
            if killed_by is not None and isinstance(exc, SessionRefused):
                raise exc from None
            raise
        finally:
            self._starting.pop(sid, None)

    async def _start(
        self,
        req: OpenRequest,
        facts: SessionFacts,
        decision: Allowed,
        tickets: TicketSystem,
        tunnels: AgentTunnels | None,
        owner: Terminal,
        ticket_status: str,
    ) -> tuple[LiveSession, Member]:
        sid, staff = facts.session_id, facts.owner
        owner_env = SessionEnv(
            session=sid,
            staff=staff,
            staff_level=facts.owner_level,
            ticket=facts.ticket_ref,
            ticket_title=facts.ticket_title,
            role="owner",
        )
        conn = tunnels.connection(facts.agent_id) if tunnels is not None else None
        if conn is None:
            offline = Refused(
                "agent_offline",
                f"agent {facts.agent_name} is offline; it must be running and connected",
            )
            raise await refuse(self.services, req, offline, target=sid)
        if decision.assign_to_caller:
            try:
                await tickets.assign(facts.ticket_id, staff, actor=staff)
            except DB_ERRORS:
                raise StoreUnavailable(AUDIT_STORE_UNAVAILABLE) from None
        grant: ConsentGrant | None = None
        if decision.needs_consent:
            owner.show_state(
                "waiting_consent",
                f"waiting for the end user's approval on {facts.agent_name}",
                sid,
            )
            grant = await ask_consent(self.services, conn, owner_env, source=req.source)
        try:
            return await self._start_live(
                req, facts, tickets, conn, owner, ticket_status, owner_env, grant
            )
        except BaseException:
            if grant is not None:
                grant.close()
            raise

    async def _start_live(
        self,
        req: OpenRequest,
        facts: SessionFacts,
        tickets: TicketSystem,
        conn: asyncssh.SSHClientConnection,
        owner: Terminal,
        ticket_status: str,
        owner_env: SessionEnv,
        grant: ConsentGrant | None,
    ) -> tuple[LiveSession, Member]:
        sid, staff = facts.session_id, facts.owner
        env = replace(owner_env, role=None).to_env()  # the shell's channel names no role
        consent = grant.answer if grant is not None else None
        recorder = self._recorder(facts)
        left: set[int] = set()  # members whose leave is recorded (see _member_changed)
        live = LiveSession(
            facts,
            recorder,
            HubLimits(
                idle_timeout=float(self.services.config.session_idle_timeout_seconds),
                max_seconds=float(self.services.config.session_max_seconds),
            ),
            on_member=lambda member, what, why: self._member_changed(sid, member, what, why, left),
            started_at=time.time(),
        )
        live.consent = consent
        if consent is not None:
            by = f" by {consent.by}" if consent.by else ""
            live.marker(f"consent {consent.decision}{by}")
        try:
            await self.audit(
                staff,
                "session.start",
                sid,
                source=req.source,
                details={
                    "ticket": facts.ticket_ref,
                    "agent": facts.agent_id,
                    "kind": facts.kind,
                    "via": facts.via,
                    "consent": consent.decision if consent else "not_required",
                },
            )
        except DB_ERRORS:
            await asyncio.to_thread(recorder.seal, False, "not started", time.time())
            raise StoreUnavailable(AUDIT_STORE_UNAVAILABLE) from None
        self.live[sid] = live
        self._supervisors[sid] = asyncio.get_running_loop().create_task(self._supervise(live))
        member = live.attach(owner, staff, "owner", facts.via, announce=False)
        if grant is not None:
            self.grants.keep(live, member, owner_env, grant, req.source)
        try:
            await live.open_channel(conn, env)
        except (asyncssh.Error, OSError) as exc:
            log.warning("session %s: the agent refused the channel: %s", sid, exc)
            live.end(
                "not started",
                code="agent_refused",
                message=f"agent {facts.agent_name} refused to open the session; "
                "check that it runs, and for attended agents that the end user approved",
            )
            return live, member
        if live.running:
            owner.show_state("running", "", sid)
        # Off the path to the first prompt: the start is audited already, and a store that
        # fails here still ends the session.
        self.spawn(self._mark_live(live, tickets, ticket_status), f"starting {sid}")
        return live, member

    async def _mark_live(
        self, live: LiveSession, tickets: TicketSystem, ticket_status: str
    ) -> None:
        sid, staff = live.session_id, live.facts.owner
        try:
            async with self.services.db() as db, db.begin():
                await store.update_session(
                    db,
                    sid,
                    only_from=("starting", "waiting_consent"),
                    state="live",
                    started_at=self.services.clock(),
                )
        except DB_ERRORS:
            live.end(
                "audit store unavailable",
                code="store_unavailable",
                message=AUDIT_STORE_UNAVAILABLE,
            )
            return
        if ticket_status == "new":
            # Work has started on the ticket; someone else may have opened it meanwhile.
            try:
                await tickets.change_status(live.facts.ticket_id, "open", actor=staff)
            except BrokerError as exc:
                log.info("session %s: ticket not opened: %s", sid, exc.code)

    def _recorder(self, facts: SessionFacts) -> TranscriptRecorder:
        return new_recorder(self.services, facts)

    async def _abandon(self, sid: str, state: str, reason: str) -> None:
        async with self.services.db() as db, db.begin():
            await store.update_session(
                db,
                sid,
                state=state,
                end_reason=reason[:200],
                ended_at=self.services.clock(),
            )

    # -- the end ---------------------------------------------------------------------------

    async def _supervise(self, live: LiveSession) -> None:
        try:
            outcome = await live.run()
        finally:
            self.live.pop(live.session_id, None)
        await self.finisher.finish(live, outcome, closing=lambda: self._closing)
        self._supervisors.pop(live.session_id, None)

    def _member_changed(
        self, sid: str, member: Member, what: Literal["joined", "left"], why: str, left: set[int]
    ) -> None:
        if what == "left":
            self.grants.release(sid, member.pid)
            # The hub reports a terminal still attached at the end as left ("session
            # ended") and again when its channel closes ("disconnected"): record one leave.
            if member.pid in left:
                return
            left.add(member.pid)
        self.spawn(
            self.finisher.member_changed(sid, member, what, why, closing=lambda: self._closing),
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
        """Join (type) or observe (watch) a live session of this node; audited."""
        if role == "owner":
            raise ValueError("the owner attaches by opening the session")
        action = "session.join" if role == "joiner" else "session.observe"
        live = self.live.get(session_id)
        tickets = self._tickets()
        try:
            async with self.services.db() as db:
                staff = await load_staff(db, staff_name)
                agents = await load_agents(db, [live.facts.agent_id]) if live else []
        except DB_ERRORS:
            raise StoreUnavailable(AUDIT_STORE_UNAVAILABLE) from None
        ticket = await tickets.get(ticket_id) if tickets is not None else None
        if live is None or staff is None or ticket is None or not agents or not live.running:
            await self._audit_refusal(staff_name, action, session_id, source, "not_live")
            raise SessionNotFound(
                f"there is no live session {session_id} on ticket T-{ticket_id}; "
                "see the ticket's sessions"
            )
        view = LiveSessionView(
            id=session_id,
            ticket=live.facts.ticket_id,
            owner=live.facts.owner,
            invited=live.core.invited,
        )
        now = self.services.clock()
        if role == "joiner":
            decision = may_join_session(
                staff, ticket.view(), view, agents[0].view(self._tunnels()), now
            )
        else:
            attended = agents[0].view(self._tunnels()).consent == "attended"
            decision = may_observe_session(staff, ticket.view(), view, now, attended=attended)
        if isinstance(decision, Refused):
            await self._audit_refusal(staff_name, action, session_id, source, decision.code)
            raise SessionRefused(decision.reason, code=decision.code)
        env = SessionEnv(
            session=session_id,
            staff=staff.name,
            staff_level=staff.level or 0,
            ticket=live.facts.ticket_ref,
            ticket_title=live.facts.ticket_title,
            role=ASKED_ROLE[role],
        )
        grant: ConsentGrant | None = None
        if decision.needs_consent:
            conn = (self._tunnels() or _NoTunnels()).connection(live.facts.agent_id)
            if conn is None:
                raise SessionRefused("the agent is offline", code="agent_offline")
            terminal.show_state(
                "waiting_consent", "waiting for the end user's approval", session_id
            )
            # Every joiner and observer is asked about by name: nobody rides on the owner's
            # approval. A refusal is audited and marked in the transcript.
            grant = await ask_consent(self.services, conn, env, source=source, marker=live.marker)
        try:
            member = await self._admit_member(live, staff.name, role, action, terminal, source)
        except BaseException:
            if grant is not None:
                grant.close()
            raise
        if grant is not None:
            self.grants.keep(live, member, env, grant, source)
        return live, member

    async def _admit_member(
        self,
        live: LiveSession,
        name: str,
        role: Role,
        action: str,
        terminal: Terminal,
        source: str,
    ) -> Member:
        try:
            await self.audit(
                name,
                action,
                live.session_id,
                source=source,
                details={"ticket": live.facts.ticket_ref},
            )
        except DB_ERRORS:
            raise StoreUnavailable(AUDIT_STORE_UNAVAILABLE) from None
        try:
            return live.attach(terminal, name, role, "web")
        except (HubClosed, HubFull) as exc:
            raise SessionRefused(f"you cannot attach: {exc}", code="session_full") from None

    async def _audit_refusal(
        self, actor: str, action: str, target: str, source: str, code: str
    ) -> None:
        try:
            await self.audit(
                actor, action, target, outcome="denied", source=source, details={"code": code}
            )
        except DB_ERRORS:
            raise StoreUnavailable(AUDIT_STORE_UNAVAILABLE) from None

    async def kill(self, session_id: str, by: str, *, source: str = "", reason: str = "") -> bool:
        """End a session of this node within two seconds (a live one is sealed; one still
        waiting for the end user is refused); False when none runs here. ``reason`` (may
        be empty) goes to the participants, the transcript, the note and the audit."""
        details: dict[str, object] = {"reason": reason} if reason else {}
        live = self.live.get(session_id)
        if live is None:
            starting = self._starting.get(session_id)
            if starting is None:
                return False
            await self.audit(by, "session.kill", session_id, source=source, details=details)
            self._killed[session_id] = by
            starting.cancel()
            await asyncio.wait({starting}, timeout=3.0)
            why = f": {reason}" if reason else ""
            await self._abandon(session_id, "refused", f"ended by {by} before it started{why}")
            return True
        await self.audit(by, "session.kill", session_id, source=source, details=details)
        live.kill(by, reason)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(3.0):
                await live.done.wait()
        supervisor = self._supervisors.get(session_id)
        if supervisor is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(3.0):
                    await asyncio.shield(supervisor)
        return True

    async def drain(self, grace: float = 10.0) -> None:
        """SIGTERM: tell everyone, end every session, seal and record them, stop."""
        self._closing = True
        for live in list(self.live.values()):
            live.end(
                END_SHUTDOWN,
                code="shutdown",
                message="the broker is shutting down, so the session ended; "
                "its transcript is saved. Open a new session in a minute",
            )
        pending = list(self._supervisors.values())
        if pending:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await asyncio.gather(*pending, return_exceptions=True)
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        for task in list(self._background):
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                async with asyncio.timeout(2.0):
                    await task

    def get(self, session_id: str) -> LiveSession | None:
        return self.live.get(session_id)

    def refuse_if_missing(self, session_id: str) -> LiveSession:
        live = self.live.get(session_id)
        if live is None:
            raise SessionNotFound(f"there is no live session {session_id} on this broker")
        return live


class _NoTunnels:
    def connection(self, agent_id: str) -> asyncssh.SSHClientConnection | None:
        return None
