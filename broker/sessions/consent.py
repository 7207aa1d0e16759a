"""Asking the end user of an attended agent: the ``sl:consent`` channel of the protocol
(docs/protocol.md), its bounded answer, and the audit and database record of the decision."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Final

import asyncssh
from sqlalchemy.exc import SQLAlchemyError

from agent.errors import MessageError
from agent.protocol import CONSENT_COMMAND, ConsentAnswer
from broker.services import Services
from broker.sessions import store
from broker.sessions.errors import (
    AUDIT_STORE_UNAVAILABLE,
    ConsentRefused,
    SessionRefused,
    StoreUnavailable,
)

DB_ERRORS: Final = (SQLAlchemyError, OSError)
# The agent decides the timeout (consent_timeout_seconds, 120 s by default); this only
# bounds an agent that never answers.
CONSENT_WAIT_MAX: Final = 900.0
CONSENT_ANSWER_MAX: Final = 4096


async def ask_consent(
    services: Services,
    conn: asyncssh.SSHClientConnection,
    env: dict[str, str],
    sid: str,
    staff: str,
    source: str,
) -> ConsentAnswer:
    """Ask the end user through ``sl:consent``; refuses unless approved."""
    answer: ConsentAnswer | None = None
    channel_env: dict[bytes | str, bytes | str] = dict(env.items())
    try:
        async with asyncio.timeout(CONSENT_WAIT_MAX):
            process = await conn.create_process(
                CONSENT_COMMAND, env=channel_env, encoding=None, stdin=asyncssh.DEVNULL
            )
            try:
                data = bytearray()
                while len(data) <= CONSENT_ANSWER_MAX:
                    chunk = await process.stdout.read(CONSENT_ANSWER_MAX + 1)
                    if not chunk:
                        break
                    data += chunk
            finally:
                process.close()
        answer = ConsentAnswer.parse(bytes(data))
    except TimeoutError:
        answer = ConsentAnswer(decision="timeout", by=None, at=dt.datetime.now(dt.UTC))
    except (asyncssh.Error, OSError):
        raise SessionRefused(
            "the agent disconnected while asking the end user; try again when it is back",
            code="agent_disconnected",
        ) from None
    except MessageError:
        raise SessionRefused(
            "the agent's consent answer was not understood; the session is refused",
            code="consent_malformed",
        ) from None
    outcome = "ok" if answer.allows else "denied"
    try:
        await services.audit.record(
            actor=staff,
            action="session.consent",
            target=sid,
            outcome=outcome,
            source=source,
            details={"decision": answer.decision, "by": answer.by},
        )
        async with services.db() as db, db.begin():
            await store.update_session(
                db, sid, consent=answer.decision, consent_by=answer.by, consent_at=answer.at
            )
    except DB_ERRORS:
        raise StoreUnavailable(AUDIT_STORE_UNAVAILABLE) from None
    if answer.decision == "denied":
        raise ConsentRefused("the end user denied the session; ask them, then try again")
    if answer.decision == "timeout":
        raise ConsentRefused(
            "the end user did not answer in time, so the session was refused; ask them to "
            "approve it (secondline-agent approve) and try again",
            code="consent_timeout",
        )
    return answer
