"""Resuming from the change log: ``?since=<seq>`` replays what a listener missed, then goes on live.

Every test talks to a real server over real sockets. The listener that never disconnects (the "witness")
is the reference for what live events look like: a replayed event must be the same object, byte for byte
once decoded, and every event must match its ``GET /changes`` entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import uvicorn
from litestar import Litestar
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from app import create_app
from tests.helpers import (
    CLIENT_LIMITS,
    EVENT_TIMEOUT,
    Account,
    LiveServer,
    admin_account,
    assert_silent,
    create_account,
    create_vm,
    dispose_engines,
    expect,
    forge_token,
    make_settings,
    receive_event,
    receive_events,
    require,
    run_cli,
    run_server,
    scratch_postgres_database,
    server_with,
    settings_of,
    ws_connect,
)

BAD_REQUEST, RESYNC, UNAUTHORIZED, FORBIDDEN = 4400, 4410, 4401, 4403


# ---------------------------------------------------------------- helpers


def assert_strictly_increasing(events: list[dict[str, Any]]) -> None:
    seqs = [event["seq"] for event in events]
    assert all(a < b for a, b in itertools.pairwise(seqs)), f"not strictly increasing: {seqs}"


async def all_changes(server: LiveServer, admin: Account, **params: Any) -> list[dict[str, Any]]:
    """Every entry of ``GET /changes`` matching ``params``, oldest first."""
    entries: list[dict[str, Any]] = []
    while True:
        response = await server.http.get(
            "/changes", params={**params, "limit": 1000, "offset": len(entries)}, headers=admin.headers
        )
        page = expect(response, 200)
        entries += page
        if len(page) < 1000:
            return entries


def assert_event_is_entry(event: dict[str, Any], entry: dict[str, Any]) -> None:
    """An event says what its change-log entry says."""
    entity = entry["entity"]
    assert event["event"] == f"{entity}_{entry['action']}", (event, entry)
    assert event["seq"] == entry["seq"], (event, entry)
    assert event["actor_id"] == entry["actor_id"], (event, entry)
    representation = entry["before"] if entry["after"] is None else entry["after"]
    assert event[entity] == representation, (event, entry)


async def last_seq(server: LiveServer, admin: Account) -> int:
    response = await server.http.get("/changes", params={"limit": 1, "order": "desc"}, headers=admin.headers)
    page = expect(response, 200)
    return int(page[0]["seq"]) if page else 0


async def oldest_seq(server: LiveServer, admin: Account) -> int:
    response = await server.http.get("/changes", params={"limit": 1}, headers=admin.headers)
    page = expect(response, 200)
    return int(page[0]["seq"]) if page else 0


async def vm_writes(server: LiveServer, admin: Account, count: int, prefix: str) -> None:
    """``count`` VM changes of every kind: creations, updates and a deletion now and then."""
    alive: list[int] = []
    for index in range(count):
        if alive and index % 3 == 1:
            response = await server.http.patch(
                f"/vms/{alive[-1]}", json={"name": f"{prefix}-{index}", "cores": 4}, headers=admin.headers
            )
            expect(response, 200)
        elif alive and index % 5 == 4:
            expect(await server.http.delete(f"/vms/{alive.pop(0)}", headers=admin.headers), 204)
        else:
            alive.append((await create_vm(server.http, admin, name=f"{prefix}-{index}"))["id"])


async def drain(socket: ClientConnection, quiet: float = 1.0) -> list[dict[str, Any]]:
    """Every event until ``quiet`` seconds pass without one (bounded: each wait is)."""
    received: list[dict[str, Any]] = []
    while True:
        try:
            received.append(await receive_event(socket, quiet))
        except TimeoutError:
            return received


async def close_of(server: LiveServer, path: str, token: str | None) -> tuple[int, str]:
    """Connect (the handshake must succeed); the close code and reason the server sends, before any event."""
    async with ws_connect(server, path, token) as socket:
        try:
            message = await asyncio.wait_for(socket.recv(), EVENT_TIMEOUT)
        except ConnectionClosed as closed:
            frame = closed.rcvd
        else:
            raise AssertionError(f"{path}: expected a close, got {message!r}")
    assert frame is not None, f"{path}: closed without a close frame"
    return frame.code, frame.reason


# ---------------------------------------------------------------- servers


@asynccontextmanager
async def serving(app: Litestar) -> AsyncIterator[LiveServer]:
    try:
        async with run_server(app) as server:
            yield server
    finally:
        await dispose_engines(app)


@pytest.fixture(
    params=[
        "sqlite-memory",
        pytest.param("sqlite-redis", marks=pytest.mark.redis),
        pytest.param("postgres-memory", marks=pytest.mark.postgres),
    ]
)
def resume_backends(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """(database URL or ``sqlite``, channels backend); PostgreSQL gets a database of its own, since the
    session's shared one keeps its change log between tests."""
    database, channels = request.param.split("-")
    if channels == "redis":
        require("redis")
    if database == "postgres":
        require("postgres")
        with scratch_postgres_database("vms_resume") as url:
            yield url, channels
    else:
        yield "sqlite", channels


