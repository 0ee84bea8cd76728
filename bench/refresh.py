"""Refresh throughput: ``POST /login/refresh`` chains against one uvicorn worker on SQLite.

    uv run python -m bench refresh [--chains 16] [--duration 10]

Each chain is one session refreshing back to back, always with the refresh token the previous answer gave
(a refresh token works once, so wrk's fixed request cannot drive this). Prints refreshes per second, the
latency p50 / p99, the errors, and refreshes per CPU-second of the server process (throughput per core,
whatever else the shared machine is doing). The load generator runs in this process, on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from bench.http import ADMIN_EMAIL, ADMIN_PASSWORD, PROJECT_ROOT, serve

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


async def run_chains(url: str, chains: int, duration: float) -> tuple[list[float], int]:
    """Latencies (ms) of the successful refreshes, and the number of failed ones."""
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=chains)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as http:
        credentials = {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
        tokens = [
            (await http.post("/login", json=credentials)).raise_for_status().json()["refresh_token"]
            for _ in range(chains)
        ]
        deadline = time.perf_counter() + duration

        async def chain(token: str) -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                response = await http.post("/login/refresh", json={"refresh_token": token})
                if response.status_code != 200:
                    errors += 1
                    return  # the chain's session has ended; nothing more to refresh
                latencies.append((time.perf_counter() - started) * 1000)
                token = response.json()["refresh_token"]

        await asyncio.gather(*(chain(token) for token in tokens))
    return latencies, errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench refresh", description=__doc__)
    parser.add_argument("--chains", type=int, default=16, help="sessions refreshing at once")
    parser.add_argument("--duration", type=float, default=10, help="seconds of refreshing")
    parser.add_argument("--app-dir", type=Path, default=PROJECT_ROOT, help="the VMS checkout to measure")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="vms-bench-refresh-") as tmp:
        workdir = Path(tmp)
        env = {
            "VMS_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'vms.sqlite3'}",
            "VMS_ADMIN_EMAIL": ADMIN_EMAIL,
            "VMS_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "VMS_LOGIN_RATE_LIMIT": "100000",
            "VMS_LOGIN_ACCOUNT_FAILURES": "100000",
            "VMS_BCRYPT_ROUNDS": "4",  # logins only open the chains; a refresh runs no bcrypt
        }
        with serve("app:create_app", env, workdir, app_dir=args.app_dir) as server:
            pid = server.process.pid
            asyncio.run(run_chains(server.url, 2, 1))  # warm up
            cpu_before, started = cpu_seconds(pid), time.perf_counter()
            latencies, errors = asyncio.run(run_chains(server.url, args.chains, args.duration))
            elapsed, cpu = time.perf_counter() - started, cpu_seconds(pid) - cpu_before
    done = len(latencies)
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    print(f"refresh POST /login/refresh ({args.chains} chains, {args.duration:g} s)")
    print(f"  {done / elapsed:,.0f} refreshes/s, p50 {quantiles[49]:.1f} ms, p99 {quantiles[98]:.1f} ms")
    print(f"  errors: {errors}")
    print(f"  {done / cpu:,.0f} refreshes per CPU-second of the server ({cpu:.1f} CPU-s for {done:,})")
    return 1 if errors else 0
