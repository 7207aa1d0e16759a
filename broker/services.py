"""What every request handler and background task of a broker process shares."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from broker.audit.anonymous import AnonymousRefusals
from broker.audit.log import AuditLog
from broker.auth.throttle import Throttle
from broker.config import BrokerConfig
from broker.keys import BrokerKeys
from broker.transcript.store import TranscriptStore, transcript_store


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class Services:
    config: BrokerConfig
    engine: AsyncEngine
    db: async_sessionmaker[AsyncSession]
    audit: AuditLog
    keys: BrokerKeys
    clock: Callable[[], dt.datetime] = field(default=utc_now)
    # 10 failed sign-ins per 15 minutes per account and per source address.
    login_throttle: Throttle = field(default_factory=lambda: Throttle(limit=10, window=900))
    # Refusals of unauthenticated requests: one summary per source and minute.
    anonymous: AnonymousRefusals = field(init=False)
    # Set by `secondline node drain`: /readyz answers 503, new sessions and agent tunnels
    # are turned away to the other nodes, live sessions end at their own pace.
    draining: bool = False
    # Where transcripts are read from (and, on PostgreSQL, copied to for every node).
    transcripts: TranscriptStore = field(init=False)

    def __post_init__(self) -> None:
        self.anonymous = AnonymousRefusals(self.audit, lambda: self.clock())
        config = self.config
        self.transcripts = transcript_store(
            config.transcripts_dir,
            config.data_dir / "transcript-scratch",
            config.db_url,
            self.db,
            config.node or "single",
        )


# Where the app keeps them: set by the composition root (broker.app) before any feature starts.
SERVICES: Final = web.AppKey("services", Services)
