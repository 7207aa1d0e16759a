"""Route declarations that feed both aiohttp and the OpenAPI document, so the document
always describes what the server really does."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from broker.auth.principal import Principal
from broker.auth.scopes import ROLE_SCOPES
from broker.errors import ForbiddenError, InputError
from broker.services import SERVICES, Services
from broker.web.auth import authenticate

API_PREFIX: Final = "/api/v1"

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class QueryParam:
    name: str
    kind: str = "string"  # OpenAPI type
    description: str = ""


@dataclass
class ApiContext:
    request: web.Request
    services: Services
    principal: Principal
    body: BaseModel | None

    def payload(self, model: type[M]) -> M:
        assert isinstance(self.body, model)
        return self.body

    def path(self, name: str) -> str:
        return self.request.match_info[name]

    def query(self, name: str) -> str | None:
        return self.request.query.get(name)

    def query_int(self, name: str, *, low: int, high: int) -> int | None:
        raw = self.request.query.get(name)
        if raw is None:
            return None
        if not raw.isdigit() or not low <= int(raw) <= high:
            raise InputError(f"query parameter {name} must be a number from {low} to {high}")
        return int(raw)

    @property
    def source(self) -> str:
        return self.request.remote or ""


Result = BaseModel | Sequence[BaseModel] | dict[str, object] | None
Handler = Callable[[ApiContext], Awaitable[Result]]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    scope: str | None
    body: type[BaseModel] | None
    response: type[BaseModel] | None
    many: bool
    status: int
    query: tuple[QueryParam, ...]
    tag: str
    public: bool


@dataclass
class ApiRouter:
    tag: str
    routes: list[Route] = field(default_factory=list)

    def route(
        self,
        method: str,
        path: str,
        *,
        summary: str,
        scope: str | None = "read",
        body: type[BaseModel] | None = None,
        response: type[BaseModel] | None = None,
        many: bool = False,
        status: int = 200,
        query: Sequence[QueryParam] = (),
        public: bool = False,
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.routes.append(
                Route(
                    method,
                    path,
                    handler,
                    summary,
                    scope,
                    body,
                    response,
                    many,
                    status,
                    tuple(query),
                    self.tag,
                    public,
                )
            )
            return handler

        return register


def _serialize(result: Result) -> object:
    if result is None:
        return None
    if isinstance(result, BaseModel):
        return result.model_dump(mode="json")
    if isinstance(result, dict):
        return result
    return [item.model_dump(mode="json") for item in result]


async def _read_body(request: web.Request, model: type[BaseModel]) -> BaseModel:
    if request.content_type != "application/json":
        raise InputError("send the request body as JSON (Content-Type: application/json)")
    raw = await request.read()
    try:
        data = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError):
        raise InputError("the request body is not valid JSON", code="malformed_json") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise InputError(f"{where}: {first['msg']}", code="validation_failed", status=422) from None


def scope_refusal(role: str, scope: str) -> str:
    """Why a token lacks ``scope``: the role (no token of it ever holds the scope, so a new
    token would not help) or only the token (a token of the role may carry it)."""
    if not role or any(scope in held for r, held in ROLE_SCOPES.items() if r == role):
        return (
            f"this needs the {scope!r} scope, which your token does not carry; "
            "ask an admin for a token with it"
        )
    roles = ", ".join(r for r, scopes in ROLE_SCOPES.items() if scope in scopes) or "no role"
    needs = f"it needs the {scope!r} scope, which only {roles} hold"
    if role == "admin":
        return (
            "admins manage the broker but do not work tickets, sessions or the knowledge "
            f"base ({needs}); do this as a staff account"
        )
    return f"the role {role} may not do this ({needs})"


def _wrap(route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        services = request.app[SERVICES]
        principal = await authenticate(request, services, public=route.public)
        if route.scope is not None and route.scope not in principal.scopes:
            await services.audit.record(
                actor=principal.name,
                action="api.scope_refused",
                target=f"{route.method} {route.path}",
                outcome="denied",
                source=request.remote or "",
                details={"needed": route.scope},
            )
            raise ForbiddenError(
                scope_refusal(principal.role or "", route.scope), code="scope_missing"
            )
        body = await _read_body(request, route.body) if route.body is not None else None
        ctx = ApiContext(request, services, principal, body)
        result = await route.handler(ctx)
        if route.status == 204:
            return web.Response(status=204)
        return web.json_response(_serialize(result), status=route.status)

    return handle


def add_routes(app: web.Application, routers: Sequence[ApiRouter]) -> None:
    for router in routers:
        for route in router.routes:
            app.router.add_route(route.method, API_PREFIX + route.path, _wrap(route))
