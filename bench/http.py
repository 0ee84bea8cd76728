"""HTTP benchmark: read, list, writes (create, update, delete), login storm, ceiling, memory; one worker.

    uv run python -m bench http [--duration 10] [--vms 10000]

Starts the service (uvicorn, one worker, uvloop + httptools) on a fresh SQLite file with production
settings (bcrypt cost 12),
loads an administrador and 10,000 VMs, drives it with wrk (Debian package ``wrk``) and prints one table.
The login rate limit is lifted for the run so the storm measures bcrypt, not the limiter.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt
import httpx

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ADMIN_EMAIL = "bench-admin@example.com"
ADMIN_PASSWORD = "bench-admin-password"
CLIENT_PASSWORD = "bench-client-password"
UVICORN_OPTIONS = ["--loop", "uvloop", "--http", "httptools", "--log-level", "warning", "--no-access-log"]


# ---------------------------------------------------------------- server processes


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str

    def cpu_seconds(self) -> float:
        """CPU time the server process has used so far (user + system, all its threads)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_kb(self, key: str = "VmRSS") -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        return 0


def free_port() -> int:
    # The benchmarks' own copy of tests.helpers.free_port: bench is a tool run with `python -m bench`,
    # and importing tests.helpers would load pytest, the fixtures and the app into the load generator.
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(
    factory: str,
    env: dict[str, str],
    workdir: Path,
    workers: int = 1,
    app_dir: Path = PROJECT_ROOT,
    *,
    wrapper: tuple[str, ...] = (),
    start_seconds: float = 60,
) -> Iterator[Server]:
    """The server, started as ``wrapper`` + uvicorn (``wrapper``: a program that runs it, such as
    valgrind), given ``start_seconds`` to answer."""
    port = free_port()
    log = (workdir / f"server-{port}.log").open("w")
    worker_options = ["--workers", str(workers)] if workers > 1 else []
    process = subprocess.Popen(
        [
            *wrapper,
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            factory,
            "--port",
            str(port),
            *UVICORN_OPTIONS,
            *worker_options,
        ],
        cwd=app_dir,
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_seconds
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"server exited: {(workdir / f'server-{port}.log').read_text()}")
            try:
                if httpx.get(
                    url + "/docs/openapi.json" if "ceiling" not in factory else url + "/vms/1"
                ).is_success:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        else:
            raise RuntimeError("server did not start")
        yield Server(process=process, url=url)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


# ---------------------------------------------------------------- wrk


@dataclass
class WrkResult:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        return float("nan")
    return float(match.group(1)) * _UNIT_MS[match.group(2)]


def wrk(url: str, *, connections: int, duration: int, script: str, env: dict[str, str]) -> WrkResult:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
    try:
        output = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", handle.name, url],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, **env},
        ).stdout
    finally:
        os.unlink(handle.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    errors = 0
    if match := re.search(r"Non-2xx or 3xx responses: (\d+)", output):
        errors += int(match.group(1))
    if match := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output):
        errors += sum(int(value) for value in match.groups())
    return WrkResult(rps, p50, p99, errors, requests)


READ_SCRIPT = """
local token = os.getenv("TOKEN")
local count = tonumber(os.getenv("VM_COUNT"))
request = function()
  local path = "/vms/" .. math.random(1, count)
  return wrk.format("GET", path, {["Authorization"] = "Bearer " .. token})
end
"""

LIST_SCRIPT = """
local token = os.getenv("TOKEN")
request = function()
  local path = "/vms?limit=100&offset=" .. math.random(0, 9800)
  return wrk.format("GET", path, {["Authorization"] = "Bearer " .. token})
end
"""

WRITE_SCRIPT = """
local token = os.getenv("TOKEN")
local n = 0
request = function()
  n = n + 1
  local body = '{"name":"bench-' .. n .. '","cores":2,"ram":2048,"disk":20,"os":"Debian 12","status":"running"}'
  return wrk.format("POST", "/vms", {["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json"}, body)
end
"""

# PATCH a random loaded VM; the cores cycle so nearly every request changes the row (a PATCH that changes
# nothing writes nothing).
PATCH_SCRIPT = """
local token = os.getenv("TOKEN")
local count = tonumber(os.getenv("VM_COUNT"))
local n = 0
request = function()
  n = n + 1
  local path = "/vms/" .. math.random(1, count)
  local body = '{"cores":' .. (1 + n % 1024) .. '}'
  return wrk.format("PATCH", path, {["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json"}, body)
end
"""