@pytest.fixture
async def resume_server(resume_backends: tuple[str, str], tmp_path: Path) -> AsyncIterator[LiveServer]:
    """A fresh server: its change log starts empty."""
    database, channels = resume_backends
    async with serving(create_app(make_settings(tmp_path, database=database, channels=channels))) as server:
        yield server


# ---------------------------------------------------------------- 1. resume


async def test_a_resumed_listener_gets_exactly_what_it_missed_then_live_events(
    resume_server: LiveServer,
) -> None:
    server = resume_server
    admin = await admin_account(server)
    async with ws_connect(server, "/ws/vms", admin.token) as witness:
        async with ws_connect(server, "/ws/vms", admin.token) as first:
            await vm_writes(server, admin, 3, "seen")
            seen = await receive_events(first, 3)
        await receive_events(witness, 3)
        since = seen[-1]["seq"]

        await vm_writes(server, admin, 7, "missed")
        missed_live = await receive_events(witness, 7)
        async with ws_connect(server, f"/ws/vms?since={since}", admin.token) as resumed:
            replayed = await receive_events(resumed, 7)
            assert replayed == missed_live  # the same events, in the same order, with the same payloads
            await assert_silent(resumed)

            await vm_writes(server, admin, 4, "after")
            live = await receive_events(resumed, 4)
            assert live == await receive_events(witness, 4)
            await assert_silent(resumed)

    assert_strictly_increasing(replayed + live)
    assert replayed[0]["seq"] > since
    entries = await all_changes(server, admin, entity="vm", since=since)
    assert [entry["seq"] for entry in entries] == [event["seq"] for event in replayed + live]
    for event, entry in zip(replayed + live, entries, strict=True):
        assert_event_is_entry(event, entry)


async def test_no_gap_and_no_duplicate_when_writes_race_the_resume(resume_server: LiveServer) -> None:
    """Writes go on while the listener reconnects: whatever lands in the replay or in the live stream, every
    change after ``since`` arrives exactly once, in order."""
    server = resume_server
    admin = await admin_account(server)
    await vm_writes(server, admin, 5, "before")
    since = await last_seq(server, admin)

    writer = asyncio.create_task(vm_writes(server, admin, 40, "racing"))
    try:
        await asyncio.sleep(0.05)  # some writes before the reconnect, the rest during and after it
        async with ws_connect(server, f"/ws/vms?since={since}", admin.token) as resumed:
            await asyncio.wait_for(writer, 60)
            received = await drain(resumed)
    finally:
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer

    entries = await all_changes(server, admin, entity="vm", since=since)
    assert len(entries) == 40
    assert [event["seq"] for event in received] == [entry["seq"] for entry in entries]
    for event, entry in zip(received, entries, strict=True):
        assert_event_is_entry(event, entry)


