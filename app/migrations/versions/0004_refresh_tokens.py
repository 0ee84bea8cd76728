"""Refresh tokens: each session's refresh tokens by hash, and when the session was last used.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from advanced_alchemy.types import DateTimeUTC
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("auth_session") as batch:
        batch.add_column(sa.Column("last_used_at", DateTimeUTC(timezone=True), nullable=True))
        batch.add_column(sa.Column("refresh_expires_at", DateTimeUTC(timezone=True), nullable=True))
    op.create_table(
        "auth_refresh_token",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("session_id", BigId, nullable=False),
        sa.Column("spent_at", DateTimeUTC(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["auth_session.id"],
            name="fk_auth_refresh_token_session_id_auth_session",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("token_hash", name="pk_auth_refresh_token"),
    )
    op.create_index("ix_auth_refresh_token_session_id", "auth_refresh_token", ["session_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_auth_refresh_token_session_id", table_name="auth_refresh_token")
    op.drop_table("auth_refresh_token")
    with op.batch_alter_table("auth_session") as batch:
        batch.drop_column("refresh_expires_at")
        batch.drop_column("last_used_at")
