"""A PostgreSQL cluster of the test's own, to stop, start, freeze and thaw (the fault tests).

The cluster itself is :class:`bench.postgres_cluster.PostgresCluster` (the standard library only, shared
with the fault benchmarks); this adds what only tests need: skip without the binaries, fail in CI.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from bench.postgres_cluster import PostgresCluster, postgres_binaries
from tests.helpers.environment import IN_CI


@contextmanager
def private_postgres_server() -> Iterator[PostgresCluster]:
    """A started cluster on a free port, stopped by its PID and deleted afterwards; the shared server is
    never touched. Skipped when the PostgreSQL server binaries are missing, except in CI (where it fails)."""
    binaries = postgres_binaries()
    if binaries is None:
        message = "the PostgreSQL server binaries (initdb, pg_ctl) are not installed"
        if IN_CI:
            pytest.fail(f"{message}: CI must run the PostgreSQL fault tests")
        pytest.skip(message)
    cluster = PostgresCluster(binaries)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()