async def test_since_zero_on_a_fresh_server_replays_that_channel_only(resume_server: LiveServer) -> None:
    server = resume_server
    admin = await admin_account(server)
    vm = await create_vm(server.http, admin, name="first")
    cliente = await create_account(server.http, admin)
    expect(await server.http.patch(f"/vms/{vm['id']}", json={"cores": 8}, headers=admin.headers), 200)
    expect(
        await server.http.patch(f"/users/{cliente.id}", json={"name": "Renamed"}, headers=admin.headers), 200
    )
    await create_vm(server.http, admin, name="second")
    expect(await server.http.delete(f"/users/{cliente.id}", headers=admin.headers), 204)
    expect(await server.http.delete(f"/vms/{vm['id']}", headers=admin.headers), 204)

    for path, entity, count in (("/ws/vms", "vm", 4), ("/ws/users", "user", 4)):
        entries = await all_changes(server, admin, entity=entity)
        assert len(entries) == count, entries  # the users: the start-up administrador, then the cliente's 3
        async with ws_connect(server, f"{path}?since=0", admin.token) as socket:
            events = await receive_events(socket, count)
            await assert_silent(socket)
        assert all(event["event"].startswith(f"{entity}_") for event in events), events
        for event, entry in zip(events, entries, strict=True):
            assert_event_is_entry(event, entry)
    startup = (await all_changes(server, admin, entity="user"))[0]
    assert (startup["action"], startup["source"], startup["entity_id"]) == ("created", "startup", admin.id)


async def test_since_at_the_last_seq_is_live_only(resume_server: LiveServer) -> None:
    server = resume_server
    admin = await admin_account(server)
    await vm_writes(server, admin, 3, "old")
    since = await last_seq(server, admin)
    async with ws_connect(server, f"/ws/vms?since={since}", admin.token) as socket:
        await assert_silent(socket)
        created = await create_vm(server.http, admin, name="new")
        event = await receive_event(socket)
        assert (event["event"], event["vm"], event["seq"]) == ("vm_created", created, since + 1)
        await assert_silent(socket)


# ---------------------------------------------------------------- 2. load, then subscribe


async def test_a_list_and_the_events_after_its_change_seq_rebuild_the_final_state(
    resume_server: LiveServer,
) -> None:
    server = resume_server
    admin = await admin_account(server)
    await vm_writes(server, admin, 10, "initial")
    stop = asyncio.Event()

    async def write_until_stopped() -> int:
        made = 0
        while not stop.is_set():
            await vm_writes(server, admin, 3, f"bg{made}")
            made += 3
        return made

    writer = asyncio.create_task(write_until_stopped())
    try:
        await asyncio.sleep(0.1)
        listed = await server.http.get("/vms", params={"limit": 1000}, headers=admin.headers)
        state = {vm["id"]: vm for vm in expect(listed, 200)}
        change_seq = int(listed.headers["X-Change-Seq"])
        async with ws_connect(server, f"/ws/vms?since={change_seq}", admin.token) as socket:
            await asyncio.sleep(0.3)  # writes go on after the subscription
            stop.set()
            made = await asyncio.wait_for(writer, 30)
            events = await drain(socket)
    finally:
        stop.set()
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer

    assert made > 0
    assert events, "no write happened after the list"
    assert_strictly_increasing(events)
    assert events[0]["seq"] > change_seq
    listed_ids = set(state)
    for event in events:
        vm = event["vm"]
        if event["event"] == "vm_deleted":
            state.pop(vm["id"], None)
        else:
            state[vm["id"]] = vm
    final = await server.http.get("/vms", params={"limit": 1000}, headers=admin.headers)
    assert state == {vm["id"]: vm for vm in expect(final, 200)}
    # Every VM created after the list arrived as an event, and every change after X-Change-Seq did.
    created_later = {vm["id"] for vm in expect(final, 200)} - listed_ids
    assert created_later <= {event["vm"]["id"] for event in events if event["event"] == "vm_created"}
    entries = await all_changes(server, admin, entity="vm", since=change_seq)
    assert [event["seq"] for event in events] == [entry["seq"] for entry in entries]


# ---------------------------------------------------------------- 3. a bad since


@pytest.mark.parametrize("since", ["abc", "-1", "1.5", "", " 1", "1e3", "0x1", "\u0661", str(2**63)])
async def test_a_since_that_is_not_a_non_negative_integer_closes_with_4400(
    live_server: LiveServer, since: str
) -> None:
    admin = await admin_account(live_server)
    for path in ("/ws/vms", "/ws/users"):
        code, reason = await close_of(live_server, f"{path}?since={quote(since)}", admin.token)
        assert code == BAD_REQUEST, (path, since, code, reason)
        assert "since" in reason, reason


