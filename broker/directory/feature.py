"""The directories feature: the store and the sync task in the app (``DIRECTORIES``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Final

from aiohttp import web

from broker.directory.service import Directories, SignIn
from broker.directory.store import DirectoryStore
from broker.services import SERVICES

DIRECTORIES: Final = web.AppKey("directories", Directories)
CleanupContext = Callable[[web.Application], AsyncIterator[None]]


# Ends the live sessions of accounts that just lost access, on this node (the composition
# root hands it in: the sessions are a feature above this one).
EndSessions = Callable[[web.Application, set[str]], None]


def _directories_ctx(end_sessions: EndSessions) -> CleanupContext:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        services = app[SERVICES]
        store = DirectoryStore(services.db, services.audit, services.clock)
        directories = Directories(services, store, lambda names: end_sessions(app, names))
        app[DIRECTORIES] = directories
        directories.start()
        try:
            yield
        finally:
            await directories.close()

    return ctx


async def directory_check(app: web.Application, name: str, password: str) -> SignIn:
    """A sign-in's directory answer ("not_directory" without directories or a valid name)."""
    directories = app.get(DIRECTORIES)
    if not name or directories is None:
        return SignIn("not_directory")
    return await directories.password_check(name, password)


def setup(app: web.Application, *, end_sessions: EndSessions) -> None:
    app.cleanup_ctx.append(_directories_ctx(end_sessions))
