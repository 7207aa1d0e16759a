"""SSH shift windows: a key's code-less window after a second factor (docs/identity.md)

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import broker.db.base

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ssh_shift_windows",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("fingerprint", sa.String(length=100), nullable=False),
        sa.Column("opened_at", broker.db.base.UtcDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", broker.db.base.UtcDateTime(timezone=True), nullable=False),
        sa.Column("opened_via", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_ssh_shift_windows_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ssh_shift_windows")),
        sa.UniqueConstraint(
            "user_id", "fingerprint", name=op.f("uq_ssh_shift_windows_user_id")
        ),
    )
    op.create_index(
        op.f("ix_ssh_shift_windows_user_id"), "ssh_shift_windows", ["user_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_ssh_shift_windows_user_id"), table_name="ssh_shift_windows")
    op.drop_table("ssh_shift_windows")