async def test_a_since_ahead_of_the_log_closes_with_4400(live_server: LiveServer) -> None:
    admin = await admin_account(live_server)
    await vm_writes(live_server, admin, 2, "some")
    head = await last_seq(live_server, admin)
    for ahead in (head + 1, head + 1000, 2**63 - 1):
        code, reason = await close_of(live_server, f"/ws/vms?since={ahead}", admin.token)
        assert code == BAD_REQUEST, (ahead, code, reason)
        assert "ahead" in reason, reason
    async with ws_connect(live_server, f"/ws/vms?since={head}", admin.token) as socket:
        created = await create_vm(live_server.http, admin, name="still-fine")
        assert (await receive_event(socket))["vm"] == created


@pytest.mark.parametrize("since", ["0", "abc"])
async def test_authorization_is_refused_before_since_is_looked_at(
    live_server: LiveServer, since: str
) -> None:
    admin = await admin_account(live_server)
    cliente = await create_account(live_server.http, admin)
    code, reason = await close_of(live_server, f"/ws/users?since={since}", cliente.token)
    assert code == FORBIDDEN, (code, reason)
    expired = forge_token(live_server, admin.token, expires_in=timedelta(minutes=-1))
    for path in ("/ws/vms", "/ws/users"):
        for token in (None, "not-a-jwt", expired):
            code, reason = await close_of(live_server, f"{path}?since={since}", token)
            assert code == UNAUTHORIZED, (path, token, code, reason)


# ---------------------------------------------------------------- 4. resync


async def test_a_since_older_than_the_retained_log_closes_with_4410_resync(tmp_path: Path) -> None:
    async with server_with(tmp_path, change_log_max_entries=2, change_log_prune_seconds=1) as server:
        admin = await admin_account(server)
        await vm_writes(server, admin, 6, "pruned")
        deadline = time.monotonic() + 10
        while len(entries := await all_changes(server, admin)) > 2:
            assert time.monotonic() < deadline, f"not pruned to 2 entries: {[e['seq'] for e in entries]}"
            await asyncio.sleep(0.2)
        oldest, newest = entries[0]["seq"], entries[-1]["seq"]
        assert newest == oldest + 1

        for path in ("/ws/vms", "/ws/users"):
            code, reason = await close_of(server, f"{path}?since=0", admin.token)
            assert (code, reason) == (RESYNC, "resync"), path
        code, reason = await close_of(server, f"/ws/vms?since={oldest - 2}", admin.token)
        assert (code, reason) == (RESYNC, "resync")

        # Just below the oldest entry kept: nothing it needs was pruned.
        async with ws_connect(server, f"/ws/vms?since={oldest - 1}", admin.token) as socket:
            replayed = await receive_events(socket, 2)
            assert [event["seq"] for event in replayed] == [oldest, newest]
            for event, entry in zip(replayed, entries, strict=True):
                assert_event_is_entry(event, entry)
            await assert_silent(socket)
        async with ws_connect(server, f"/ws/vms?since={newest}", admin.token) as socket:
            await assert_silent(socket)
            created = await create_vm(server.http, admin, name="after-the-prune")
            event = await receive_event(socket)
            assert (event["vm"], event["seq"]) == (created, newest + 1)


# ---------------------------------------------------------------- 5. a change made by the CLI


