"""The typed application keys of the connectors."""

from __future__ import annotations

from typing import Final

from aiohttp import web

from broker.connectors.store import ConnectorStore
from broker.connectors.sync import ConnectorSync, Systems

CONNECTORS: Final = web.AppKey("connectors", ConnectorStore)
CONNECTOR_SYSTEMS: Final = web.AppKey("connector_systems", Systems)
CONNECTOR_SYNC: Final = web.AppKey("connector_sync", ConnectorSync)
