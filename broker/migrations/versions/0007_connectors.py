"""ticket-system connectors and mirrored tickets

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import broker.db.base

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "connectors",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("url", sa.String(length=500), nullable=False),
        sa.Column("prefix", sa.String(length=10), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=True),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("credential", sa.Text(), nullable=False),
        sa.Column("healthy", sa.Boolean(), nullable=False),
        sa.Column("health_message", sa.Text(), nullable=False),
        sa.Column("checked_at", broker.db.base.UtcDateTime(timezone=True), nullable=True),
        sa.Column("cursor", sa.String(length=64), nullable=True),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", broker.db.base.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_connectors_customer_id_customers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_connectors")),
        sa.UniqueConstraint("name", name=op.f("uq_connectors_name")),
        sa.UniqueConstraint("prefix", name=op.f("uq_connectors_prefix")),
    )
    op.create_table(
        "external_tickets",
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("connector_id", sa.Integer(), nullable=False),
        sa.Column("external_id", sa.String(length=64), nullable=False),
        sa.Column("url", sa.String(length=500), nullable=False),
        sa.Column("seen_queue", sa.String(length=200), nullable=False),
        sa.Column("seen_status", sa.String(length=32), nullable=False),
        sa.Column("seen_owner", sa.String(length=200), nullable=False),
        sa.Column("seen_title", sa.String(length=200), nullable=False),
        sa.Column("merged_into", sa.String(length=64), nullable=True),
        sa.Column("synced_at", broker.db.base.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["connector_id"],
            ["connectors.id"],
            name=op.f("fk_external_tickets_connector_id_connectors"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["ticket_id"],
            ["tickets.id"],
            name=op.f("fk_external_tickets_ticket_id_tickets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("ticket_id", name=op.f("pk_external_tickets")),
        sa.UniqueConstraint(
            "connector_id", "external_id", name=op.f("uq_external_tickets_connector_id")
        ),
    )
    with op.batch_alter_table("external_tickets", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_external_tickets_connector_id"), ["connector_id"], unique=False
        )
    op.create_table(
        "connector_outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("connector_id", sa.Integer(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("external_id", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("value", sa.String(length=200), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", broker.db.base.UtcDateTime(timezone=True), nullable=False),
        sa.Column("claimed_until", broker.db.base.UtcDateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", broker.db.base.UtcDateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", broker.db.base.UtcDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["connector_id"],
            ["connectors.id"],
            name=op.f("fk_connector_outbox_connector_id_connectors"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["ticket_id"],
            ["tickets.id"],
            name=op.f("fk_connector_outbox_ticket_id_tickets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_connector_outbox")),
        sa.UniqueConstraint("key", name=op.f("uq_connector_outbox_key")),
    )
    with op.batch_alter_table("connector_outbox", schema=None) as batch_op:
        batch_op.create_index(
            "ix_connector_outbox_due", ["connector_id", "state", "next_attempt_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("connector_outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_connector_outbox_due")
    op.drop_table("connector_outbox")
    with op.batch_alter_table("external_tickets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_external_tickets_connector_id"))
    op.drop_table("external_tickets")
    op.drop_table("connectors")
