"""Interpreter settings for a serving process, applied at start-up and undone at shutdown.

Both were measured under load (docs/performance.md):

- The objects alive after start-up (Litestar's routes and schema, SQLAlchemy's mappers, migrations) are
  moved out of the garbage collector's reach with ``gc.freeze()``. They live as long as the process, yet a
  full collection walked all ~150,000 of them, pausing every request for up to 100 ms.
- The GIL switch interval drops from 5 ms to 0.2 ms. aiosqlite runs each statement on a thread of its own
  and sqlite3 releases the GIL around every row it steps; while the event loop is busy, that thread waited
  up to a full interval each time it wanted the GIL back, so a busy loop made every query slower.

Both are process-wide, and one process may run several apps (tests, embedding): the first app to start
applies them and the last to stop restores the previous interval and unfreezes.
"""

from __future__ import annotations

import gc
import sys
import threading

SWITCH_INTERVAL_SECONDS = 0.0002


class _Serving:
    lock = threading.Lock()
    running_apps = 0
    previous_interval = 0.0


def tune_for_serving() -> None:
    with _Serving.lock:
        if _Serving.running_apps == 0:
            _Serving.previous_interval = sys.getswitchinterval()
            sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
        # No collection first: it would cost a full pass, and start-up leaves little garbage.
        gc.freeze()
        _Serving.running_apps += 1


def restore_after_serving() -> None:
    with _Serving.lock:
        if _Serving.running_apps == 0:
            return
        _Serving.running_apps -= 1
        if _Serving.running_apps == 0:
            sys.setswitchinterval(_Serving.previous_interval)
            gc.unfreeze()
