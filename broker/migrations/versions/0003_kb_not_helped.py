"""knowledge base: "did not help" marks on suggested articles

Level 1 marks a suggestion that did not help with a ticket; the ticket's suggestions put it
last and it weighs against the article elsewhere. One row per article and ticket, like
``kb_solved``. A plain table on both dialects.

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import broker.db.base

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "kb_not_helped",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("article_id", sa.Integer(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("customer", sa.String(length=63), nullable=False),
        sa.Column("marked_by", sa.String(length=64), nullable=False),
        sa.Column("marked_at", broker.db.base.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["article_id"],
            ["kb_articles.id"],
            name=op.f("fk_kb_not_helped_article_id_kb_articles"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_kb_not_helped")),
        sa.UniqueConstraint("article_id", "ticket_id", name=op.f("uq_kb_not_helped_article_id")),
    )
    with op.batch_alter_table("kb_not_helped", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_kb_not_helped_article_id"), ["article_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_kb_not_helped_ticket_id"), ["ticket_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("kb_not_helped", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_kb_not_helped_ticket_id"))
        batch_op.drop_index(batch_op.f("ix_kb_not_helped_article_id"))
    op.drop_table("kb_not_helped")
