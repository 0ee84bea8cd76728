"""The change log: one row per committed change, numbered in commit order across every process.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

``change_log.seq`` must increase strictly in commit order, across every worker and host, with no holes, so
that a reader who has seen ``seq`` N has seen every change up to N. A PostgreSQL sequence does not give
that: two transactions take values in one order and may commit in the other, and a reader could see 8
before 7. Instead every insert takes the next number from one counter row (``change_log_head``), in a
``BEFORE INSERT`` trigger: the row lock it takes is held until the transaction ends, so the writers of
changes are serialised from that statement (their last, see ``app/db/transactions.py``) to COMMIT, and
numbers are handed out in the order the transactions commit; a rolled-back transaction gives its number
back. That short serialisation at commit is the cost (measured in docs/performance.md).

SQLite allows one writer at a time anyway: ``seq`` is an AUTOINCREMENT rowid (never reused, so pruned
numbers never come back), and an ``AFTER INSERT`` trigger keeps the counter row in step, so both engines
answer "the last change so far" from ``change_log_head.last_seq``. ``pruned_through`` is the highest seq
retention may have deleted: a reader resuming from below it may have missed changes.
"""

from __future__ import annotations

import sqlalchemy as sa
from advanced_alchemy.types import DateTimeUTC
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

Seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

POSTGRES_NEXT_SEQ = """
CREATE FUNCTION change_log_next_seq() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE change_log_head SET last_seq = last_seq + 1 WHERE id = 1 RETURNING last_seq INTO NEW.seq;
    RETURN NEW;
END $$
"""


def upgrade() -> None:
    op.create_table(
        "change_log_head",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("pruned_through", sa.BigInteger(), nullable=False),
    )
    op.execute("INSERT INTO change_log_head (id, last_seq, pruned_through) VALUES (1, 0, 0)")
    op.create_table(
        "change_log",
        sa.Column("seq", Seq, primary_key=True, autoincrement=True),
        sa.Column("at", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("entity", sa.String(length=16), nullable=False),
        sa.Column("entity_id", sa.BigInteger(), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("actor_id", sa.BigInteger(), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("before_json", sa.Text(), nullable=True),
        sa.Column("after_json", sa.Text(), nullable=True),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_change_log_entity", "change_log", ["entity", "entity_id", "seq"])
    op.create_index("ix_change_log_actor_id", "change_log", ["actor_id"])
    op.create_index("ix_change_log_at", "change_log", ["at"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(POSTGRES_NEXT_SEQ)
        op.execute(
            "CREATE TRIGGER change_log_next_seq BEFORE INSERT ON change_log "
            "FOR EACH ROW EXECUTE FUNCTION change_log_next_seq()"
        )
    else:
        op.execute(
            "CREATE TRIGGER change_log_head_follows AFTER INSERT ON change_log "
            "BEGIN UPDATE change_log_head SET last_seq = NEW.seq WHERE id = 1; END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS change_log_next_seq ON change_log")
        op.execute("DROP FUNCTION IF EXISTS change_log_next_seq()")
    op.drop_table("change_log")
    op.drop_table("change_log_head")