# DELETE VMs from DELETE_TOP downwards: the harness first adds DELETE_BUDGET_PER_SECOND x duration VMs on
# top, so every id it sends exists; a run faster than that would show as errors (404s), not hide.
DELETE_SCRIPT = """
local token = os.getenv("TOKEN")
local top = tonumber(os.getenv("DELETE_TOP"))
local n = 0
request = function()
  local path = "/vms/" .. (top - n)
  n = n + 1
  return wrk.format("DELETE", path, {["Authorization"] = "Bearer " .. token})
end
"""
# VMs added before each delete run, per second of it: above any delete rate this machine reaches.
DELETE_BUDGET_PER_SECOND = 2500

CEILING_SCRIPT = """
local count = tonumber(os.getenv("VM_COUNT"))
request = function()
  return wrk.format("GET", "/vms/" .. math.random(1, count))
end
"""


# ---------------------------------------------------------------- scenarios


def login(url: str, email: str, password: str) -> str:
    response = httpx.post(url + "/login", json={"email": email, "password": password}, timeout=30)
    response.raise_for_status()
    return str(response.json()["access_token"])


async def load_vms(url: str, token: str, count: int) -> int:
    """Create ``count`` VMs through the API; the highest id created (0 if none)."""
    highest = 0
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=32)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=60) as http:
        semaphore = asyncio.Semaphore(32)

        async def one(index: int) -> None:
            async with semaphore:
                body = {
                    "name": f"vm-{index}",
                    "cores": 1 + index % 64,
                    "ram": 1024,
                    "disk": 50,
                    "os": "Debian 12",
                }
                for attempt in range(3):
                    try:
                        response = await http.post("/vms", json=body)
                        break
                    except httpx.TransportError:
                        # A keep-alive connection the server closed just as it was reused: send again.
                        if attempt == 2:
                            raise
                response.raise_for_status()
                nonlocal highest
                highest = max(highest, int(response.json()["id"]))

        await asyncio.gather(*(one(index) for index in range(count)))
    return highest


@dataclass
class LoginStorm:
    stop: threading.Event = field(default_factory=threading.Event)
    logins: int = 0
    failures: int = 0
    measured_from: tuple[float, int] = (0.0, 0)  # (time, logins) once every client is going

    def rate(self) -> float:
        """Logins per second since the measurement started."""
        started, before = self.measured_from
        return (self.logins - before) / (time.perf_counter() - started)


@contextmanager
def login_storm(url: str, email: str, clients: int) -> Iterator[LoginStorm]:
    """``clients`` threads logging in back to back for as long as the block runs."""
    storm = LoginStorm()

    def client() -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            while not storm.stop.is_set():
                response = http.post("/login", json={"email": email, "password": CLIENT_PASSWORD})
                if response.status_code == 200:
                    storm.logins += 1
                else:
                    storm.failures += 1

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    time.sleep(1)  # let every client get going before measuring
    storm.measured_from = (time.perf_counter(), storm.logins)
    try:
        yield storm
    finally:
        storm.stop.set()
        for thread in threads:
            thread.join(timeout=30)


