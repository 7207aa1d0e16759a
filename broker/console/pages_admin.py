"""The small admin view: agents with their online state, staff, tokens, the ticket-system
connectors with their health, and the audit log with the result of verifying its chain.
Read through the REST API with the admin's rights."""

from __future__ import annotations

from aiohttp import web

from broker.console.api_calls import Json, json_list
from broker.console.pages import Page, page_handler
from broker.errors import BrokerError, ForbiddenError


async def _maybe(page: Page, path: str, **query: str) -> Json:
    """An API read that may not exist yet in this build, or may be refused: None then."""
    if not page.state.api.has("GET", path):
        return None
    try:
        return await page.api("GET", path, query=query or None)
    except BrokerError:
        return None


async def admin_page(page: Page) -> web.StreamResponse:
    if page.user.role != "admin":
        raise ForbiddenError("the administration view is for admins", code="forbidden")
    staff = json_list(await _maybe(page, "/users"))
    api_tokens: list[dict[str, Json]] = []
    for person in staff:
        name = str(person.get("name") or "")
        try:
            rows = await page.api("GET", "/users/{name}/tokens", params={"name": name})
        except BrokerError:
            continue
        api_tokens.extend(t for t in json_list(rows) if not t.get("revoked_at"))
    return page.render(
        "admin.html",
        agents=json_list(await _maybe(page, "/agents")),
        staff=staff,
        enrollment_tokens=json_list(await _maybe(page, "/enrollment-tokens")),
        api_tokens=api_tokens,
        connectors=json_list(await _maybe(page, "/connectors")),
        audit=json_list(await _maybe(page, "/audit", limit="50")),
        verify=await _maybe(page, "/audit/verify"),
    )


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/console/admin", page_handler(admin_page))