@pytest.mark.parametrize("channels", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def test_an_admin_created_by_the_cli_reaches_a_running_servers_listener(
    tmp_path: Path, channels: str
) -> None:
    if channels == "redis":
        require("redis")
    async with server_with(tmp_path, channels=channels) as server:
        settings = settings_of(server)
        admin = await admin_account(server)
        env = {
            "VMS_DATABASE_URL": settings.database_url,
            "VMS_JWT_SECRET_FILE": str(settings.jwt_secret_file),
            "VMS_BCRYPT_ROUNDS": "4",
        }
        if channels == "redis":  # the same Redis and namespace as the server
            env |= {"VMS_REDIS_URL": str(settings.redis_url), "VMS_REDIS_NAMESPACE": settings.redis_namespace}
        email = f"cli-{uuid.uuid4().hex[:8]}@example.com"
        async with ws_connect(server, "/ws/users", admin.token) as socket:
            created = await run_cli(
                env,
                "users",
                "create-admin",
                "--email",
                email,
                "--name",
                "From CLI",
                "--password",
                "cli-pass-123",
            )
            exited = time.monotonic()
            assert created.code == 0, created.output
            event = await receive_event(socket)
            delay = time.monotonic() - exited
            await assert_silent(socket)
        assert (event["event"], event["user"]["email"], event["user"]["rol"]) == (
            "user_created",
            email,
            "administrador",
        )
        assert event["actor_id"] is None
        assert delay < 2.0, f"the CLI's change reached the listener {delay:.2f} s after the CLI exited"
        (entry,) = await all_changes(server, admin, entity="user", since=event["seq"] - 1)
        assert (entry["source"], entry["seq"], entry["entity_id"]) == (
            "cli",
            event["seq"],
            event["user"]["id"],
        )


# ---------------------------------------------------------------- pruning while a replay is under way


@asynccontextmanager
async def small_send_buffer_server(tmp_path: Path, **overrides: Any) -> AsyncIterator[LiveServer]:
    """The app on uvicorn with a small kernel send buffer on its sockets (set on the listening socket, which
    accepted ones inherit): a client that stops reading stalls the server's sends after a few dozen KB, as
    over a slow network, instead of after the megabytes loopback would otherwise buffer."""
    directory = tmp_path / "small-buffers"
    directory.mkdir()
    app = create_app(make_settings(directory, **overrides))
    listening = socket.socket()
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
    listening.bind(("127.0.0.1", 0))
    port = listening.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", ws="websockets-sansio", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[listening]))
    try:
        for _ in range(500):
            if server.started:
                break
            if task.done():
                task.result()
            await asyncio.sleep(0.02)
        base_url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=CLIENT_LIMITS) as http:
            yield LiveServer(base_url=base_url, ws_url=f"ws://127.0.0.1:{port}", http=http, app=app)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=30)
        listening.close()
        await dispose_engines(app)


async def test_entries_pruned_while_a_replay_is_stalled_are_not_skipped_silently(tmp_path: Path) -> None:
    """A slow client stalls its replay (the server waits for it to read); meanwhile writes go on and retention
    prunes entries the replay has not read from the log yet. The client must get every entry after its
    ``since``, or be told to resync (4410): never a silent gap."""
    cap = 600
    async with small_send_buffer_server(
        tmp_path, change_log_max_entries=cap, change_log_prune_seconds=1, ws_backlog=100_000
    ) as server:
        admin = await admin_account(server)
        padding = {"os": "o" * 100}  # big frames: the client's buffers fill with fewer of them

        async def create_many(count: int, prefix: str) -> None:
            for start in range(0, count, 20):
                await asyncio.gather(
                    *(
                        create_vm(server.http, admin, name=f"{prefix}-{index:04d}".ljust(100, "x"), **padding)
                        for index in range(start, min(start + 20, count))
                    )
                )

        await create_many(cap, "old")
        deadline = time.monotonic() + 10
        while (oldest := await oldest_seq(server, admin)) <= 1:  # the start-up administrador's entry
            assert time.monotonic() < deadline, "the log was not pruned to its cap"
            await asyncio.sleep(0.2)
        since = oldest - 1

        # A client that reads nothing for now, with a small receive window: the replay stalls on it.
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.connect(("127.0.0.1", int(server.base_url.rsplit(":", 1)[1])))
        raw.setblocking(False)
        url = f"{server.ws_url}/ws/vms?since={since}&token={admin.token}"
        async with connect(
            url, sock=raw, max_queue=1, compression=None, open_timeout=EVENT_TIMEOUT, close_timeout=2
        ) as slow:
            await asyncio.sleep(0.5)
            await create_many(cap, "new")  # pushes every entry the replay has not sent out of the cap
            head = await last_seq(server, admin)
            while await oldest_seq(server, admin) <= head - cap:
                assert time.monotonic() < deadline + 30, "the log was not pruned to its cap"
                await asyncio.sleep(0.2)
            received: list[int] = []
            close_code = None
            try:
                while True:
                    received.append((await receive_event(slow, 2.0))["seq"])
            except TimeoutError:
                pass
            except ConnectionClosed as closed:
                close_code = closed.rcvd.code if closed.rcvd else None
    if close_code == RESYNC:
        assert received == list(range(since + 1, since + 1 + len(received)))
        return
    assert close_code is None, close_code
    missing = sorted(set(range(since + 1, head + 1)) - set(received))
    assert not missing, (
        f"{len(missing)} entries after since={since} never arrived and no 4410 was sent "
        f"(first missing {missing[:3]}, received {len(received)} of {head - since})"
    )
