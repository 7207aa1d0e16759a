"""The steps of a session's start, each one action of ``broker.sessions.lifecycle``
performed for one :class:`SessionRun`: reach the agent, assign the ticket, ask the end
user, record the start, open the channel, mark the row live. Each returns what it reports
to the table (or raises the refusal); the session manager decides nothing here, it feeds
the table and calls these in the order it returns."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import asyncssh

from agent.protocol import ConsentRole, SessionEnv
from broker.errors import BrokerError
from broker.ports import AgentTunnels
from broker.services import Services
from broker.sessions import lifecycle as lc
from broker.sessions import store
from broker.sessions.admission import Admitted, OpenRequest
from broker.sessions.consent import ConsentGrant, ask_consent
from broker.sessions.errors import (
    AUDIT_STORE_UNAVAILABLE,
    DB_ERRORS,
    SessionRefused,
    StoreUnavailable,
)
from broker.sessions.facts import MemberEvent, SessionFacts, Terminal
from broker.sessions.hooks import SessionStartHook
from broker.sessions.hub import LiveSession
from broker.sessions.hub_core import HubLimits, Member
from broker.sessions.sftp_tracker import FileLimits
from broker.transcript import TranscriptRecorder

log = logging.getLogger(__name__)


def session_env(facts: SessionFacts, staff: str, level: int, role: ConsentRole) -> SessionEnv:
    """What the agent is told about a person entering the session (``SL_*``); the
    owner's, without the role, is also the shell's environment."""
    return SessionEnv(
        session=facts.session_id,
        staff=staff,
        staff_level=level,
        ticket=facts.ticket_ref,
        ticket_title=facts.ticket_title,
        role=role,
    )


@dataclass(eq=False)
class SessionRun:
    """One session of this node from its row to its end: its lifecycle, and what the start
    has made so far."""

    lifecycle: lc.SessionLifecycle
    req: OpenRequest
    admitted: Admitted
    owner: Terminal
    env: SessionEnv  # the owner's, built once
    tunnels: AgentTunnels | None
    task: asyncio.Task[object] | None = None  # the start, while it runs
    conn: asyncssh.SSHClientConnection | None = None
    grant: ConsentGrant | None = None
    live: LiveSession | None = None  # made by RecordStart
    registered: bool = False  # in SessionManager.live (RegisterHub)
    member: Member | None = None
    killed_by: str | None = None
    left: set[int] = field(default_factory=set)  # members whose leave is recorded

    @property
    def facts(self) -> SessionFacts:
        return self.admitted.facts

    @property
    def sid(self) -> str:
        return self.admitted.facts.session_id


def killed_refusal(by: str) -> SessionRefused:
    """What the staff member waiting for a start hears when it was killed."""
    return SessionRefused(f"the session was ended by {by} before it started", code="killed")


def reach_agent(run: SessionRun) -> lc.AgentReached | lc.AgentOffline:
    facts = run.facts
    run.conn = run.tunnels.connection(facts.agent_id) if run.tunnels is not None else None
    return lc.AgentReached() if run.conn is not None else lc.AgentOffline(facts.agent_name)


async def assign_ticket(run: SessionRun) -> None:
    facts = run.facts
    try:
        await run.admitted.tickets.assign(facts.ticket_id, facts.owner, actor=facts.owner)
    except DB_ERRORS:
        raise StoreUnavailable(AUDIT_STORE_UNAVAILABLE) from None


async def ask_owner(services: Services, run: SessionRun) -> lc.ConsentGiven:
    """Show the owner that the end user is asked, and ask; raises the refusal."""
    run.owner.show_state(
        "waiting_consent",
        f"waiting for the end user's approval on {run.facts.agent_name}",
        run.sid,
    )
    assert run.conn is not None
    run.grant = await ask_consent(services, run.conn, run.env, source=run.req.source)
    return lc.ConsentGiven()


async def record_start(
    services: Services,
    run: SessionRun,
    recorder: TranscriptRecorder,
    on_member: MemberEvent,
) -> lc.StartRecorded:
    """Make the hub around ``recorder`` and audit the start; raises StoreUnavailable."""
    facts = run.facts
    consent = run.grant.answer if run.grant is not None else None
    live = LiveSession(
        facts,
        recorder,
        HubLimits(
            idle_timeout=float(services.config.session_idle_timeout_seconds),
            max_seconds=float(services.config.session_max_seconds),
        ),
        on_member=on_member,
        started_at=time.time(),
        file_limits=FileLimits(
            max_upload_bytes=services.config.sftp_max_upload_bytes,
            max_download_bytes=services.config.sftp_max_download_bytes,
            max_files=services.config.sftp_max_files_per_session,
            keep_bytes=services.config.sftp_keep_file_bytes,
            window_bytes=services.config.sftp_window_bytes,
        ),
    )
    live.consent = consent
    if consent is not None:
        by = f" by {consent.by}" if consent.by else ""
        live.marker(f"consent {consent.decision}{by}")
    try:
        await services.audit.record(
            actor=facts.owner,
            action="session.start",
            target=run.sid,
            outcome="ok",
            source=run.req.source,
            details={
                "ticket": facts.ticket_ref,
                "agent": facts.agent_id,
                "kind": facts.kind,
                "via": facts.via,
                "consent": consent.decision if consent else "not_required",
            },
        )
    except DB_ERRORS:
        await asyncio.to_thread(recorder.seal, False, lc.END_NOT_STARTED, time.time())
        raise StoreUnavailable(AUDIT_STORE_UNAVAILABLE) from None
    run.live = live
    return lc.StartRecorded()


async def open_channel(run: SessionRun) -> lc.ChannelOpened | lc.ChannelRefused:
    live = run.live
    assert live is not None
    assert run.conn is not None
    env = replace(run.env, role=None).to_env()  # the shell's channel names no role
    try:
        await live.channel.open(run.conn, env)
    except (asyncssh.Error, OSError) as exc:
        log.warning("session %s: the agent refused the channel: %s", run.sid, exc)
        return lc.ChannelRefused(run.facts.agent_name)
    if live.running:
        run.owner.show_state("running", "", run.sid)
    return lc.ChannelOpened()


async def mark_live(
    services: Services,
    run: SessionRun,
    action: lc.MarkLive,
    failed: Callable[[], None],
    hooks: Sequence[SessionStartHook] = (),
) -> None:
    """Off the path to the first prompt: the start is audited already, and a store that
    fails here still ends the session (``failed``). ``hooks`` write in the same
    transaction (broker.sessions.hooks)."""
    sid, staff = run.sid, run.facts.owner
    try:
        async with services.db() as db, db.begin():
            now = services.clock()
            await store.update_session(
                db,
                sid,
                only_from=("starting", "waiting_consent"),
                state="live",
                started_at=now,
            )
            for hook in hooks:
                await hook(db, run.facts, now)
    except DB_ERRORS:
        failed()
        return
    if action.open_ticket:
        # Work has started on the ticket; someone else may have opened it meanwhile.
        try:
            await run.admitted.tickets.change_status(run.facts.ticket_id, "open", actor=staff)
        except BrokerError as exc:
            log.info("session %s: ticket not opened: %s", sid, exc.code)
