"""Hooks for the attacks on the app (tests/security): the helpers they use are in ``tests.helpers``."""

from __future__ import annotations

import gc
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def _collect_leaked_pools() -> None:
    """Collect the pools earlier tests' apps left behind now, not at some random later moment.

    The shared ``app`` fixture's app never disposes its engine (F14). Its pooled connections are finalized
    whenever the garbage collector runs, after their event loop is closed; the failure is logged, logging
    it fails, and the ``--- Logging error ---`` traceback Python 3.11 prints calls ``ast.parse``.
    """
    gc.collect()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """No garbage collection while pytest renders a traceback (for these tests only).

    If a leaked connection is finalized inside pytest's own ``ast.parse`` (rendering a failure or an
    xfail), the nested ``ast.parse`` of the logging error above corrupts it: "SystemError: AST constructor
    recursion depth mismatch", and pytest aborts the whole session (F14).
    """
    gc.disable()
    try:
        return (yield)
    finally:
        gc.enable()
