"""Requests an agent sends outside its tunnel (``POST /agent/v1/help``), signed with its key.

:func:`verify_agent_request` is what such a handler calls first: it returns the agent the
request comes from, or raises (401/403, audited). The signature covers method, path,
timestamp and the body's SHA-256 (docs/protocol.md); timestamps more than 300 s off are
refused, and a signature seen before within that window is refused as a replay.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Final

from aiohttp import web

from agent.errors import MessageError, SignatureError
from agent.protocol import (
    AGENT_ID_HEADER,
    AGENT_ID_RE,
    SIGNATURE_HEADER,
    SIGNATURE_MAX_SKEW_SECONDS,
    TIMESTAMP_HEADER,
    Ed25519PublicKey,
)
from agent.signing import verify_request
from broker.agents import agent_store
from broker.agents.agent_store import AgentRecord
from broker.errors import AuthError, ForbiddenError, InputError
from broker.services import Services

#: Largest body a signed agent request may carry.
SIGNED_BODY_MAX: Final = 64 * 1024


@dataclass
class ReplayGuard:
    """Signatures accepted in the last skew window; pure, the caller passes ``now``."""

    window: float = 2.0 * SIGNATURE_MAX_SKEW_SECONDS
    max_entries: int = 100_000
    _seen: OrderedDict[str, float] = field(default_factory=OrderedDict)

    def first_use(self, signature: str, now: float) -> bool:
        """True the first time ``signature`` is seen within the window (and remember it)."""
        while self._seen:
            oldest, at = next(iter(self._seen.items()))
            if at + self.window >= now and len(self._seen) < self.max_entries:
                break
            del self._seen[oldest]
        if signature in self._seen:
            return False
        self._seen[signature] = now
        return True


REPLAY_GUARD: Final = web.AppKey("agent_replay_guard", ReplayGuard)


async def _refuse(services: Services, request: web.Request, agent_id: str, reason: str) -> None:
    await services.audit.record(
        actor=f"agent:{agent_id}" if agent_id else "anonymous",
        action="agent.signed_request",
        target=request.path,
        outcome="denied",
        source=request.remote or "",
        details={"reason": reason},
    )


async def _too_large(services: Services, request: web.Request, agent_id: str) -> InputError:
    await _refuse(services, request, agent_id, "body too large")
    return InputError(
        f"the request body is larger than {SIGNED_BODY_MAX} bytes, the limit for signed agent "
        "requests; send a shorter request",
        code="body_too_large",
        status=413,
    )


async def verify_agent_request(request: web.Request, services: Services) -> AgentRecord:
    """The enrolled, non-revoked agent that signed ``request``, or an audited refusal.

    Reads the body (at most 64 KiB; ``await request.read()`` returns it again afterwards).
    Raises AuthError (401) for a missing or bad signature or timestamp, ForbiddenError (403)
    for an unknown or revoked agent, InputError (413) for an oversized body.
    """
    agent_id = request.headers.get(AGENT_ID_HEADER, "")
    if AGENT_ID_RE.fullmatch(agent_id) is None:
        await _refuse(services, request, "", "missing or malformed agent id header")
        raise AuthError(
            f"sign the request: the {AGENT_ID_HEADER} header must name the agent id",
            code="signature_invalid",
        )
    if request.content_length is not None and request.content_length > SIGNED_BODY_MAX:
        raise await _too_large(services, request, agent_id)
    try:
        # A chunked body has no length to check first; aiohttp stops reading it at the
        # app's body limit (1 MiB), which must be refused and audited like the rest.
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise await _too_large(services, request, agent_id) from None
    if len(body) > SIGNED_BODY_MAX:
        raise await _too_large(services, request, agent_id)
    async with services.db() as db:
        record = await agent_store.get_agent(db, agent_id)
    if record is None or record.revoked:
        await _refuse(services, request, agent_id, "unknown agent" if record is None else "revoked")
        raise ForbiddenError(
            "this agent is not enrolled here or was revoked; enroll it again with a new token",
            code="agent_refused",
        )
    signature = request.headers.get(SIGNATURE_HEADER)
    now = services.clock().timestamp()
    try:
        verify_request(
            Ed25519PublicKey.parse(record.public_key),
            timestamp=request.headers.get(TIMESTAMP_HEADER),
            signature=signature,
            body=body,
            now=now,
            path=request.path,
        )
    except (SignatureError, MessageError) as exc:
        await _refuse(services, request, agent_id, str(exc))
        raise AuthError(
            f"{exc}; check the machine's clock and the agent's enrollment",
            code="signature_invalid",
        ) from None
    guard = request.app.get(REPLAY_GUARD)
    if guard is not None and signature is not None and not guard.first_use(signature, now):
        await _refuse(services, request, agent_id, "replayed signature")
        raise AuthError(
            "this signed request was sent before; sign each request anew", code="signature_replayed"
        )
    return record
