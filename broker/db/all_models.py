"""Imports every model module so Base.metadata knows every table (Alembic reads this).

Each domain adds its model module here, one import line each."""

from __future__ import annotations

from broker.db import (
    models_agents,
    models_audit,
    models_cluster,
    models_connectors,
    models_console,
    models_directory,
    models_kb,
    models_sessions,
    models_staff,
    models_tickets,
    models_transcripts,
)
from broker.db.base import Base

metadata = Base.metadata

__all__ = [
    "metadata",
    "models_agents",
    "models_audit",
    "models_cluster",
    "models_connectors",
    "models_console",
    "models_directory",
    "models_kb",
    "models_sessions",
    "models_staff",
    "models_tickets",
    "models_transcripts",
]
