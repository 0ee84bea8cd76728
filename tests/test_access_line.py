"""The access line's own writer (app/logs.py ``InfoLine``) writes the line structlog's chain would."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import structlog

from app import create_app
from app.context import request_id
from app.logs import InfoLine
from tests.helpers import make_settings

FIELDS = {"method": "GET", "path": "/vms/{vm_id}", "status": 200, "duration_ms": 0.21, "user_id": 7}


def both_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    """One line from InfoLine, then the same event through structlog, with one request id bound."""
    token = request_id.set("req-42")
    try:
        capsys.readouterr()
        InfoLine("vms.access")("request", dict(FIELDS))
        structlog.get_logger("vms.access").info("request", **FIELDS)
    finally:
        request_id.reset(token)
    return capsys.readouterr().err.splitlines()


def test_a_json_line_is_structlogs_line_key_for_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    create_app(make_settings(tmp_path, log_format="json"))  # configures structlog for this process
    ours, theirs = (json.loads(line) for line in both_lines(capsys))
    assert ours.pop("timestamp")[:19] == theirs.pop("timestamp")[:19]
    assert list(ours.items()) == list(theirs.items())  # same keys, same values, same order
    assert (ours["request_id"], ours["level"], ours["event"]) == ("req-42", "info", "request")


def test_console_lines_and_higher_levels_go_through_structlog(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    create_app(make_settings(tmp_path, log_format="console"))
    ours, theirs = both_lines(capsys)
    assert ours.split(" ", 1)[1] == theirs.split(" ", 1)[1]  # the same console line, but for the time
    assert "req-42" in ours
    create_app(make_settings(tmp_path, log_format="json", log_level="WARNING"))
    assert both_lines(capsys) == []  # an INFO line is not written at WARNING, by either
