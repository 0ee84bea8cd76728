"""Alembic environment (Advanced Alchemy's async template, adapted).

- Uses its own NullPool engine so it can run from a worker thread at start-up as well as from the CLI.
- Several workers starting at once migrate one after the other instead of racing: on PostgreSQL the
  migration transaction takes an advisory lock (DDL is transactional there, so the others then find the
  schema at head); on SQLite, where Alembic commits each revision on its own (its DDL is not transactional
  to Alembic), the whole run holds an exclusive lock on a file beside the database
  (``<database>-migrations.lock``): a second worker creating a table the first had just created failed to
  start. Workers sharing a SQLite file share a host, so a file lock reaches them all.
"""

from __future__ import annotations

import asyncio
import fcntl
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, cast

from advanced_alchemy.base import metadata_registry
from alembic import context
from alembic.autogenerate import rewriter
from sqlalchemy import make_url, pool, text
from sqlalchemy.ext.asyncio import create_async_engine

import app.domain.auth.models
import app.domain.users.models
import app.domain.vms.models  # noqa: F401  (register the tables)

if TYPE_CHECKING:
    from advanced_alchemy.alembic.commands import AlembicCommandConfig
    from sqlalchemy.engine import Connection

config = cast("AlembicCommandConfig", context.config)
writer = rewriter.Rewriter()
MIGRATION_LOCK_ID = 7_146_912_001


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=metadata_registry.get(config.bind_key),
        compare_type=config.compare_type,
        version_table=config.version_table_name,
        version_table_schema=config.version_table_schema,
        version_table_pk=config.version_table_pk,
        user_module_prefix=config.user_module_prefix,
        render_as_batch=config.render_as_batch,
        process_revision_directives=writer,
        **kwargs,  # type: ignore[arg-type]
    )


def run_migrations_offline() -> None:
    _configure(url=config.db_url, literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(text(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_ID})"))
        context.run_migrations()


async def run_migrations_online() -> None:
    engine = create_async_engine(config.db_url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
    finally:
        await engine.dispose()


@contextmanager
def one_run_at_a_time(url: str) -> Iterator[None]:
    """On a SQLite file, hold an exclusive lock on ``<database>-migrations.lock`` (a file of its own: a lock
    on the database file itself would meddle with SQLite's). Elsewhere, nothing (see the module doc)."""
    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        yield
        return
    with ExitStack() as held:
        try:
            lock = held.enter_context(Path(f"{database}-migrations.lock").open("a"))
        except OSError:
            # A directory no one may write to (a database made read-only, say): no run can migrate there
            # either, and a database at head needs no migration; VMS starts and answers writes with 503.
            lock = None
        if lock is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)  # waits for another process's run, which leaves it at head
            held.callback(fcntl.flock, lock, fcntl.LOCK_UN)
        yield


if context.is_offline_mode():
    run_migrations_offline()
else:
    with one_run_at_a_time(config.db_url):
        asyncio.run(run_migrations_online())
