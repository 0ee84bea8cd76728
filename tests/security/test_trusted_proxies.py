"""Behind a trusted proxy (``VMS_TRUSTED_PROXIES``) the caller is the address the proxy forwarded: the
per-address login limit counts it, the session records it, and the ``login_throttled`` line names it.

The server is uvicorn without its own proxy-header handling, so what VMS sees as the peer is the proxy
(127.0.0.1 here) and the forwarded address reaches VMS only through ``X-Forwarded-For``."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from app import create_app
from tests.helpers import ADMIN_EMAIL, ADMIN_PASSWORD, bearer, expect, make_settings, run_server
from tests.helpers.servers import dispose_engines

FORWARDED = "203.0.113.9"


async def test_the_forwarded_address_is_the_callers_for_limits_sessions_and_logs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app = create_app(
        make_settings(tmp_path, login_rate_limit=3, trusted_proxies="127.0.0.1/32", log_format="json")
    )
    try:
        async with run_server(app, proxy_headers=False) as server:
            http = server.http
            signed_in = await http.post(
                "/login",
                json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD},
                headers={"X-Forwarded-For": f"198.51.100.1, {FORWARDED}"},
            )
            token = expect(signed_in, 200)["access_token"]
            sessions = expect(await http.get("/users/me/sessions", headers=bearer(token)), 200)
            assert [session["ip"] for session in sessions] == [FORWARDED]  # the right-most untrusted hop

            wrong = {"email": f"nobody-{uuid.uuid4().hex[:6]}@example.com", "password": "wrong-password"}
            from_caller = {"X-Forwarded-For": FORWARDED}
            statuses = [
                (await http.post("/login", json=wrong, headers=from_caller)).status_code for _ in range(2)
            ]
            assert statuses == [401, 401]  # with the sign-in above: 3 from this caller
            other = await http.post("/login", json=wrong, headers={"X-Forwarded-For": "192.0.2.44"})
            assert other.status_code == 401  # another caller behind the same proxy has its own count
            limited = await http.post("/login", json=wrong, headers=from_caller)
            assert limited.status_code == 429
    finally:
        await dispose_engines(app)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    throttled = [line for line in lines if line.get("event") == "login_throttled"]
    assert [(line["limit"], line["client"]) for line in throttled] == [("address", FORWARDED)]
    assert throttled[0]["request_id"] == limited.headers["X-Request-ID"]
