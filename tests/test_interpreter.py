"""Start-up interpreter settings (app/interpreter.py): applied while any app runs, restored after the last."""

from __future__ import annotations

import gc
import math
import sys
from pathlib import Path

from litestar.testing import AsyncTestClient

from app import create_app
from app.interpreter import SWITCH_INTERVAL_SECONDS
from tests.helpers import make_settings


async def test_settings_hold_while_any_app_runs_and_are_restored_after_the_last(tmp_path: Path) -> None:
    before = sys.getswitchinterval()
    assert not math.isclose(before, SWITCH_INTERVAL_SECONDS)
    first = create_app(make_settings(tmp_path / "first"))
    second = create_app(make_settings(tmp_path / "second"))
    async with AsyncTestClient(app=first) as client:
        assert math.isclose(sys.getswitchinterval(), SWITCH_INTERVAL_SECONDS)
        assert gc.get_freeze_count() > 0
        async with AsyncTestClient(app=second):
            pass
        # The second app stopping must not undo what the first still runs with.
        assert math.isclose(sys.getswitchinterval(), SWITCH_INTERVAL_SECONDS)
        assert gc.get_freeze_count() > 0
        assert (await client.get("/health")).status_code == 200
    assert math.isclose(sys.getswitchinterval(), before)
    assert gc.get_freeze_count() == 0
