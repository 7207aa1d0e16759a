"""account sources: company directories, where each account and SSH key comes from

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import broker.db.base

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "directories",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("url", sa.String(length=500), nullable=False),
        sa.Column("bind_dn", sa.String(length=500), nullable=False),
        sa.Column("bind_password", sa.Text(), nullable=False),
        sa.Column("ca_file", sa.String(length=500), nullable=True),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("healthy", sa.Boolean(), nullable=False),
        sa.Column("health_message", sa.Text(), nullable=False),
        sa.Column("synced_at", broker.db.base.UtcDateTime(timezone=True), nullable=True),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", broker.db.base.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_directories")),
        sa.UniqueConstraint("name", name=op.f("uq_directories_name")),
    )
    with op.batch_alter_table("users") as batch:
        batch.add_column(
            sa.Column("source", sa.String(length=16), server_default="local", nullable=False)
        )
        batch.add_column(sa.Column("source_name", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("external_id", sa.String(length=500), nullable=True))
        batch.add_column(sa.Column("source_refusal", sa.String(length=200), nullable=True))
    with op.batch_alter_table("ssh_keys") as batch:
        batch.add_column(
            sa.Column("source", sa.String(length=16), server_default="local", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("ssh_keys") as batch:
        batch.drop_column("source")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("source_refusal")
        batch.drop_column("external_id")
        batch.drop_column("source_name")
        batch.drop_column("source")
    op.drop_table("directories")
