"""``POST /agent/v1/enroll``: a new agent trades an enrollment token for its identity.

Everything the request carries is checked before the database is touched (token syntax,
that the token names this broker's certificate, name, key, facts); then one transaction
claims a use of the token and adds the agent, so a refusal for any reason (a duplicate
name, a lost race for the last use) leaves the token and the agents as they were.
Every refusal is audited and answered ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

import hmac
import logging
from urllib.parse import urlsplit, urlunsplit

from aiohttp import web
from cryptography.hazmat.primitives import serialization

from agent.enrollment import (
    REQUEST_MAX_BYTES,
    EnrollmentAnswer,
    EnrollmentRequest,
    EnrollmentToken,
)
from agent.errors import MessageError, TokenError
from agent.protocol import TUNNEL_PATH, Ed25519PublicKey, load_json_object
from broker.agents import agent_store
from broker.agents.facts_policy import FactsRefused, clean_facts
from broker.agents.tokens import claim_token
from broker.agents.tunnel_runtime import TUNNEL_RUNTIME
from broker.errors import BrokerError, ForbiddenError, InputError
from broker.rules import InvalidName, parse_agent_name
from broker.services import SERVICES, Services

log = logging.getLogger(__name__)


def tunnel_url(public_url: str) -> str:
    """``wss://host:port/agent/v1/tunnel`` for the broker's ``https://host:port``."""
    parts = urlsplit(public_url)
    return urlunsplit(("wss", parts.netloc, TUNNEL_PATH, "", ""))


def broker_ssh_key(services: Services) -> Ed25519PublicKey:
    line = services.keys.agent_client_key.export_public_key().decode("ascii").strip()
    return Ed25519PublicKey.parse(line, "the broker's agent key")


def release_public_key(services: Services) -> Ed25519PublicKey:
    """The release key's public half, which the agent pins to check self-updates."""
    raw = services.keys.release_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return Ed25519PublicKey(raw=raw)


def _token_from(obj: dict[str, object]) -> EnrollmentToken:
    try:
        return EnrollmentToken.parse(obj.get("token"))
    except TokenError as exc:
        raise InputError(str(exc), code="token_malformed") from None


def parse_request(body: bytes, fingerprint: str) -> tuple[EnrollmentRequest, dict[str, object]]:
    """The checked request and the facts to store, or the error to answer (pure)."""
    if len(body) > REQUEST_MAX_BYTES:
        raise InputError(
            f"the enrollment request is larger than {REQUEST_MAX_BYTES} bytes",
            code="request_too_large",
            status=413,
        )
    try:
        obj = load_json_object(body, "enrollment request", max_bytes=REQUEST_MAX_BYTES)
    except MessageError as exc:
        raise InputError(str(exc), code="malformed_request") from None
    token = _token_from(obj)
    if not hmac.compare_digest(token.fingerprint, fingerprint):
        raise ForbiddenError(
            "this enrollment token was made by another broker (its certificate fingerprint "
            "differs); enroll with the broker that made it",
            code="token_other_broker",
        )
    if "facts" in obj:
        clean_facts(obj["facts"])  # a precise reason for bad facts before anything else
    try:
        request = EnrollmentRequest.parse(body)
        parse_agent_name(request.name)
    except MessageError as exc:
        raise InputError(str(exc), code="invalid_request", status=422) from None
    except InvalidName as exc:
        raise InputError(str(exc), code="invalid_name", status=422) from None
    return request, clean_facts(request.facts.to_dict())


async def enroll_handler(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    source = request.remote or ""
    token_id = ""
    name = ""
    try:
        if request.content_type != "application/json":
            raise InputError(
                "send the enrollment request as JSON (Content-Type: application/json)",
                code="unsupported_media_type",
                status=415,
            )
        if request.content_length is not None and request.content_length > REQUEST_MAX_BYTES:
            raise InputError(
                f"the enrollment request is larger than {REQUEST_MAX_BYTES} bytes",
                code="request_too_large",
                status=413,
            )
        body = await request.read()
        parsed, facts = parse_request(body, services.keys.tls_fingerprint)
        token_id, name = parsed.token.token_id, parsed.name
        now = services.clock()
        async with services.db() as db, db.begin():
            claimed = await claim_token(db, parsed.token, now)
            record = await agent_store.enroll_agent(
                db,
                claimed,
                name=parsed.name,
                public_key=parsed.public_key.serialize(),
                facts=facts,
                now=now,
            )
    except (BrokerError, FactsRefused) as exc:
        await services.audit.record(
            actor=f"token:{token_id}" if token_id else "anonymous",
            action="agent.enroll",
            target=name,
            outcome="denied",
            source=source,
            details={"reason": exc.code, "message": exc.message[:200]},
        )
        log.warning("enrollment from %s refused: %s", source, exc.code)
        raise
    await services.audit.record(
        actor=f"token:{token_id}",
        action="agent.enroll",
        target=record.id,
        source=source,
        details={
            "name": record.name,
            "customer": record.customer,
            "consent": record.consent,
            "key": record.key_fingerprint,
        },
    )
    log.info("agent %s (%s) enrolled for %s", record.id, record.name, record.customer)
    runtime = request.app.get(TUNNEL_RUNTIME)
    if runtime is not None:
        runtime.enrollments += 1
    answer = EnrollmentAnswer(
        agent_id=record.id,
        name=record.name,
        customer=record.customer,
        consent=record.consent,
        broker_ssh_key=broker_ssh_key(services),
        tunnel_url=tunnel_url(services.config.public_url),
        tls_cert_pem=services.keys.tls_cert_pem.decode("ascii"),
        release_key=release_public_key(services),
    )
    return web.Response(body=answer.serialize(), content_type="application/json")
