"""What the storage-fault tests share (SQLite's and PostgreSQL's): mounting or skipping, the refusal a
write meets, and the log lines of a storage fault."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from tests.helpers.environment import IN_CI
from tests.helpers.mounts import MountUnavailable

T = TypeVar("T")

STORAGE_FAULT = "database not writable"
"""The name of the storage fault in its log lines (app/db/faults.py)."""


@contextlib.contextmanager
def mounted(manager: contextlib.AbstractContextManager[T]) -> Iterator[T]:
    """Enter a mount of tests/helpers/mounts.py; skipped where this process cannot mount, failed in CI."""
    try:
        with manager as path:
            yield path
    except MountUnavailable as exc:
        if IN_CI:
            pytest.fail(f"CI must run the storage fault tests: {exc}")
        pytest.skip(str(exc))


def assert_storage_refusal(response: httpx.Response, words: str) -> None:
    """A 503 with ``Retry-After`` whose detail says ``words`` ("full", "read-only")."""
    assert response.status_code == 503, response.text
    assert response.headers.get("retry-after", "").isdigit(), response.headers
    assert words in response.json()["detail"], response.json()


def storage_fault_lines(log: Path) -> list[str]:
    """The storage fault's lines in a server's log, which must hold no traceback."""
    text = log.read_text(errors="replace")
    assert "Traceback" not in text, text[-3000:]
    return [line for line in text.splitlines() if STORAGE_FAULT in line]


def assert_one_line_each_way(log: Path) -> None:
    """One line when the storage fault started, one (saying "back") when it ended, nothing between."""
    lines = storage_fault_lines(log)
    assert len(lines) == 2, lines
    assert '"state":"started"' in lines[0], lines
    assert '"state":"ended"' in lines[1], lines
    assert "back" in lines[1], lines
