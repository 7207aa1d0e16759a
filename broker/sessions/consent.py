"""Asking the end user of an attended agent: the ``sl:consent`` channel of the protocol
(docs/protocol.md), its bounded answer, and the audit, transcript and database record of
the decision.

Every person entering a session asks on their own (``SL_ROLE`` names the role: owner,
participant or observer). An approval is a :class:`ConsentGrant`: the channel stays open
while the person is in the session, and a second answer line on it is the end user
withdrawing the approval (they denied after approving), which ends that person's access.
Closing the grant (the person left) tells the agent the approval is no longer needed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final

import asyncssh

from agent.errors import MessageError
from agent.protocol import CONSENT_COMMAND, ConsentAnswer, ConsentRole, SessionEnv
from broker.services import Services
from broker.sessions import store
from broker.sessions.errors import (
    AUDIT_STORE_UNAVAILABLE,
    DB_ERRORS,
    ConsentRefused,
    SessionRefused,
    StoreUnavailable,
)
from broker.sessions.hub_core import Member, Role

if TYPE_CHECKING:
    from broker.sessions.hub import LiveSession

# The agent decides the timeout (consent_timeout_seconds, 120 s by default); this only
# bounds an agent that never answers.
CONSENT_WAIT_MAX: Final = 900.0
CONSENT_ANSWER_MAX: Final = 4096
#: The hub's roles as the end user is asked about them.
ASKED_ROLE: Final[dict[Role, ConsentRole]] = {
    "owner": "owner",
    "joiner": "participant",
    "observer": "observer",
}


class _AnswerLines:
    """Reads the agent's answer lines, each at most CONSENT_ANSWER_MAX bytes."""

    def __init__(self, process: asyncssh.SSHClientProcess[bytes]) -> None:
        self._process = process
        self._buffer = bytearray()

    async def next(self) -> ConsentAnswer | None:
        """The next answer, or None when the channel closed without one; raises
        MessageError for an answer that is not one."""
        while b"\n" not in self._buffer:
            if len(self._buffer) > CONSENT_ANSWER_MAX:
                raise MessageError("consent answer is too long")
            chunk = await self._process.stdout.read(CONSENT_ANSWER_MAX + 1)
            if not chunk:
                if not self._buffer.strip():
                    return None
                break  # an older agent's answer may end without a newline
            self._buffer += chunk
        line, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer = bytearray(rest)
        return ConsentAnswer.parse(line)


class ConsentGrant:
    """An approval in force: the open ``sl:consent`` channel of one person."""

    def __init__(
        self,
        answer: ConsentAnswer,
        process: asyncssh.SSHClientProcess[bytes] | None = None,
        lines: _AnswerLines | None = None,
    ) -> None:
        self.answer = answer
        self._process = process
        self._lines = lines

    async def withdrawn(self) -> ConsentAnswer | None:
        """Wait until the end user withdraws the approval (their denial), or None when the
        channel closes first (the person left, or the agent went away)."""
        if self._lines is None:
            return None
        try:
            later = await self._lines.next()
        except (asyncssh.Error, OSError, MessageError):
            return None
        return later if later is not None and not later.allows else None

    @property
    def held(self) -> bool:
        """True while the channel is open (an approval the end user may withdraw)."""
        return self._process is not None

    def close(self) -> None:
        """The person left: the agent forgets the approval."""
        if self._process is not None:
            self._process.close()
            self._process = None


async def ask_consent(
    services: Services,
    conn: asyncssh.SSHClientConnection,
    env: SessionEnv,
    *,
    source: str,
    marker: Callable[[str], None] | None = None,
) -> ConsentGrant:
    """Ask the end user about ``env.staff`` entering ``env.session`` as ``env.role``
    through ``sl:consent``; refuses (audited, and a transcript marker when ``marker`` is
    given) unless approved."""
    sid, role = env.session, env.asked_role
    answer: ConsentAnswer | None = None
    grant: ConsentGrant | None = None
    channel_env: dict[bytes | str, bytes | str] = dict(env.to_env().items())
    process: asyncssh.SSHClientProcess[bytes] | None = None
    try:
        async with asyncio.timeout(CONSENT_WAIT_MAX):
            process = await conn.create_process(
                CONSENT_COMMAND, env=channel_env, encoding=None, stdin=asyncssh.DEVNULL
            )
            lines = _AnswerLines(process)
            answer = await lines.next()
        if answer is None:
            raise MessageError("the agent closed the consent channel without an answer")
        if answer.decision == "approved":
            grant = ConsentGrant(answer, process, lines)
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
    finally:
        if grant is None and process is not None:
            process.close()
    try:
        await record_decision(services, env, answer, source=source)
    except DB_ERRORS:
        if grant is not None:
            grant.close()
        raise StoreUnavailable(AUDIT_STORE_UNAVAILABLE) from None
    except BaseException:
        if grant is not None:
            grant.close()
        raise
    if marker is not None:
        marker(decision_marker(env, answer))
    whose = "the session" if role == "owner" else f"your request to {_VERB[role]} {sid}"
    if answer.decision == "denied":
        raise ConsentRefused(f"the end user denied {whose}; ask them, then try again")
    if answer.decision == "timeout":
        raise ConsentRefused(
            f"the end user did not answer in time, so {whose} was refused; ask them to "
            "approve it (secondline-agent approve) and try again",
            code="consent_timeout",
        )
    return grant if grant is not None else ConsentGrant(answer)


