"""What the session manager does to the sessions of this node beside starting them: create
a session's transcript recorder (no recorder, no session), and end the sessions of accounts
disabled while they run. Sessions ended by an admin's action say which in their end reason
(transcript seal, session row, note): "account disabled", "revoked" (the agent)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Final

from broker.services import Services
from broker.sessions import store
from broker.sessions.errors import StoreUnavailable
from broker.sessions.facts import SessionFacts
from broker.sessions.hub import LiveSession
from broker.transcript import (
    FORMAT_DENSE,
    CastHeader,
    RecorderError,
    SessionInfo,
    TranscriptRecorder,
)

log = logging.getLogger(__name__)

END_ACCOUNT_DISABLED: Final = "account disabled"
END_REVOKED: Final = "revoked"


def new_recorder(services: Services, facts: SessionFacts) -> TranscriptRecorder:
    """The transcript recorder of a session about to start; raises StoreUnavailable."""
    config = services.config
    header = CastHeader(
        width=facts.cols,
        height=facts.rows,
        timestamp=int(time.time()),
        session=SessionInfo(
            session_id=facts.session_id,
            ticket=facts.ticket_ref,
            agent=facts.agent_name,
            staff=facts.owner,
        ),
        term=facts.term,
        title=f"{facts.ticket_ref}: {facts.ticket_title}",
        # Output as bytes where text would cost more (docs/transcripts.md, "Format versions").
        transcript_format=FORMAT_DENSE,
    )
    try:
        config.transcripts_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        return TranscriptRecorder(
            config.transcripts_dir,
            header,
            services.keys.transcript_key,
            started_at=time.time(),
            flush_bytes=64 << 20,  # the hub flushes; this is only a safety net
        )
    except (RecorderError, OSError) as exc:
        log.error("session %s: cannot create its transcript: %s", facts.session_id, exc)
        raise StoreUnavailable(
            "transcript store unavailable: the broker cannot create the session's "
            "transcript (is its disk full?), and no session runs unrecorded; tell an admin",
            code="transcript_store_unavailable",
        ) from None


async def end_disabled_accounts(services: Services, sessions: Iterable[LiveSession]) -> None:
    """Disabling an account ends its sessions and detaches it from others within seconds."""
    live = list(sessions)
    names = {m.name for session in live for m in session.core.members}
    if not names:
        return
    async with services.db() as db:
        disabled = await store.disabled_accounts(db, names)
    end_sessions_of(live, disabled)


def end_sessions_of(sessions: Iterable[LiveSession], disabled: set[str]) -> None:
    """End the sessions the ``disabled`` accounts control; cut them off from the others."""
    for session in list(sessions):
        for member in list(session.core.members):
            if member.name not in disabled:
                continue
            if member.role == "owner":
                session.end(
                    END_ACCOUNT_DISABLED,
                    code="account_disabled",
                    message=f"the account {member.name} was disabled, so the session ended",
                )
            else:
                session.drop(member.pid, "your account was disabled")
