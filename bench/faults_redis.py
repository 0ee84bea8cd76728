"""Redis faults: VMS on SQLite with its own ``redis-server``, which is killed and started again on its port.

- ``redis-restart``: Redis away for one second;
- ``redis-down``: Redis away for five seconds.

A client keeps going through the fault (a write, a list, ``/health``, and a login every fifth round) while
a WebSocket listener counts the events of the acknowledged writes. Detect: from the kill to the first
``/health`` that says ``degraded``. Heal: from the restart to the first ``/health`` that says ``ok`` again.
Requests: how every request from the kill until healed ended. Lost: acknowledged writes whose event the
listener did not get (within 5 s after the end), or got out of order.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
import socket
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable
from contextlib import contextmanager, suppress
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import msgspec
from websockets.asyncio.client import ClientConnection, connect

from bench.faults import FaultResult
from bench.http import ADMIN_EMAIL, ADMIN_PASSWORD, free_port, serve

VM = {"cores": 1, "ram": 512, "disk": 10, "os": "Debian 12", "status": "running"}
BEFORE_SECONDS = 1.0
"""Traffic before the fault."""
AFTER_SECONDS = 2.0
"""Traffic after healing, to see that it stays healed."""
EVENT_SECONDS = 5.0


class RedisProcess:
    """A ``redis-server`` of this run (no persistence), killed and started by its PID only."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._command = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        self._command += ["--appendonly", "no", "--dir", str(workdir)]
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._process = subprocess.Popen(self._command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return
            time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=10)


@contextmanager
def redis_server(workdir: Path) -> Any:
    server = RedisProcess(workdir)
    server.start()
    try:
        yield server
    finally:
        server.kill()


def redis_outage(down_seconds: float, workdir: Path) -> FaultResult:
    with redis_server(workdir) as redis:
        env = {
            "VMS_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'vms.sqlite3'}",
            "VMS_REDIS_URL": redis.url,
            "VMS_REDIS_NAMESPACE": f"vms-bench-{uuid.uuid4().hex[:8]}",
            "VMS_ADMIN_EMAIL": ADMIN_EMAIL,
            "VMS_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "VMS_LOGIN_RATE_LIMIT": "100000",
            "VMS_BCRYPT_ROUNDS": "4",
        }
        with serve("app:create_app", env, workdir) as server:
            return asyncio.run(_drive(server.url, redis, down_seconds))


async def _drive(url: str, redis: RedisProcess, down_seconds: float) -> FaultResult:
    credentials = {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        token = (await http.post("/login", json=credentials)).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        ws_url = url.replace("http://", "ws://", 1) + "/ws/vms"
        async with connect(ws_url, additional_headers=headers, open_timeout=10) as listener:
            received: list[tuple[int, int]] = []  # (seq, vm id) as the listener got them
            listening = asyncio.create_task(_listen(listener, received))
            acknowledged: list[int] = []
            outcomes: Counter[str] = Counter()
            killed_at: float | None = None
            restarted_at: float | None = None
            detected: float | None = None
            healed: float | None = None
            rounds = 0
            started = time.monotonic()
            while True:
                now = time.monotonic()
                if killed_at is None and now - started >= BEFORE_SECONDS:
                    redis.kill()
                    killed_at = now
                elif killed_at is not None and restarted_at is None and now - killed_at >= down_seconds:
                    await asyncio.to_thread(redis.start)
                    restarted_at = time.monotonic()
                elif (
                    restarted_at is not None
                    and healed is not None
                    and now - restarted_at - healed >= AFTER_SECONDS
                ):
                    break
                elif killed_at is not None and now - killed_at > down_seconds + 30:
                    break  # never healed: report it as such
                in_fault = killed_at is not None and healed is None
                rounds += 1
                requests: list[tuple[str, Callable[[], Any]]] = [
                    (
                        "write",
                        partial(http.post, "/vms", json={**VM, "name": f"f-{rounds}"}, headers=headers),
                    ),
                    ("list", partial(http.get, "/vms", params={"limit": 5}, headers=headers)),
                    ("health", partial(http.get, "/health")),
                ]
                if rounds % 5 == 0:
                    requests.append(("login", partial(http.post, "/login", json=credentials)))
                for kind, send in requests:
                    try:
                        response = await send()
                    except httpx.TimeoutException:
                        outcome, response = "timeout", None
                    except httpx.TransportError:
                        outcome, response = "error", None
                    else:
                        outcome = str(response.status_code)
                    if in_fault:
                        outcomes[outcome] += 1
                    if response is None:
                        continue
                    if kind == "write" and response.status_code == 201:
                        acknowledged.append(int(response.json()["id"]))
                    if kind == "health" and killed_at is not None:
                        status = response.json().get("status")
                        if detected is None and status == "degraded":
                            detected = time.monotonic() - killed_at
                        if restarted_at is not None and healed is None and status == "ok":
                            healed = time.monotonic() - restarted_at
                await asyncio.sleep(0.02)

            for _ in range(int(EVENT_SECONDS / 0.05)):  # the events still on their way
                if len(received) >= len(acknowledged):
                    break
                await asyncio.sleep(0.05)
            listening.cancel()
            with suppress(asyncio.CancelledError):
                await listening
    got = [vm_id for _, vm_id in received]
    in_order = all(a < b for (a, _), (b, _) in itertools.pairwise(received))
    lost = len(set(acknowledged) - set(got)) + (0 if in_order else 1)
    note = f"Redis away {down_seconds:.0f} s; {len(acknowledged)} writes, {len(got)} events"
    note += "" if in_order else ", OUT OF ORDER"
    return FaultResult(detect_seconds=detected, heal_seconds=healed, outcomes=outcomes, lost=lost, note=note)


async def _listen(listener: ClientConnection, received: list[tuple[int, int]]) -> None:
    async for message in listener:
        event = msgspec.json.decode(message)
        if event.get("event", "").startswith("vm_"):
            received.append((int(event["seq"]), int(event["vm"]["id"])))


SCENARIOS: dict[str, Callable[[Path], FaultResult]] = {
    "redis-restart": partial(redis_outage, 1.0),
    "redis-down": partial(redis_outage, 5.0),
}
