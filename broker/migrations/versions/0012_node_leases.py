"""cluster nodes' leases, renewed on the database's clock

Revision ID: 0012
Revises: 0011
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import broker.db.base

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "node_leases",
        sa.Column("node", sa.String(length=64), nullable=False),
        sa.Column("renewed_at", broker.db.base.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("node", name=op.f("pk_node_leases")),
    )


def downgrade() -> None:
    op.drop_table("node_leases")
