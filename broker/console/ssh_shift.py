"""The console's "Allow my key for this shift": a code-less SSH window for all of the
signed-in staff member's keys (docs/identity.md). A console session exists only after a
sign-in with password and authenticator code, or at an OpenID provider that asserted
multi-factor (``amr``), so this is the second factor given in the browser, for tools that
cannot answer the gateway's prompt (BatchMode, scripts)."""

from __future__ import annotations

from aiohttp import web

from broker.auth import shift_windows
from broker.console.pages import Page, redirect
from broker.services import SERVICES


async def allow_keys_for_shift(page: Page) -> web.StreamResponse:
    services = page.request.app[SERVICES]
    now = services.clock()
    async with services.db() as db, db.begin():
        keys = await shift_windows.active_key_fingerprints(db, page.user.user_id)
        until = await shift_windows.open_for(
            db,
            page.user.user_id,
            keys,
            now=now,
            hours=services.config.ssh_shift_hours,
            via="console",
        )
    if not keys:
        raise redirect("/console/settings", done="ssh_shift_no_keys")
    await services.audit.record(
        actor=page.user.name,
        action="ssh.shift_window_opened",
        source=page.request.remote or "",
        details={"via": "console", "fingerprints": keys[:20], "until": until.isoformat()},
    )
    raise redirect("/console/settings", done="ssh_shift")
