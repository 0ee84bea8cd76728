"""Resume under load: while N listeners on ``/ws/vms`` receive live writes, one client reconnects with
``?since=`` a backlog of B events back; how long its replay takes, and what it costs the live listeners.

    uv run python -m bench resume [--listeners 200] [--backlog 10000] [--writes 300] [--interval 0.02]

Starts the service as ``bench fanout`` does (its own process, a fresh SQLite file, production settings),
makes the backlog of B VM creations (``backlog-<i>``) over HTTP, connects the listeners from ``--processes``
separate processes, then makes the M live writes (``fanout-<i>``, ``--interval`` apart) from a thread. A
third of the way through them, a client in a process of its own connects with ``since`` = the seq before
the backlog and notes when each backlog event arrives.

Printed: the replay's duration (from the connect to the last backlog event; target < 2 s) and the live
listeners' delivery delay (write's HTTP response to receipt) for the writes answered during the replay
beside those answered outside it: p50 and p99 of each, and how much p99 grew (target < 100 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import multiprocessing
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import httpx

from bench.fanout import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    LISTENER_EMAIL,
    LISTENER_PASSWORD,
    NAME_PREFIX,
    Writes,
    make_writes,
    percentile,
    serve,
    sign_in,
)
from bench.listener import Listener, ListenerReport, ListenOptions, listener_process, raise_fd_limit, run_loop

BACKLOG_PREFIX = "backlog-"
TARGET_REPLAY_SECONDS = 2.0
TARGET_P99_GROWTH_MS = 100.0


# ---------------------------------------------------------------- the backlog


def make_backlog(url: str, token: str, count: int, concurrency: int = 8) -> float:
    """``count`` VM creations, ``concurrency`` at a time; the seconds it took."""
    headers = {"Authorization": f"Bearer {token}"}
    started = time.monotonic()

    async def fill() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            next_index = 0

            async def worker() -> None:
                nonlocal next_index
                while next_index < count:
                    index, next_index = next_index, next_index + 1
                    body = {"name": f"{BACKLOG_PREFIX}{index}", "cores": 1, "ram": 512, "disk": 10, "os": "x"}
                    response = await http.post("/vms", json=body, headers=headers)
                    if response.status_code != 201:
                        raise RuntimeError(f"backlog write {index}: {response.status_code} {response.text}")

            await asyncio.gather(*(worker() for _ in range(concurrency)))

    asyncio.run(fill())
    return time.monotonic() - started


def last_seq(http: httpx.Client, headers: dict[str, str]) -> int:
    response = http.get("/changes", params={"limit": 1, "order": "desc"}, headers=headers)
    response.raise_for_status()
    entries = response.json()
    return int(entries[0]["seq"]) if entries else 0


# ---------------------------------------------------------------- the resuming client


@dataclass
class ResumeResult:
    connect_at: float = math.nan
    opened_at: float = math.nan
    done_at: float = math.nan
    received: int = 0
    duplicates: int = 0
    close_code: int | None = None


def resume_process(pipe: Connection, options: ListenOptions, timeout: float) -> None:
    """Waits for "go", connects with ``options.path`` (which carries ``since``), and reports when the last of
    the ``options.expected`` backlog events arrived."""
    pipe.send("ready")
    pipe.recv()

    async def resume() -> ResumeResult:
        loop = asyncio.get_running_loop()
        finished = asyncio.Event()
        listener = Listener(
            options.path,
            f"{options.host}:{options.port}",
            prefix=options.prefix,
            expected=options.expected,
            compression=options.compression,
            on_finished=finished.set,
        )
        result = ResumeResult(connect_at=time.monotonic())
        await loop.create_connection(lambda: listener, options.host, options.port)
        await asyncio.wait_for(listener.opened, 30)
        result.opened_at = time.monotonic()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(finished.wait(), timeout)
        arrived = [at for at in listener.received_at if not math.isnan(at)]
        result.done_at = max(arrived) if arrived else math.nan
        result.received, result.duplicates = listener.count, listener.duplicates
        result.close_code = listener.close_code
        listener.close()
        return result

    pipe.send(run_loop(resume()))


# ---------------------------------------------------------------- the scenario


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench resume",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--listeners", type=int, default=200, help="live listeners (default 200)")
    parser.add_argument("--processes", type=int, default=1, help="listener processes (default 1)")
    parser.add_argument("--backlog", type=int, default=10_000, help="events to replay (default 10000)")
    parser.add_argument("--writes", type=int, default=300, help="live VM writes (default 300)")
    parser.add_argument(
        "--interval", type=float, default=0.02, help="seconds between live writes (default 0.02)"
    )
    parser.add_argument("--redis-url", help="use the Redis channels backend at this URL")
    parser.add_argument(
        "--wait", type=float, default=30.0, help="seconds to wait for late events (default 30)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if raise_fd_limit() < args.listeners + 100:
        print(f"the open-file limit is too low for {args.listeners} listeners", file=sys.stderr)
        return 2
    uvicorn_options = [
        "--loop", "uvloop", "--http", "httptools", "--ws", "websockets-sansio",
        "--ws-per-message-deflate", "false", "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    print(
        f"{args.listeners} live listeners in {args.processes} processes; {args.writes} live writes "
        f"{args.interval} s apart; one client resumes {args.backlog} events back; "
        f"channels: {'redis' if args.redis_url else 'memory'}",
        flush=True,
    )
    context = multiprocessing.get_context("spawn")
    with (
        tempfile.TemporaryDirectory(prefix="vms-resume-") as tmp,
        serve(Path(tmp), uvicorn_options, args.redis_url) as service,
        httpx.Client(base_url=service.url, timeout=60) as http,
    ):
        admin_token = sign_in(http, ADMIN_EMAIL, ADMIN_PASSWORD)
        admin_headers = {"Authorization": f"Bearer {admin_token}"}
        body = {"name": "Listener", "email": LISTENER_EMAIL, "password": LISTENER_PASSWORD}
        http.post("/users", json=body, headers=admin_headers).raise_for_status()
        listener_token = sign_in(http, LISTENER_EMAIL, LISTENER_PASSWORD)

        since = last_seq(http, admin_headers)
        seconds = make_backlog(service.url, admin_token, args.backlog)
        print(f"backlog: {args.backlog} VM creations in {seconds:.1f} s (since={since})", flush=True)

        host, port = service.host_port
        pipes: list[Connection] = []
        for number in range(args.processes):
            share = args.listeners // args.processes + (number < args.listeners % args.processes)
            options = ListenOptions(
                host=host,
                port=port,
                path=f"/ws/vms?token={listener_token}",
                count=share,
                prefix=NAME_PREFIX,
                expected=args.writes,
                compression=True,
            )
            ours, theirs = context.Pipe()
            context.Process(target=listener_process, args=(theirs, options), daemon=True).start()
            pipes.append(ours)
        connected = 0
        for pipe in pipes:
            if not pipe.poll(180):
                raise RuntimeError("a listener process did not report")
            connected += pipe.recv()[1]
        resume_options = ListenOptions(
            host=host,
            port=port,
            path=f"/ws/vms?since={since}&token={listener_token}",
            count=1,
            prefix=BACKLOG_PREFIX,
            expected=args.backlog,
            compression=True,
        )
        resume_pipe, theirs = context.Pipe()
        context.Process(target=resume_process, args=(theirs, resume_options, args.wait), daemon=True).start()
        if not resume_pipe.poll(60):
            raise RuntimeError("the resuming process did not start")
        resume_pipe.recv()
        print(f"connected {connected}/{args.listeners} live listeners", flush=True)
        time.sleep(1)

        writes = Writes()

        def write() -> None:
            with httpx.Client(base_url=service.url, timeout=60) as writer:
                made = make_writes(writer, admin_token, args.writes, args.interval)
            writes.sent_at, writes.answered_at = made.sent_at, made.answered_at

        writer = threading.Thread(target=write)
        writer.start()
        time.sleep(args.writes * args.interval / 3)
        resume_pipe.send("go")
        if not resume_pipe.poll(args.wait + 60):
            raise RuntimeError("the resuming process did not report")
        resumed: ResumeResult = resume_pipe.recv()
        writer.join(timeout=args.writes * (args.interval + 1) + 60)
        for pipe in pipes:
            pipe.send(args.wait)
        reports: list[ListenerReport] = []
        for pipe in pipes:
            if not pipe.poll(args.wait + 120):
                raise RuntimeError("a listener process did not report what it received")
            reports.append(pipe.recv()[1])
    return report(args, writes, reports, resumed)


def report(
    args: argparse.Namespace, writes: Writes, reports: list[ListenerReport], resumed: ResumeResult
) -> int:
    replay = resumed.done_at - resumed.connect_at
    during: list[float] = []
    outside: list[float] = []
    complete = 0
    for listener_report in reports:
        for received_at in listener_report.received_at:
            complete += all(not math.isnan(at) for at in received_at)
            for index, at in enumerate(received_at):
                if math.isnan(at):
                    continue
                answered = writes.answered_at[index]
                delay = (at - answered) * 1000
                in_replay = resumed.connect_at <= answered <= resumed.done_at
                (during if in_replay else outside).append(delay)
    during.sort()
    outside.sort()
    # No write answered during a very short replay: nothing was delayed by it.
    growth = percentile(during, 0.99) - percentile(outside, 0.99) if during else 0.0
    print(
        f"replay: {resumed.received}/{args.backlog} backlog events in {replay:.2f} s "
        f"(handshake {(resumed.opened_at - resumed.connect_at) * 1000:.0f} ms; "
        f"{resumed.received / replay if replay > 0 else math.nan:,.0f} events/s); "
        f"duplicates: {resumed.duplicates}; closed by the server: {resumed.close_code}"
    )
    print(
        f"live delay during the replay ({len(during)} deliveries): p50 {percentile(during, 0.5):.1f} ms, "
        f"p99 {percentile(during, 0.99):.1f} ms; outside it ({len(outside)}): "
        f"p50 {percentile(outside, 0.5):.1f} ms, p99 {percentile(outside, 0.99):.1f} ms; "
        f"p99 grew by {growth:.1f} ms"
    )
    print(f"live listeners with every event: {complete}/{args.listeners}")
    targets = [
        ("the resumed client got the whole backlog once", resumed.received == args.backlog),
        (f"replay < {TARGET_REPLAY_SECONDS:.0f} s", replay < TARGET_REPLAY_SECONDS),
        (f"live p99 grows < {TARGET_P99_GROWTH_MS:.0f} ms", growth < TARGET_P99_GROWTH_MS),
        ("every live listener got every event", complete == args.listeners),
    ]
    print("targets: " + "; ".join(f"{name}: {'met' if ok else 'MISSED'}" for name, ok in targets))
    return 0 if all(ok for _, ok in targets) else 1