def bcrypt_check_seconds(rounds: int = 12) -> float:
    hashed = bcrypt.hashpw(b"calibration-password", bcrypt.gensalt(rounds))
    samples = []
    for _ in range(3):
        started = time.perf_counter()
        bcrypt.checkpw(b"calibration-password", hashed)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench http", description=__doc__)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--vms", type=int, default=10_000, help="VMs to load")
    parser.add_argument("--storm-clients", type=int, default=8)
    parser.add_argument(
        "--app-dir",
        type=Path,
        default=PROJECT_ROOT,
        help="measure the VMS code in this checkout (e.g. a git worktree of an older commit)",
    )
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is needed: apt-get install wrk", file=sys.stderr)
        return 2

    rows: list[tuple[str, str, str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="vms-bench-") as tmp:
        workdir = Path(tmp)
        env = {
            "VMS_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'vms.sqlite3'}",
            "VMS_ADMIN_EMAIL": ADMIN_EMAIL,
            "VMS_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "VMS_LOGIN_RATE_LIMIT": "100000",
            "VMS_BCRYPT_ROUNDS": "12",
        }
        with serve("bench.ceiling_app:create_app", {}, workdir) as ceiling_server:
            ceiling = wrk(
                ceiling_server.url,
                connections=32,
                duration=args.duration,
                script=CEILING_SCRIPT,
                env={"VM_COUNT": str(args.vms)},
            )
        print(f"ceiling: {ceiling.requests_per_second:,.0f} req/s", flush=True)

        with serve("app:create_app", env, workdir, app_dir=args.app_dir) as server:
            token = login(server.url, ADMIN_EMAIL, ADMIN_PASSWORD)
            started = time.perf_counter()
            asyncio.run(load_vms(server.url, token, args.vms))
            print(f"loaded {args.vms} VMs in {time.perf_counter() - started:.1f}s", flush=True)
            client_email = "bench-client@example.com"
            httpx.post(
                server.url + "/users",
                json={"name": "Bench", "email": client_email, "password": CLIENT_PASSWORD},
                headers={"Authorization": f"Bearer {token}"},
            ).raise_for_status()
            wrk_env = {"TOKEN": token, "VM_COUNT": str(args.vms)}

            def add_row(name: str, result: WrkResult) -> None:
                rows.append(
                    (
                        name,
                        f"{result.requests_per_second:,.0f}",
                        f"{result.p50_ms:.1f} / {result.p99_ms:.1f}",
                        str(result.errors),
                        f"{result.requests_per_second / ceiling.requests_per_second:.0%}",
                    )
                )

            read = wrk(server.url, connections=32, duration=args.duration, script=READ_SCRIPT, env=wrk_env)
            add_row("read GET /vms/{id} (c=32)", read)
            listing = wrk(server.url, connections=32, duration=args.duration, script=LIST_SCRIPT, env=wrk_env)
            add_row("list GET /vms?limit=100 (c=32)", listing)
            for connections in (16, 64):
                write = wrk(
                    server.url,
                    connections=connections,
                    duration=args.duration,
                    script=WRITE_SCRIPT,
                    env=wrk_env,
                )
                add_row(f"write POST /vms (c={connections})", write)

            patch = wrk(server.url, connections=16, duration=args.duration, script=PATCH_SCRIPT, env=wrk_env)
            add_row("update PATCH /vms/{id} (c=16)", patch)
            budget = DELETE_BUDGET_PER_SECOND * args.duration
            top = asyncio.run(load_vms(server.url, token, budget))
            removal = wrk(
                server.url,
                connections=16,
                duration=args.duration,
                script=DELETE_SCRIPT,
                env={**wrk_env, "DELETE_TOP": str(top)},
            )
            add_row("delete DELETE /vms/{id} (c=16)", removal)

            idle = wrk(server.url, connections=8, duration=args.duration, script=READ_SCRIPT, env=wrk_env)
            # Logins alone first: how close the service gets to what the cores can hash.
            with login_storm(server.url, client_email, args.storm_clients) as alone:
                time.sleep(args.duration)
                alone_rate = alone.rate()
            # Then logins during reads: the reads' latency must not suffer much.
            with login_storm(server.url, client_email, args.storm_clients) as storm:
                stormy = wrk(
                    server.url, connections=8, duration=args.duration, script=READ_SCRIPT, env=wrk_env
                )
                login_rate = storm.rate()
            peak_rss_mb = server.rss_kb("VmHWM") / 1024

        check = bcrypt_check_seconds()
        cores = os.cpu_count() or 1
        capacity = cores / check
        add_row("read (c=8), idle", idle)
        add_row(f"read (c=8), {args.storm_clients} clients logging in", stormy)

    print()
    print(f"{'scenario':<44} {'req/s':>8} {'p50 / p99 ms':>16} {'errors':>7} {'of ceiling':>11}")
    print(
        f"{'ceiling: bare Litestar, same JSON (c=32)':<44} {ceiling.requests_per_second:>8,.0f} "
        f"{f'{ceiling.p50_ms:.1f} / {ceiling.p99_ms:.1f}':>16} {ceiling.errors:>7} {'100%':>11}"
    )
    for name, rps, latency, errors, fraction in rows:
        print(f"{name:<44} {rps:>8} {latency:>16} {errors:>7} {fraction:>11}")
    print()
    print(
        f"login storm: read p99 {stormy.p99_ms:.1f} ms vs idle {idle.p99_ms:.1f} ms "
        f"= {stormy.p99_ms / idle.p99_ms:.1f}x (target <= 3x)"
    )
    print(
        f"logins alone: {alone_rate:.1f} logins/s; the cores can hash {capacity:.1f}/s "
        f"({cores} cores / {check * 1000:.0f} ms per bcrypt check) = {alone_rate / capacity:.0%} (target >= 80%); "
        f"{alone.failures} failed logins"
    )
    print(
        f"logins during the read load: {login_rate:.1f} logins/s = {login_rate / capacity:.0%} of what the cores "
        f"can hash (the reads take the rest of the CPU); {storm.failures} failed logins"
    )
    print(f"server peak RSS: {peak_rss_mb:.0f} MB with {args.vms} VMs loaded (target < 150 MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
