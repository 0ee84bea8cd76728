"""Interpreter settings for a serving process, applied at start-up and undone at shutdown.

Both were measured under load (docs/performance.md):

- The objects alive after start-up (Litestar's routes and schema, SQLAlchemy's mappers, migrations) are
  moved out of the garbage collector's reach with ``gc.freeze()``. They live as long as the process, yet a
  full collection walked all ~150,000 of them, pausing every request for up to 100 ms.
- The GIL switch interval drops from 5 ms to 0.2 ms. aiosqlite runs each statement on a thread of its own
  and sqlite3 releases the GIL around every row it steps; while the event loop is busy, that thread waited
  up to a full interval each time it wanted the GIL back, so a busy loop made every query slower.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable

SWITCH_INTERVAL_SECONDS = 0.0002


def tune_for_serving() -> Callable[[], None]:
    """Apply the settings; returns the function that restores the previous ones."""
    previous_interval = sys.getswitchinterval()
    gc.freeze()  # no collection first: it would cost a full pass, and start-up leaves little garbage
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)

    def restore() -> None:
        sys.setswitchinterval(previous_interval)
        gc.unfreeze()

    return restore
