"""SQLite's storage faults for ``bench faults``: the disk fills up; the database files are read-only.

Each starts one VMS process (``bench.http.serve``) on storage of its own (``tests/helpers/mounts.py``: a
small tmpfs, a bind mount flipped to read-only; both need root), keeps writing through the fault, ends it,
and counts what was acknowledged and is missing afterwards.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx

from bench.faults import FaultResult
from bench.http import ADMIN_EMAIL, ADMIN_PASSWORD, login, serve
from tests.helpers.mounts import bind_mount, fill, small_tmpfs

VM = {"name": "x" * 100, "cores": 2, "ram": 2048, "disk": 40, "os": "y" * 100, "status": "running"}
LIMIT_SECONDS = 30.0


def _env(database: Path) -> dict[str, str]:
    return {
        "VMS_DATABASE_URL": f"sqlite+aiosqlite:///{database}",
        "VMS_JWT_SECRET": uuid.uuid4().hex + uuid.uuid4().hex,
        "VMS_ADMIN_EMAIL": ADMIN_EMAIL,
        "VMS_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "VMS_BCRYPT_ROUNDS": "4",
        "VMS_DB_TIMEOUT_SECONDS": "2",
    }


class _Writer:
    """POSTs VMs, keeping what was acknowledged and how every answer ended."""

    def __init__(self, http: httpx.Client, headers: dict[str, str]) -> None:
        self.http, self.headers = http, headers
        self.acknowledged: list[int] = []
        self.outcomes: Counter[str] = Counter()

    def write(self) -> int | str:
        try:
            response = self.http.post("/vms", json=VM, headers=self.headers)
        except httpx.TimeoutException:
            self.outcomes["timeout"] += 1
            return "timeout"
        self.outcomes[str(response.status_code)] += 1
        if response.status_code == 201:
            self.acknowledged.append(response.json()["id"])
        return response.status_code

    def until(self, wanted: int) -> float | None:
        """Seconds until a write answers ``wanted`` (None if none does within the limit)."""
        started = time.monotonic()
        while time.monotonic() - started < LIMIT_SECONDS:
            if self.write() == wanted:
                return time.monotonic() - started
        return None

    def lost(self) -> int:
        listed: set[int] = set()
        offset = 0
        while True:
            page = self.http.get("/vms", params={"limit": 1000, "offset": offset}, headers=self.headers)
            page.raise_for_status()
            listed |= {vm["id"] for vm in page.json()}
            if len(page.json()) < 1000:
                break
            offset += 1000
        return len(set(self.acknowledged) - listed)


def disk_full(scratch: Path) -> FaultResult:
    with (
        small_tmpfs(32) as disk,
        serve("app:create_app", _env(disk / "vms.sqlite3"), scratch) as server,
        httpx.Client(base_url=server.url, timeout=10) as http,
    ):
        writer = _Writer(http, {"Authorization": f"Bearer {login(server.url, ADMIN_EMAIL, ADMIN_PASSWORD)}"})
        for _ in range(20):
            writer.write()
        filler = fill(disk)
        detect = writer.until(503)
        reads = Counter(str(http.get("/vms", headers=writer.headers).status_code) for _ in range(20))
        health = http.get("/health").json()
        filler.unlink()
        heal = writer.until(201)
        outcomes = writer.outcomes + Counter({f"read {key}": count for key, count in reads.items()})
        return FaultResult(
            detect_seconds=detect,
            heal_seconds=heal,
            outcomes=outcomes,
            lost=writer.lost(),
            note=f"health during the fault: {health['status']}, writable {health['database_writable']}",
        )


def read_only(scratch: Path) -> FaultResult:
    data = scratch / "data"
    data.mkdir()
    with bind_mount(data) as mount:
        env = _env(mount.view / "vms.sqlite3")
        with serve("app:create_app", env, scratch) as server, httpx.Client(base_url=server.url) as http:
            token = login(server.url, ADMIN_EMAIL, ADMIN_PASSWORD)
            before = _Writer(http, {"Authorization": f"Bearer {token}"})
            for _ in range(20):
                before.write()
        keeper = sqlite3.connect(data / "vms.sqlite3")  # keeps the WAL's files, as a live host would
        try:
            keeper.execute("SELECT count(*) FROM virtual_machine").fetchone()
            mount.read_only()
            with (
                serve("app:create_app", env, scratch) as server,
                httpx.Client(base_url=server.url, timeout=10) as http,
            ):
                writer = _Writer(http, before.headers)
                writer.acknowledged = list(before.acknowledged)
                health = http.get("/health").json()
                detect = writer.until(503)
                for _ in range(20):
                    writer.write()
                mount.writable()
                heal = writer.until(201)
                return FaultResult(
                    detect_seconds=detect,
                    heal_seconds=heal,
                    outcomes=writer.outcomes,
                    lost=writer.lost(),
                    note=f"health at start: {health['status']}, writable {health['database_writable']}",
                )
        finally:
            keeper.close()


SCENARIOS = {"sqlite-disk-full": disk_full, "sqlite-read-only": read_only}
