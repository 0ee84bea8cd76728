"""Scale-out benchmark: read and write throughput for 1, 2 and 4 workers on PostgreSQL + Redis,
side by side with the single-process SQLite figure.

    uv run python -m bench scaleout [--duration 10] [--vms 2000] [--workers 1,2,4]

Needs wrk, and PostgreSQL and Redis on this host (VMS_BENCH_POSTGRES_URL, default
postgresql://postgres@127.0.0.1:5432/test, gets a database of its own for the run; VMS_BENCH_REDIS_URL,
default redis://127.0.0.1:6379/0). bcrypt cost 12 as in production; the login limit is lifted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

import asyncpg

from bench.http import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    READ_SCRIPT,
    WRITE_SCRIPT,
    WrkResult,
    load_vms,
    login,
    serve,
    wrk,
)

POSTGRES_URL = os.environ.get("VMS_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("VMS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


async def _sql(sql: str) -> None:
    connection = await asyncpg.connect(POSTGRES_URL)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


def measure(
    env: dict[str, str], workdir: Path, *, workers: int, vms: int, duration: int
) -> tuple[WrkResult, WrkResult]:
    with serve("app:create_app", env, workdir, workers=workers) as server:
        token = login(server.url, ADMIN_EMAIL, ADMIN_PASSWORD)
        asyncio.run(load_vms(server.url, token, vms))
        wrk_env = {"TOKEN": token, "VM_COUNT": str(vms)}
        read = wrk(server.url, connections=32, duration=duration, script=READ_SCRIPT, env=wrk_env)
        write = wrk(server.url, connections=16, duration=duration, script=WRITE_SCRIPT, env=wrk_env)
    return read, write


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench scaleout", description=__doc__)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--vms", type=int, default=2000, help="VMs to load before measuring")
    parser.add_argument("--workers", default="1,2,4", help="worker counts to measure")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is needed: apt-get install wrk", file=sys.stderr)
        return 2
    counts = [int(count) for count in args.workers.split(",")]
    base = {
        "VMS_ADMIN_EMAIL": ADMIN_EMAIL,
        "VMS_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "VMS_LOGIN_RATE_LIMIT": "100000",
        "VMS_BCRYPT_ROUNDS": "12",
        "VMS_JWT_SECRET": uuid.uuid4().hex + uuid.uuid4().hex,
    }
    results: list[tuple[str, WrkResult, WrkResult]] = []
    with tempfile.TemporaryDirectory(prefix="vms-scaleout-") as tmp:
        workdir = Path(tmp)
        sqlite_env = {**base, "VMS_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'vms.sqlite3'}"}
        read, write = measure(sqlite_env, workdir, workers=1, vms=args.vms, duration=args.duration)
        results.append(("SQLite, memory channels, 1 process", read, write))
        print(f"done: {results[-1][0]}", flush=True)
        for count in counts:
            name = f"vms_bench_{uuid.uuid4().hex[:8]}"
            asyncio.run(_sql(f'CREATE DATABASE "{name}"'))
            try:
                url = POSTGRES_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
                env = {
                    **base,
                    "VMS_DATABASE_URL": f"{url}/{name}",
                    "VMS_REDIS_URL": REDIS_URL,
                    "VMS_REDIS_NAMESPACE": name,
                    "VMS_DB_POOL_SIZE": "5",  # per worker, with as many overflow: 4 workers stay under PostgreSQL's 100
                }
                read, write = measure(env, workdir, workers=count, vms=args.vms, duration=args.duration)
                results.append((f"PostgreSQL + Redis, {count} worker{'s' if count > 1 else ''}", read, write))
                print(f"done: {results[-1][0]}", flush=True)
            finally:
                asyncio.run(_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    print()
    print(
        f"{'deployment':<38} {'read req/s':>11} {'read p99 ms':>12} {'write req/s':>12} {'write p99 ms':>13} {'errors':>7}"
    )
    for label, read, write in results:
        print(
            f"{label:<38} {read.requests_per_second:>11,.0f} {read.p99_ms:>12.1f} "
            f"{write.requests_per_second:>12,.0f} {write.p99_ms:>13.1f} {read.errors + write.errors:>7}"
        )
    print(f"\n(read: GET /vms/{{id}} with 32 connections; write: POST /vms with 16; {os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
