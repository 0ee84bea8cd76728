"""The change log's tests start from an empty log on PostgreSQL too, as they do on a fresh SQLite file."""

from __future__ import annotations

import asyncio

import pytest

from tests.helpers import empty_change_log


@pytest.fixture(autouse=True)
def _empty_change_log(database_url: str) -> None:
    # The shared test database keeps its tables between tests (truncate_postgres empties the accounts and
    # VMs and restarts their ids, but not the log): an old entry would describe a new row with its id.
    if database_url != "sqlite":
        asyncio.run(empty_change_log(database_url))
