"""The console reads and writes through the REST API's own handlers, in-process.

Pages do not query other domains' tables: they call the same route handler a REST client
would reach, with the signed-in person as principal, the same scope check and the same body
validation. So object-level authorisation (who may see which ticket, session or transcript)
lives in one place, the API, and the console can never show more than the API would.
Results come back in their JSON form (what ``/api/v1/openapi.json`` documents).

The console sees the API only through :class:`ApiCalls`: ``create_app`` hands it the API's
in-process caller (``broker.api.in_process.ApiIndex``), so the console never imports the
layer above it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from aiohttp import web

from broker.console.session_store import ConsoleUser

Json = None | bool | int | float | str | list["Json"] | dict[str, "Json"]


def json_list(data: Json) -> list[dict[str, Json]]:
    """The objects of a JSON list (an answer of a ``many=True`` route); [] for anything else."""
    return [item for item in data if isinstance(item, dict)] if isinstance(data, list) else []


def json_dict(data: Json) -> dict[str, Json]:
    """A JSON object, or {} for anything else."""
    return data if isinstance(data, dict) else {}


class ApiCalls(Protocol):
    """The REST routes, by method and path template (e.g. ``("GET", "/tickets/{id}")``)."""

    def has(self, method: str, path: str) -> bool: ...

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
        ...
