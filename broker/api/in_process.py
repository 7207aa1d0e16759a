"""The REST API's handlers called in-process, for the console (``broker.console.api_calls``).

Pages do not query other domains' tables: they call the same route handler a REST client
would reach, with the signed-in person as principal, the same scope check and the same body
validation. So object-level authorisation (who may see which ticket, session or transcript)
lives in one place, the API, and the console can never show more than the API would.
Results come back in their JSON form (what ``/api/v1/openapi.json`` documents)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from aiohttp import web
from pydantic import BaseModel, ValidationError

from broker.api.routing import ApiContext, ApiRouter, Route
from broker.console.api_calls import Json
from broker.console.session_store import ConsoleUser
from broker.errors import ForbiddenError, InputError, NotFoundError
from broker.services import SERVICES


@dataclass
class _InternalContext(ApiContext):
    """An ApiContext whose path and query come from the console, not from the page's URL."""

    path_params: Mapping[str, str] = field(default_factory=dict)
    query_params: Mapping[str, str] = field(default_factory=dict)

    def path(self, name: str) -> str:
        return self.path_params[name]

    def query(self, name: str) -> str | None:
        return self.query_params.get(name)

    def query_int(self, name: str, *, low: int, high: int) -> int | None:
        raw = self.query_params.get(name)
        if raw is None:
            return None
        if not raw.isdigit() or not low <= int(raw) <= high:
            raise InputError(f"query parameter {name} must be a number from {low} to {high}")
        return int(raw)


def _to_json(result: object) -> Json:
    if result is None:
        return None
    if isinstance(result, BaseModel):
        dumped: Json = json.loads(result.model_dump_json())
        return dumped
    if isinstance(result, dict):
        loaded: Json = json.loads(json.dumps(result, default=str))
        return loaded
    if isinstance(result, Sequence):
        return [_to_json(item) for item in result]
    raise TypeError(f"an API handler returned {type(result).__name__}")


@dataclass(frozen=True)
class ApiIndex:
    """The REST routes by (method, path template), e.g. ("GET", "/tickets/{id}"); an
    :class:`broker.console.api_calls.ApiCalls`, handed to the console by ``create_app``."""

    routes: Mapping[tuple[str, str], Route]

    @classmethod
    def of(cls, routers: Sequence[ApiRouter]) -> ApiIndex:
        return cls({(r.method, r.path): r for router in routers for r in router.routes})

    def has(self, method: str, path: str) -> bool:
        return (method, path) in self.routes

    async def call(
        self,
        request: web.Request,
        user: ConsoleUser,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
        body: Mapping[str, object] | None = None,
    ) -> Json:
        """Run the handler of ``method path`` as ``user``; BrokerErrors propagate as raised."""
        route = self.routes.get((method, path))
        if route is None:
            raise NotFoundError(
                f"this part of the broker is not available yet ({method} /api/v1{path})",
                code="not_available",
            )
        services = request.app[SERVICES]
        principal = user.principal()
        if route.scope is not None and route.scope not in principal.scopes:
            await services.audit.record(
                actor=principal.name,
                action="api.scope_refused",
                target=f"{method} {path}",
                outcome="denied",
                source=request.remote or "",
                details={"needed": route.scope, "via": "console"},
            )
            raise ForbiddenError(
                f"this needs the {route.scope!r} scope, which your role does not carry",
                code="scope_missing",
            )
        model: BaseModel | None = None
        if route.body is not None:
            try:
                model = route.body.model_validate(dict(body or {}))
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"]) or "body"
                raise InputError(
                    f"{where}: {first['msg']}", code="validation_failed", status=422
                ) from None
        ctx = _InternalContext(
            request,
            services,
            principal,
            model,
            path_params=dict(params or {}),
            query_params=dict(query or {}),
        )
        return _to_json(await route.handler(ctx))
