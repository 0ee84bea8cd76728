"""What an operator reads in the log of a real server process: one structured access line per request with
its request id, the security events by name, JSON or plain text, and never a password, hash or token.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog

from app import __version__
from app.logs import UtcTimestamp
from tests.helpers import ADMIN_EMAIL, ADMIN_PASSWORD, GENERATED_REQUEST_ID, bearer, free_port
from tests.helpers.processes import (
    ServerProcess,
    server_command,
    server_process,
    sqlite_server_env,
    wait_healthy,
)
from tests.helpers.sockets import ws_connect
from tests.helpers.terminals import in_terminal

Line = dict[str, Any]


def json_lines(server: ServerProcess) -> list[Line]:
    lines = []
    for text in server.log.read_text(errors="replace").splitlines():
        if text.startswith("{"):
            lines.append(json.loads(text))
    return lines


async def wait_for_line(server: ServerProcess, match: Callable[[Line], bool], seconds: float = 5.0) -> Line:
    """The first JSON line ``match`` accepts, waiting for the process to write it."""
    deadline = time.monotonic() + seconds
    while True:
        found = [line for line in json_lines(server) if match(line)]
        if found:
            return found[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"no such log line in:\n{server.output()}")
        await asyncio.sleep(0.05)


def access_line(request_id: str) -> Callable[[Line], bool]:
    return lambda line: line.get("event") == "request" and line.get("request_id") == request_id


def named(event: str, **fields: Any) -> Callable[[Line], bool]:
    return lambda line: line.get("event") == event and all(line.get(k) == v for k, v in fields.items())


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[ServerProcess]:
    env = sqlite_server_env(tmp_path / "vms.sqlite3", VMS_LOG_FORMAT="json", VMS_LOGIN_ACCOUNT_FAILURES="2")
    async with server_process(env, tmp_path / "server.log", options=["--log-level", "info"]) as running:
        yield running


async def sign_in(http: httpx.AsyncClient, email: str = ADMIN_EMAIL, password: str = ADMIN_PASSWORD) -> str:
    response = await http.post("/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


async def test_one_access_line_per_request_with_its_id_route_status_duration_and_user(
    server: ServerProcess,
) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        token = await sign_in(http)
        created = await http.post(
            "/vms",
            json={"name": "web", "cores": 2, "ram": 2048, "disk": 20, "os": "debian", "status": "running"},
            headers=bearer(token),
        )
        vm_id = created.json()["id"]
        rid = f"trace-{uuid.uuid4().hex[:8]}"
        response = await http.get(
            f"/vms/{vm_id}", params={"token": token}, headers={**bearer(token), "X-Request-ID": rid}
        )
        assert response.status_code == 200
        assert response.headers["X-Request-ID"] == rid  # a sane id from the client is kept and returned

        line = await wait_for_line(server, access_line(rid))
        assert line["method"] == "GET"
        assert line["path"] == "/vms/{vm_id}"  # the route, not the id: lines group by route
        assert line["status"] == 200
        assert isinstance(line["duration_ms"], float | int)
        assert line["duration_ms"] >= 0
        assert line["user_id"] == 1  # the administrador made at start
        assert line["level"] == "info"
        stamped = datetime.strptime(line["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        assert abs((datetime.now(UTC) - stamped).total_seconds()) < 60
        assert [entry for entry in json_lines(server) if entry.get("request_id") == rid] == [line]

        # The change made by a request carries that request's id in the change log too.
        changes = await http.get("/changes", params={"entity": "vm"}, headers=bearer(token))
        assert changes.json()[0]["request_id"] == created.headers["X-Request-ID"]

        # An id that is not sane is replaced, never echoed: too long, a space, non-ASCII (what an HTTP
        # server lets through; tests/http/test_request_id.py sends control characters to the app).
        for insane in (b"x" * 65, b"two words", b"caf\xc3\xa9-id"):
            bad = await http.get("/health", headers={"X-Request-ID": insane})
            made = bad.headers["X-Request-ID"]
            assert GENERATED_REQUEST_ID.fullmatch(made), made
            await wait_for_line(server, access_line(made))

    log = server.log.read_text(errors="replace")
    assert token not in log  # the ?token= of the read above is in no line
    assert "two words" not in log
    assert "caf" not in log
    assert '"GET /vms' not in log  # uvicorn's own access line is off (ours replaces it)


async def test_a_websocket_gets_one_line_when_it_ends_with_its_route_and_close_code(
    server: ServerProcess,
) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        token = await sign_in(http)
    async with ws_connect(server, "/ws/vms", token) as socket:  # type: ignore[arg-type]
        rid = socket.response.headers["X-Request-ID"]
    line = await wait_for_line(server, named("websocket", request_id=rid))
    assert line["path"] == "/ws/vms"
    assert line["user_id"] == 1
    assert line["close_code"] == 1000
    assert token not in server.log.read_text()


async def test_security_events_are_named_and_carry_no_secret(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        admin = await sign_in(http)
        wrong = "not-the-password-" + uuid.uuid4().hex[:6]
        failed = await http.post("/login", json={"email": ADMIN_EMAIL, "password": wrong})
        assert failed.status_code == 401
        line = await wait_for_line(server, named("login_failed", request_id=failed.headers["X-Request-ID"]))
        assert line["user_id"] == 1
        assert line["client"] == "127.0.0.1"
        assert line["level"] == "warning"

        email = f"c-{uuid.uuid4().hex[:6]}@example.com"
        password = "pw-" + uuid.uuid4().hex[:12]
        created = await http.post(
            "/users",
            json={"name": "c", "email": email, "password": password, "rol": "cliente"},
            headers=bearer(admin),
        )
        user_id = created.json()["id"]
        cliente = await sign_in(http, email, password)

        for _ in range(3):  # the account allows 2 failures (VMS_LOGIN_ACCOUNT_FAILURES), then 429
            throttled = await http.post("/login", json={"email": email, "password": wrong})
        assert throttled.status_code == 429
        await wait_for_line(server, named("login_throttled", limit="account"))

        refused = await http.get("/vms", headers=bearer("garbage.token.here"))
        assert refused.status_code == 401
        await wait_for_line(
            server, named("token_refused", reason="malformed", request_id=refused.headers["X-Request-ID"])
        )

        forbidden = await http.post("/vms", json={}, headers=bearer(cliente))
        assert forbidden.status_code == 403
        await wait_for_line(server, named("forbidden", user_id=user_id, path="/vms"))

        promoted = await http.patch(f"/users/{user_id}", json={"rol": "administrador"}, headers=bearer(admin))
        assert promoted.status_code == 200
        await wait_for_line(
            server,
            named("role_changed", user_id=user_id, before="cliente", after="administrador", actor_id=1),
        )

        logout = await http.post("/logout", headers=bearer(admin))
        assert logout.status_code == 204
        await wait_for_line(server, named("session_ended", request_id=logout.headers["X-Request-ID"]))
        admin = await sign_in(http)
        again = await http.get("/vms", headers=bearer(cliente))  # a role change retires the user's tokens
        assert again.status_code == 401
        await wait_for_line(server, named("token_refused", reason="revoked"))

        deleted = await http.delete(f"/users/{user_id}", headers=bearer(admin))
        assert deleted.status_code == 204
        await wait_for_line(server, named("user_deleted", user_id=user_id, actor_id=1))

        pair = await http.post("/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
        spent = pair.json()["refresh_token"]
        renewed = await http.post("/login/refresh", json={"refresh_token": spent})
        assert renewed.status_code == 200
        reused = await http.post("/login/refresh", json={"refresh_token": spent})
        assert reused.status_code == 401
        await wait_for_line(
            server, named("token_refused", reason="refresh_reused", request_id=reused.headers["X-Request-ID"])
        )
        await wait_for_line(server, named("session_ended", request_id=reused.headers["X-Request-ID"]))
        refresh_tokens = [spent, renewed.json()["refresh_token"]]

        # The per-address limit (VMS_LOGIN_RATE_LIMIT, 10 a minute here): its own line, naming the address.
        for _ in range(12):
            limited = await http.post("/login", json={"email": "nobody@example.com", "password": wrong})
            if limited.status_code == 429:
                break
            assert limited.status_code == 401, limited.text
        assert limited.status_code == 429
        await wait_for_line(
            server,
            named(
                "login_throttled",
                limit="address",
                client="127.0.0.1",
                request_id=limited.headers["X-Request-ID"],
            ),
        )

    log = server.log.read_text()
    hashes = [hashlib.sha256(token.encode()).hexdigest() for token in refresh_tokens]
    for secret in (ADMIN_PASSWORD, password, wrong, admin, cliente, "$2b$", *refresh_tokens, *hashes):
        assert secret not in log


async def test_plain_text_when_asked_and_uvicorns_access_log_back_when_ours_is_off(tmp_path: Path) -> None:
    env = sqlite_server_env(tmp_path / "vms.sqlite3", VMS_LOG_FORMAT="console", VMS_ACCESS_LOG="false")
    async with server_process(env, tmp_path / "server.log", options=["--log-level", "info"]) as running:
        async with httpx.AsyncClient(base_url=running.url) as http:
            token = await sign_in(http)
            assert (await http.get("/vms", params={"token": token})).status_code == 401
            # Without VMS's access line, a request still gets its id: returned, and on its lines.
            wrong = {"email": ADMIN_EMAIL, "password": "not-the-password"}
            kept = await http.post("/login", json=wrong, headers={"X-Request-ID": "kept-id.1"})
            replaced = await http.post("/login", json=wrong, headers={"X-Request-ID": "two words"})
        assert kept.headers["X-Request-ID"] == "kept-id.1"
        made = replaced.headers["X-Request-ID"]
        assert GENERATED_REQUEST_ID.fullmatch(made), made
        await asyncio.sleep(0.3)
        log = running.log.read_text()
    assert not json_lines(running)  # plain text, not JSON
    url = running.url
    assert f"[info     ] VMS {__version__} serving the API at {url} and its docs at {url}/docs" in log
    assert '"GET /vms?token=[redacted] HTTP/1.1" 401' in log  # uvicorn's line, its token redacted
    assert token not in log
    assert "] request " not in log  # and ours is off
    failed = [line for line in log.splitlines() if "login_failed" in line]
    assert [("request_id=kept-id.1" in line, f"request_id={made}" in line) for line in failed] == [
        (True, False),
        (False, True),
    ]
    assert "two words" not in log


async def test_auto_format_is_plain_text_in_a_terminal_and_json_through_a_pipe(tmp_path: Path) -> None:
    """``VMS_LOG_FORMAT=auto`` (the default): what an operator running the server by hand reads, and what
    a log collector reading its output through a pipe gets. Both servers run at once."""
    (tmp_path / "tty").mkdir()
    (tmp_path / "pipe").mkdir()
    tty_env = sqlite_server_env(tmp_path / "tty" / "vms.sqlite3", VMS_LOG_FORMAT="auto")
    pipe_env = sqlite_server_env(tmp_path / "pipe" / "vms.sqlite3", VMS_LOG_FORMAT="auto")
    port = free_port()
    command = server_command(port, ["--log-level", "info"])
    async with (
        in_terminal(command, tty_env, tmp_path / "tty.log") as (process, terminal),
        server_process(pipe_env, tmp_path / "pipe.log", options=["--log-level", "info"], pipe=True) as piped,
    ):
        in_tty = ServerProcess(process=process, url=f"http://127.0.0.1:{port}", log=terminal.log)
        await wait_healthy(in_tty)
        async with httpx.AsyncClient() as http:
            for server, rid in ((in_tty, "in-a-terminal"), (piped, "through-a-pipe")):
                response = await http.get(f"{server.url}/health", headers={"X-Request-ID": rid})
                assert response.status_code == 200
        await terminal.wait_for("request_id=in-a-terminal")
        line = await wait_for_line(piped, access_line("through-a-pipe"))
        in_tty.stop()

    text = terminal.text()
    assert not [line for line in text.splitlines() if line.lstrip().startswith("{")], text
    url = in_tty.url
    assert f"[info     ] VMS {__version__} serving the API at {url} and its docs at {url}/docs" in text
    (access,) = [line for line in text.splitlines() if "request_id=in-a-terminal" in line]
    assert "[info     ] request" in access
    for field in ("method=GET", "path=/health", "status=200"):
        assert field in access, access

    assert (line["path"], line["status"]) == ("/health", 200)
    events = [entry["event"] for entry in json_lines(piped)]
    url = piped.url
    assert f"VMS {__version__} serving the API at {url} and its docs at {url}/docs" in events
    plain = [text for text in piped.output().splitlines() if "] VMS " in text or "] request" in text]
    assert not plain, plain


def test_the_timestamp_reads_as_structlogs_iso_utc_one() -> None:
    """The line's ``timestamp`` (app/logs.py formats it once per second): the same text as structlog's
    ``TimeStamper(fmt="iso", utc=True)``, to the microsecond, across a second's boundary too."""
    ours, theirs = UtcTimestamp(), structlog.processors.TimeStamper(fmt="iso", utc=True)
    for _ in range(3):
        before = theirs(None, "info", {})["timestamp"]
        stamped = ours(None, "info", {})["timestamp"]
        after = theirs(None, "info", {})["timestamp"]
        assert len(stamped) == len(before) == 27
        assert before <= stamped <= after
        time.sleep(0.6)
