"""Live sessions, the terminal page and transcript playback.

The terminal page only carries what to connect to (ticket, machine, mode, session); the
browser then asks ``POST /api/v1/sessions/terminal-tickets`` (cookie + CSRF header) for a
one-time ticket and sends it as the first WebSocket message, so no credential ever appears in
a URL. Who may open, join or watch is decided by the sessions API, not here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from aiohttp import web

from broker.console.api_calls import Json, json_dict, json_list
from broker.console.messages import CODE_MESSAGES
from broker.console.pages import Page, page_handler
from broker.errors import BrokerError, InputError, NotFoundError
from broker.rules import InvalidName, parse_agent_ref, parse_session_id, parse_ticket_id

MODES: Final = ("open", "join", "observe")
TERMINAL_WS: Final = "/console/ws/terminal"
TICKETS_API: Final = "/api/v1/sessions/terminal-tickets"


LIVE_DETAIL_MAX: Final = 50


async def live_sessions(page: Page) -> list[dict[str, Json]]:
    """Running sessions the person may see, with who is in each (the list API has no
    participants; each session's detail has them)."""
    if not page.state.api.has("GET", "/sessions"):
        return []
    sessions = json_list(await page.api("GET", "/sessions", query={"live": "1"}))
    for session in sessions[:LIVE_DETAIL_MAX]:
        try:
            detail = json_dict(
                await page.api("GET", "/sessions/{id}", params={"id": str(session.get("id"))})
            )
        except BrokerError:
            continue
        session["participants"] = detail.get("live_participants") or []
    return sessions


async def render_sessions_rows(page: Page, _query: Mapping[str, str]) -> dict[str, str]:
    sessions = await live_sessions(page)
    html = page.state.renderer.render(
        page.lang, "_live_rows.html", {"sessions": sessions, "user": page.user}
    )
    return {"live-rows": html, "live-count": str(len(sessions))}


async def sessions_page(page: Page) -> web.StreamResponse:
    return page.render(
        "sessions.html",
        sessions=await live_sessions(page),
        available=page.state.api.has("GET", "/sessions"),
    )


def _checked(query: Mapping[str, str]) -> dict[str, str]:
    """The terminal's target from the query string, each part checked against its syntax."""
    mode = query.get("mode", "open")
    if mode not in MODES:
        raise InputError("mode is open, join or observe", code="validation_failed")
    out = {"mode": mode}
    try:
        if mode == "open":
            out["ticket"] = query.get("ticket", "")
            parse_ticket_id(out["ticket"])
            out["agent"] = query.get("agent", "")
            parse_agent_ref(out["agent"])
        else:
            out["session"] = query.get("session", "")
            parse_session_id(out["session"])
    except InvalidName as exc:
        raise InputError(str(exc), code="validation_failed") from None
    return out


async def terminal_page(page: Page) -> web.StreamResponse:
    target = _checked(page.request.query)
    session: dict[str, Json] = {}
    if "session" in target and page.state.api.has("GET", "/sessions/{id}"):
        session = json_dict(
            await page.api("GET", "/sessions/{id}", params={"id": target["session"]})
        )
        ticket = str(session.get("ticket") or "")
        if ticket:
            target["ticket"] = ticket
    agent_name = ""
    if target.get("agent"):
        try:
            agent = json_dict(
                await page.api("GET", "/agents/{ref}", params={"ref": target["agent"]})
            )
            agent_name = str(agent.get("name") or "")
        except BrokerError:
            agent_name = target["agent"]
    return page.render(
        "terminal.html",
        target=target,
        session=session,
        agent_name=agent_name or str(session.get("agent_name") or ""),
        ws_path=TERMINAL_WS,
        tickets_api=TICKETS_API,
        can_hand_over=page.state.api.has("POST", "/sessions/{id}/control"),
        can_invite=page.state.api.has("POST", "/sessions/{id}/invite"),
        # Refusals in the viewer's language; in English the broker's own sentence (it names
        # the ticket and machine) is shown instead.
        refusal_texts={}
        if page.lang == "en"
        else {code: page.gettext(text) for code, text in CODE_MESSAGES.items()},
    )


async def playback_page(page: Page) -> web.StreamResponse:
    session_id = page.request.match_info["id"]
    try:
        parse_session_id(session_id)
    except InvalidName:
        raise NotFoundError("there is no such session") from None
    session = json_dict(await page.api("GET", "/sessions/{id}", params={"id": session_id}))
    commands = json_list(session.get("commands"))
    return page.render(
        "playback.html",
        session=session,
        commands=commands,
        cast_url=f"/files/sessions/{session_id}/transcript.cast",
        wasm=True,
    )


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/console/sessions", page_handler(sessions_page))
    router.add_get("/console/terminal", page_handler(terminal_page))
    router.add_get("/console/sessions/{id}/play", page_handler(playback_page))
