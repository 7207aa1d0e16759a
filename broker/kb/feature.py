"""The knowledge base's start-up work: documents indexed under an older glossary get the
concept tokens of the current one (``search_docs.refresh_concepts``) before the broker
serves searches. The REST routes are in ``broker.api.kb_articles`` and
``broker.api.kb_search``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from broker.kb.search_docs import refresh_concepts
from broker.services import SERVICES

log = logging.getLogger(__name__)


async def _concepts_ctx(app: web.Application) -> AsyncIterator[None]:
    async with app[SERVICES].db() as db, db.begin():
        count = await refresh_concepts(db)
    if count:
        log.info("knowledge base: indexed the glossary concepts of %d documents again", count)
    yield


def setup(app: web.Application) -> None:
    app.cleanup_ctx.append(_concepts_ctx)
