"""Initial schema: user accounts and virtual machines.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from advanced_alchemy.types import DateTimeUTC
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "user_account",
        sa.Column("id", BigId, nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("password_hash", sa.String(length=100), nullable=False),
        sa.Column("rol", sa.String(length=20), nullable=False),
        sa.Column("token_version", sa.Integer(), server_default="0", nullable=False),
        sa.Column("created_at", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("updated_at", DateTimeUTC(timezone=True), nullable=False),
        sa.CheckConstraint("rol IN ('administrador', 'cliente')", name=op.f("ck_user_account_rol")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_account")),
        sa.UniqueConstraint("email", name=op.f("uq_user_account_email")),
    )
    op.create_index(op.f("ix_user_account_rol"), "user_account", ["rol"], unique=False)

    op.create_table(
        "virtual_machine",
        sa.Column("id", BigId, nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("cores", sa.Integer(), nullable=False),
        sa.Column("ram", sa.Integer(), nullable=False),
        sa.Column("disk", sa.Integer(), nullable=False),
        sa.Column("os", sa.String(length=100), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("updated_at", DateTimeUTC(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('provisioning', 'running', 'stopped', 'paused', 'error')",
            name=op.f("ck_virtual_machine_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_virtual_machine")),
    )
    op.create_index(op.f("ix_virtual_machine_name"), "virtual_machine", ["name"], unique=False)
    op.create_index(op.f("ix_virtual_machine_os"), "virtual_machine", ["os"], unique=False)
    op.create_index(op.f("ix_virtual_machine_status"), "virtual_machine", ["status"], unique=False)


def downgrade() -> None:
    op.drop_table("virtual_machine")
    op.drop_table("user_account")