_VERB: Final[dict[ConsentRole, str]] = {
    "owner": "open",
    "participant": "join session",
    "observer": "observe session",
}


def decision_marker(env: SessionEnv, answer: ConsentAnswer, *, withdrawn: bool = False) -> str:
    """The transcript marker of a decision about ``env.staff``."""
    what = "withdrawn" if withdrawn else answer.decision
    by = f" by {answer.by}" if answer.by else ""
    if env.asked_role == "owner" and not withdrawn:
        return f"consent {what}{by}"
    return f"consent {what} for {env.staff} ({env.asked_role}){by}"


async def record_decision(
    services: Services,
    env: SessionEnv,
    answer: ConsentAnswer,
    *,
    source: str,
    withdrawn: bool = False,
) -> None:
    """Audit the decision; the owner's also goes to the session row. Raises the
    database's errors."""
    await services.audit.record(
        actor=env.staff,
        action="session.consent",
        target=env.session,
        outcome="ok" if answer.allows and not withdrawn else "denied",
        source=source,
        details={
            "decision": "withdrawn" if withdrawn else answer.decision,
            "by": answer.by,
            "staff": env.staff,
            "role": env.asked_role,
        },
    )
    if env.asked_role == "owner" and not withdrawn:
        async with services.db() as db, db.begin():
            await store.update_session(
                db,
                env.session,
                consent=answer.decision,
                consent_by=answer.by,
                consent_at=answer.at,
            )


END_CONSENT_WITHDRAWN: Final = "consent withdrawn"
#: Runs a write until the database takes it (``Finisher.until_stored`` of the session).
StoreRetry = Callable[[str, str, Callable[[], Awaitable[None]]], Awaitable[object]]


class Grants:
    """The approvals in force on this node, one per member who needed one: watched for a
    withdrawal, closed when the member leaves."""

    def __init__(
        self,
        services: Services,
        spawn: Callable[[Awaitable[None], str], None],
        until_stored: StoreRetry,
    ) -> None:
        self._services = services
        self._spawn = spawn
        self._until_stored = until_stored
        self._grants: dict[tuple[str, int], ConsentGrant] = {}

    def keep(
        self, live: LiveSession, member: Member, env: SessionEnv, grant: ConsentGrant, source: str
    ) -> None:
        """Hold ``member``'s approval until they leave or the end user withdraws it."""
        if not grant.held:
            return  # not asked (unattended), or an older agent that closed the channel
        key = (live.session_id, member.pid)
        self._grants[key] = grant

        def cut_off() -> None:
            current = live.core.member(member.pid)
            if current is None:
                return
            if current.role == "owner":
                live.end(
                    END_CONSENT_WITHDRAWN,
                    code="consent_withdrawn",
                    message="the end user withdrew their approval, so the session ended",
                )
            else:
                live.drop(
                    member.pid,
                    "the end user withdrew their approval, so your access to the session ended",
                )

        def record(later: ConsentAnswer) -> Awaitable[object]:
            write = functools.partial(
                record_decision, self._services, env, later, source=source, withdrawn=True
            )
            return self._until_stored(env.session, f"the withdrawal for {env.staff}", write)

        def mark(later: ConsentAnswer) -> None:
            live.marker(decision_marker(env, later, withdrawn=True))

        watch = watch_grant(grant, mark=mark, cut_off=cut_off, record=record)
        self._spawn(watch, f"watching the end user's approval of {env.staff}")

    def release(self, session_id: str, pid: int) -> None:
        """The member left: the agent forgets their approval."""
        grant = self._grants.pop((session_id, pid), None)
        if grant is not None:
            grant.close()


async def watch_grant(
    grant: ConsentGrant,
    *,
    mark: Callable[[ConsentAnswer], None],
    cut_off: Callable[[], None],
    record: Callable[[ConsentAnswer], Awaitable[object]],
) -> None:
    """Until the person leaves (the grant is closed): on a withdrawal, mark it in the
    transcript, cut the person off at once, then audit it (retried while the database is
    down: the cut-off never waits for it)."""
    try:
        later = await grant.withdrawn()
        if later is None:
            return
        # The marker first: cutting the owner off ends the session and its transcript.
        mark(later)
        cut_off()
        await record(later)
    finally:
        grant.close()
