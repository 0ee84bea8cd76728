"""Sign-in sessions, and ids that are never reused on SQLite.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

SQLite gives a new row the highest id in use plus one, so after a delete a new VM or account could take the
id of the deleted one (and an ETag or token written for it). AUTOINCREMENT makes it use a counter that
never goes back; SQLite can only add it by rebuilding the table, which is what this migration does for
``user_account`` and ``virtual_machine``, copying every row. PostgreSQL ids come from sequences, which never
go back, so nothing changes there.

Ids deleted before this migration are unknown to it, so the ETag format changes at the same time (see
``app/domain/vms/reads.py``): a tag written before the upgrade can never match a VM afterwards.
"""

from __future__ import annotations

import sqlalchemy as sa
from advanced_alchemy.types import DateTimeUTC
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _user_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("id", BigId, nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("password_hash", sa.String(length=100), nullable=False),
        sa.Column("rol", sa.String(length=20), nullable=False),
        sa.Column("token_version", sa.Integer(), server_default="0", nullable=False),
        sa.Column("created_at", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("updated_at", DateTimeUTC(timezone=True), nullable=False),
    ]


def _vm_columns() -> list[sa.Column[object]]:
    return [
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
    ]


def _rebuild_with_autoincrement(table: str, columns: list[sa.Column[object]], *constraints: object) -> None:
    """Copy ``table`` into a new AUTOINCREMENT table of the same shape (SQLite cannot alter a key)."""
    names = ", ".join(column.name for column in columns)
    op.create_table(f"_new_{table}", *columns, *constraints, sqlite_autoincrement=True)  # type: ignore[arg-type]
    op.execute(f"INSERT INTO _new_{table} ({names}) SELECT {names} FROM {table}")  # noqa: S608
    op.drop_table(table)
    op.rename_table(f"_new_{table}", table)


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.drop_index("ix_user_account_rol", table_name="user_account")
        _rebuild_with_autoincrement(
            "user_account",
            _user_columns(),
            sa.CheckConstraint("rol IN ('administrador', 'cliente')", name="ck_user_account_rol"),
            sa.PrimaryKeyConstraint("id", name="pk_user_account"),
            sa.UniqueConstraint("email", name="uq_user_account_email"),
        )
        op.create_index("ix_user_account_rol", "user_account", ["rol"], unique=False)
        for index in ("name", "os", "status"):
            op.drop_index(f"ix_virtual_machine_{index}", table_name="virtual_machine")
        _rebuild_with_autoincrement(
            "virtual_machine",
            _vm_columns(),
            sa.CheckConstraint(
                "status IN ('provisioning', 'running', 'stopped', 'paused', 'error')",
                name="ck_virtual_machine_status",
            ),
            sa.PrimaryKeyConstraint("id", name="pk_virtual_machine"),
        )
        for index in ("name", "os", "status"):
            op.create_index(f"ix_virtual_machine_{index}", "virtual_machine", [index], unique=False)

    op.create_table(
        "auth_session",
        sa.Column("id", BigId, nullable=False),
        sa.Column("user_id", BigId, nullable=False),
        sa.Column("client_ip", sa.String(length=64), nullable=True),
        sa.Column("user_agent", sa.String(length=256), nullable=True),
        sa.Column("ended_at", DateTimeUTC(timezone=True), nullable=True),
        sa.Column("created_at", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("updated_at", DateTimeUTC(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["user_account.id"], name="fk_auth_session_user_id_user_account", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_auth_session"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_auth_session_user_id", "auth_session", ["user_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_auth_session_user_id", table_name="auth_session")
    op.drop_table("auth_session")
