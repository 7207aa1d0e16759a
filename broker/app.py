"""The aiohttp application factory: storage, services, the REST API and every feature."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Final

from aiohttp import web
from sqlalchemy.exc import DBAPIError, OperationalError

from broker.agents import feature as agents_feature
from broker.api import agent_packages as agent_packages_api
from broker.api import agents as agents_api
from broker.api import audit as audit_api
from broker.api import connectors as connectors_api
from broker.api import customers as customers_api
from broker.api import directories as directories_api
from broker.api import kb_articles as kb_articles_api
from broker.api import kb_search as kb_search_api
from broker.api import nodes as nodes_api
from broker.api import sessions as sessions_api
from broker.api import staff_accounts as staff_accounts_api
from broker.api import staff_tokens as staff_tokens_api
from broker.api import tickets as tickets_api
from broker.api.errors import error_middleware
from broker.api.in_process import ApiIndex
from broker.api.openapi import build_openapi
from broker.api.routing import ApiRouter, add_routes
from broker.audit.log import AuditLog
from broker.cluster import feature as cluster_feature
from broker.cluster.ops_endpoints import DATABASE_PROBE
from broker.config import BrokerConfig
from broker.connectors import feature as connectors_feature
from broker.console import feature as console_feature
from broker.console import oidc_login
from broker.db.engine import create_engine, session_factory
from broker.directory import feature as directory_feature
from broker.errors import error_response
from broker.kb import feature as kb_feature
from broker.keys import BrokerKeys, load_keys
from broker.services import SERVICES, Services
from broker.sessions import feature as sessions
from broker.sessions.runtime import SESSIONS
from broker.ssh_gateway import feature as ssh_gateway_feature
from broker.tickets import feature as tickets_feature
from broker.web import feature as web_feature

log = logging.getLogger(__name__)

CONFIG: Final = web.AppKey("config", BrokerConfig)
DB_SCHEMA: Final = web.AppKey("db_schema", str)

# A feature adds its routes, app keys and cleanup contexts to the app.
Feature = Callable[[web.Application], None]


def broker_version() -> str:
    try:
        return version("secondline")
    except PackageNotFoundError:
        return "0.0.0"


def api_routers() -> list[ApiRouter]:
    """Every router of /api/v1; each domain adds its own here."""
    return [
        staff_accounts_api.router,
        staff_tokens_api.router,
        customers_api.router,
        audit_api.router,
        agents_api.router,
        agent_packages_api.router,
        kb_articles_api.router,
        kb_search_api.router,
        tickets_api.router,
        sessions_api.router,
        connectors_api.router,
        directories_api.router,
        nodes_api.router,
    ]


def _end_account_sessions(app: web.Application, names: set[str]) -> None:
    """A directory took access from ``names``: their sessions here end at once (other nodes'
    periodic account check ends theirs within seconds)."""
    runtime = app.get(SESSIONS)
    if runtime is not None:
        for name in names:
            runtime.manager.end_account_sessions(name)


def features() -> list[Feature]:
    """Every feature beyond the REST API (agent tunnel, SSH gateway, console, ...), each
    handed what it needs from above: no feature imports the API or this module."""
    console_api = ApiIndex.of(api_routers())
    return [
        # First: a cluster node whose name is taken refuses before it touches any state.
        cluster_feature.setup,
        agents_feature.setup,
        tickets_feature.setup,
        kb_feature.setup,
        connectors_feature.setup,
        lambda app: directory_feature.setup(app, end_sessions=_end_account_sessions),
        lambda app: console_feature.setup(app, api=console_api),
        oidc_login.setup,
        sessions.setup,
        # After the sessions: the gateway starts with the session manager it hands sessions to.
        ssh_gateway_feature.setup,
        web_feature.setup,
    ]


async def _services_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    engine = create_engine(
        config.db_url, schema=app.get(DB_SCHEMA) or config.database_schema or None
    )
    db = session_factory(engine)
    keys: BrokerKeys = load_keys(config.keys_dir, config.tls_cert_path)
    audit = AuditLog(db, keys.audit_key, config.data_dir / "audit.head")
    app[SERVICES] = Services(config=config, engine=engine, db=db, audit=audit, keys=keys)
    try:
        yield
    finally:
        # Last out (its context is the first in): every feature has stopped refusing.
        await app[SERVICES].anonymous.close()
        await engine.dispose()


@web.middleware
async def store_unavailable_middleware(
    request: web.Request, handler: Callable[..., object]
) -> web.StreamResponse:
    try:
        result = await handler(request)  # type: ignore[misc]
        assert isinstance(result, web.StreamResponse)
        return result
    except (OperationalError, DBAPIError, ConnectionError) as exc:
        log.error("database unavailable: %s", type(exc).__name__)
        return error_response(
            503,
            "store_unavailable",
            "audit store unavailable: the broker cannot reach its database; try again "
            "shortly, and tell an admin if it lasts",
        )


@web.middleware
async def security_headers_middleware(
    request: web.Request, handler: Callable[..., object]
) -> web.StreamResponse:
    response = await handler(request)  # type: ignore[misc]
    assert isinstance(response, web.StreamResponse)
    headers = response.headers
    headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "no-referrer")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Cache-Control", "no-store")
    return response


def create_app(
    config: BrokerConfig, *, db_schema: str | None = None, extra: Sequence[Feature] | None = None
) -> web.Application:
    app = web.Application(
        client_max_size=config.max_body_bytes,
        middlewares=[security_headers_middleware, store_unavailable_middleware, error_middleware],
    )
    app[CONFIG] = config
    if db_schema:
        app[DB_SCHEMA] = db_schema
    app.cleanup_ctx.append(_services_ctx)
    routers = api_routers()
    add_routes(app, routers)
    document: list[dict[str, object]] = []

    async def openapi(_request: web.Request) -> web.Response:
        # Built on the first request, not at start: it walks every model's JSON schema,
        # which costs every broker start (and every in-process app of the tests) for a
        # document few clients ask for.
        if not document:
            document.append(build_openapi(routers, broker_version()))
        return web.json_response(document[0])

    async def health(request: web.Request) -> web.Response:
        # The process answers (its loop turns) and its database answers, asked on the
        # probe's own connection (broker.cluster.readiness), never one of the pool: a herd
        # of agent lookups holding every pooled connection makes the broker busy, and a
        # health check that queued behind it would time out and call it dead.
        if not await request.app[DATABASE_PROBE].database_up():
            return web.json_response({"status": "unavailable", "database": "down"}, status=503)
        return web.json_response({"status": "ok", "version": broker_version()})

    app.router.add_get("/api/v1/openapi.json", openapi)
    app.router.add_get("/healthz", health)
    for feature in [*features(), *(extra or ())]:
        feature(app)
    return app
