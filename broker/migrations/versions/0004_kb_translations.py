"""knowledge base: German and English versions of an article, linked

One row each way (``article_id`` → ``translation_id``), so either version finds the other
with one lookup; each article has at most one other version. A plain table on both dialects.

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "kb_translations",
        sa.Column("article_id", sa.Integer(), nullable=False),
        sa.Column("translation_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["article_id"],
            ["kb_articles.id"],
            name=op.f("fk_kb_translations_article_id_kb_articles"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["translation_id"],
            ["kb_articles.id"],
            name=op.f("fk_kb_translations_translation_id_kb_articles"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("article_id", name=op.f("pk_kb_translations")),
        sa.UniqueConstraint("translation_id", name=op.f("uq_kb_translations_translation_id")),
    )


def downgrade() -> None:
    op.drop_table("kb_translations")
