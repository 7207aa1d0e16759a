"""Tables of the cluster's nodes: each node's lease, renewed on the database's clock
(``broker.cluster.lease``), and the condition that one has lapsed, which the statements
that act on a dead node's rows (its agents offline, its sessions sealed) carry."""

from __future__ import annotations

import datetime as dt
from typing import Final

from sqlalchemy import ColumnElement, Interval, String, exists, func, literal, select
from sqlalchemy.orm import Mapped, mapped_column

from broker.db.base import Base, UtcDateTime

#: A node whose lease was not renewed for this long is dead (the presence lease on NATS,
#: broker.cluster.view, is as long).
NODE_LEASE_S: Final = 7.0


class NodeLease(Base):
    __tablename__ = "node_leases"

    node: Mapped[str] = mapped_column(String(64), primary_key=True)
    # Set to the database's now() at every renewal, never to a node's clock: nodes whose
    # clocks disagree still agree on whose lease has lapsed.
    renewed_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


def lease_renewed() -> ColumnElement[bool]:
    """True in SQL for a lease row renewed within :data:`NODE_LEASE_S` (the database's
    clock)."""
    return NodeLease.renewed_at > func.now() - literal(
        dt.timedelta(seconds=NODE_LEASE_S), Interval()
    )


def lease_lapsed(node: str) -> ColumnElement[bool]:
    """True in SQL while ``node`` holds no lease renewed within :data:`NODE_LEASE_S`: it
    stopped, died, or never ran as a cluster node."""
    return ~exists(select(NodeLease.node).where(NodeLease.node == node, lease_renewed()))
