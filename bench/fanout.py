"""WebSocket fan-out: N listeners on ``/ws/vms``, M VM writes over HTTP, delivery rate, delay and memory.

    uv run python -m bench fanout [--listeners 1000] [--writes 200] [--processes 2] [--redis-url URL]

Starts the service (uvicorn, one worker, uvloop + httptools, the websockets sans-I/O protocol) as a separate
process on a fresh SQLite file with production settings (bcrypt cost 12, an administrador from
VMS_ADMIN_EMAIL / VMS_ADMIN_PASSWORD), signs a cliente in, and connects the listeners from ``--processes``
separate processes, so the writer and the server each keep a core's worth of scheduling to themselves.
Listeners are a minimal WebSocket client (``bench/listener.py``) offering permessage-deflate as browsers do;
it costs a few microseconds per message, so the client side is not what is measured. The server runs with
``--ws-per-message-deflate false`` (see ``--server-deflate``).

The writer makes the M writes one after another (create a VM, then rename it, alternately); every event
carries the write's index in the VM name, so each listener notes when it received each write's event.
Printed: deliveries per second, the delay from each write's HTTP response to receipt (p50, p99, max; it can
be negative, since the event is published on commit, before the response is sent), whether every listener
got every event in order, and the server's resident memory (VmRSS) before and after the listeners
connected, per idle listener.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

import httpx

from bench.http import free_port
from bench.listener import Listener, ListenerReport, ListenOptions, listener_process, raise_fd_limit, run_loop

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ADMIN_EMAIL = "bench-admin@example.com"
ADMIN_PASSWORD = "bench-admin-password"
LISTENER_EMAIL = "bench-listener@example.com"
LISTENER_PASSWORD = "bench-listener-password"
NAME_PREFIX = "fanout-"

TARGET_P99_MS = 250.0
TARGET_KB_PER_LISTENER = 64.0


# ---------------------------------------------------------------- the service


@dataclass
class Service:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    @property
    def host_port(self) -> tuple[str, int]:
        host, port = self.url.removeprefix("http://").rsplit(":", 1)
        return host, int(port)

    def rss_kb(self, key: str = "VmRSS") -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        raise RuntimeError(f"{key} not found for pid {self.process.pid}")

    def cpu_seconds(self) -> tuple[float, float]:
        """User and system CPU time the server has used so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return int(fields[11]) / ticks, int(fields[12]) / ticks


@contextmanager
def serve(
    workdir: Path,
    uvicorn_options: list[str],
    redis_url: str | None,
    profile: str | None = None,
    app_dir: Path = PROJECT_ROOT,
) -> Iterator[Service]:
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("VMS_")}
    env.update(
        {
            "VMS_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'vms.sqlite3'}",
            "VMS_ADMIN_EMAIL": ADMIN_EMAIL,
            "VMS_ADMIN_PASSWORD": ADMIN_PASSWORD,
        }
    )
    if redis_url:
        env["VMS_REDIS_URL"] = redis_url
        env["VMS_REDIS_NAMESPACE"] = f"vms-bench-{secrets.token_hex(4)}"
    log = workdir / "server.log"
    command = [sys.executable, *(["-m", "cProfile", "-o", profile] if profile else []), "-m", "uvicorn"]
    command += ["--factory", "app:create_app"]
    command += ["--host", "127.0.0.1", "--port", str(port), *uvicorn_options]
    with log.open("wb") as log_file:
        process = subprocess.Popen(command, cwd=app_dir, env=env, stdout=log_file, stderr=log_file)
    service = Service(process=process, url=f"http://127.0.0.1:{port}", log=log)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(service.url + "/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        yield service
    finally:
        # SIGINT, not SIGTERM: uvicorn re-raises the signal after its graceful shutdown, and only SIGINT
        # (KeyboardInterrupt) still lets cProfile write its stats on the way out.
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# ---------------------------------------------------------------- the writer


@dataclass
class Writes:
    sent_at: list[float] = field(default_factory=list)
    answered_at: list[float] = field(default_factory=list)


def make_writes(http: httpx.Client, token: str, count: int, interval: float) -> Writes:
    """Create a VM, rename it, create another...: every event names its write's index."""
    headers = {"Authorization": f"Bearer {token}"}
    writes = Writes()
    vm_id: int | None = None
    for index in range(count):
        name = f"{NAME_PREFIX}{index}"
        sent = time.monotonic()
        if vm_id is None or index % 2 == 0:
            body = {"name": name, "cores": 2, "ram": 2048, "disk": 40, "os": "Debian 12", "status": "running"}
            response = http.post("/vms", json=body, headers=headers)
        else:
            response = http.patch(f"/vms/{vm_id}", json={"name": name, "status": "stopped"}, headers=headers)
        answered = time.monotonic()
        if response.status_code not in (200, 201):
            raise RuntimeError(f"write {index} failed: {response.status_code} {response.text}")
        vm_id = response.json()["id"]
        writes.sent_at.append(sent)
        writes.answered_at.append(answered)
        if interval:
            time.sleep(interval)
    return writes


def warm_up(service: Service, token: str, http: httpx.Client, admin_headers: dict[str, str]) -> None:
    """One listener and one write, so first-use imports and caches are in the "before" memory figure."""
    host, port = service.host_port

    async def listen_once() -> None:
        loop = asyncio.get_running_loop()
        listener = Listener(
            f"/ws/vms?token={token}", f"{host}:{port}", prefix=NAME_PREFIX, expected=0, compression=True
        )
        await loop.create_connection(lambda: listener, host, port)
        await asyncio.wait_for(listener.opened, 10)
        body = {"name": "warm-up", "cores": 1, "ram": 1, "disk": 1, "os": "x"}
        await loop.run_in_executor(None, lambda: http.post("/vms", json=body, headers=admin_headers))
        await asyncio.sleep(0.2)
        listener.close()

    run_loop(listen_once())


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return math.nan
    return sorted_values[min(len(sorted_values) - 1, math.ceil(fraction * len(sorted_values)) - 1)]


def sign_in(http: httpx.Client, email: str, password: str) -> str:
    response = http.post("/login", json={"email": email, "password": password})
    response.raise_for_status()
    return str(response.json()["access_token"])


# ---------------------------------------------------------------- the scenario


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench fanout",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--listeners", type=int, default=1000, help="WebSocket listeners (default 1000)")
    parser.add_argument("--writes", type=int, default=200, help="VM writes (default 200)")
    parser.add_argument("--processes", type=int, default=2, help="listener processes (default 2)")
    parser.add_argument("--interval", type=float, default=0.0, help="seconds between writes (default 0)")
    parser.add_argument(
        "--compression",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="listeners offer permessage-deflate, as browsers do (default: yes)",
    )
    parser.add_argument("--ws", default="websockets-sansio", help="uvicorn --ws implementation")
    parser.add_argument(
        "--server-deflate",
        choices=["true", "false"],
        default="false",
        help="uvicorn --ws-per-message-deflate (default false: uvicorn's default, true, costs about 35 KB "
        "of zlib state per listener that negotiates it, and CPU for every message)",
    )
    parser.add_argument("--redis-url", help="use the Redis channels backend at this URL")
    parser.add_argument(
        "--app-dir",
        type=Path,
        default=PROJECT_ROOT,
        help="measure the VMS code in this checkout (e.g. a git worktree of an older commit)",
    )
    parser.add_argument(
        "--profile-server", metavar="FILE", help="run the server under cProfile, stats to FILE"
    )
    parser.add_argument(
        "--wait", type=float, default=30.0, help="seconds to wait for late events (default 30)"
    )
    return parser.parse_args(argv)


@dataclass
class Run:
    connected: int = 0
    connect_seconds: float = 0.0
    rss_before: int = 0
    rss_idle: int = 0
    rss_after: int = 0
    rss_peak: int = 0
    cpu: tuple[float, float] = (0.0, 0.0)
    load_average: float = 0.0
    writes: Writes = field(default_factory=Writes)
    reports: list[ListenerReport] = field(default_factory=list)


def run(args: argparse.Namespace, uvicorn_options: list[str]) -> Run:
    result = Run()
    context = multiprocessing.get_context("spawn")
    with (
        tempfile.TemporaryDirectory(prefix="vms-fanout-") as tmp,
        serve(Path(tmp), uvicorn_options, args.redis_url, args.profile_server, args.app_dir) as service,
        httpx.Client(base_url=service.url, timeout=60) as http,
    ):
        admin_token = sign_in(http, ADMIN_EMAIL, ADMIN_PASSWORD)
        admin_headers = {"Authorization": f"Bearer {admin_token}"}
        body = {"name": "Listener", "email": LISTENER_EMAIL, "password": LISTENER_PASSWORD}
        http.post("/users", json=body, headers=admin_headers).raise_for_status()
        listener_token = sign_in(http, LISTENER_EMAIL, LISTENER_PASSWORD)

        warm_up(service, listener_token, http, admin_headers)
        time.sleep(1)
        result.rss_before = service.rss_kb()

        host, port = service.host_port
        pipes: list[Connection] = []
        started = time.monotonic()
        for number in range(args.processes):
            share = args.listeners // args.processes + (number < args.listeners % args.processes)
            options = ListenOptions(
                host=host,
                port=port,
                path=f"/ws/vms?token={listener_token}",
                count=share,
                prefix=NAME_PREFIX,
                expected=args.writes,
                compression=args.compression,
            )
            ours, theirs = context.Pipe()
            context.Process(target=listener_process, args=(theirs, options), daemon=True).start()
            pipes.append(ours)
        for pipe in pipes:
            if not pipe.poll(180):
                raise RuntimeError("a listener process did not report")
            _, ready, failures = pipe.recv()
            result.connected += ready
            if failures:
                print(f"connection failures, e.g. {failures}")
        result.connect_seconds = time.monotonic() - started
        time.sleep(2)  # let the server settle: handshakes done, their buffers released
        result.rss_idle = service.rss_kb()
        print(f"connected {result.connected}/{args.listeners} listeners in {result.connect_seconds:.1f} s")

        cpu_before = service.cpu_seconds()
        result.load_average = os.getloadavg()[0]
        result.writes = make_writes(http, admin_token, args.writes, args.interval)
        for pipe in pipes:
            pipe.send(args.wait)
        for pipe in pipes:
            if not pipe.poll(args.wait + 120):
                raise RuntimeError("a listener process did not report what it received")
            result.reports.append(pipe.recv()[1])
        cpu_after = service.cpu_seconds()
        result.cpu = (cpu_after[0] - cpu_before[0], cpu_after[1] - cpu_before[1])
        result.rss_after = service.rss_kb()
        result.rss_peak = service.rss_kb("VmHWM")
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    fd_limit = raise_fd_limit()
    if fd_limit < args.listeners + 100:
        print(f"the open-file limit is {fd_limit}: too low for {args.listeners} listeners", file=sys.stderr)
        return 2
    uvicorn_options = [
        "--loop", "uvloop", "--http", "httptools", "--ws", args.ws,
        "--ws-per-message-deflate", args.server_deflate,
        "--backlog", "4096", "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    print(f"server: uvicorn {' '.join(uvicorn_options)}; channels: {'redis' if args.redis_url else 'memory'}")
    print(
        f"{args.listeners} listeners in {args.processes} processes"
        f"{', offering permessage-deflate' if args.compression else ''}; {args.writes} VM writes "
        f"{f'{args.interval} s apart' if args.interval else 'back to back'}",
        flush=True,
    )
    result = run(args, uvicorn_options)
    return report(args, result)


def report(args: argparse.Namespace, result: Run) -> int:
    writes = result.writes
    delays: list[float] = []
    last_receipt = writes.sent_at[0]
    complete = 0
    close_codes: dict[int | None, int] = {}
    for listener_report in result.reports:
        for received_at in listener_report.received_at:
            got = 0
            for index, at in enumerate(received_at):
                if not math.isnan(at):
                    got += 1
                    delays.append((at - writes.answered_at[index]) * 1000)
                    last_receipt = max(last_receipt, at)
            complete += got == args.writes
        for code, number in listener_report.close_codes.items():
            close_codes[code] = close_codes.get(code, 0) + number
    in_order = sum(listener_report.in_order for listener_report in result.reports)
    duplicates = sum(listener_report.duplicates for listener_report in result.reports)
    deliveries, expected = len(delays), args.listeners * args.writes
    delays.sort()
    p50, p99 = percentile(delays, 0.50), percentile(delays, 0.99)
    rate = deliveries / (last_receipt - writes.sent_at[0]) if deliveries else 0.0
    per_write = sorted((a - s) * 1000 for s, a in zip(writes.sent_at, writes.answered_at, strict=True))
    kb_per_listener = (result.rss_idle - result.rss_before) / max(result.connected, 1)
    user, system = result.cpu
    closed = {code: number for code, number in close_codes.items() if code is not None}

    print(
        f"writes: {args.writes} in {writes.answered_at[-1] - writes.sent_at[0]:.2f} s; HTTP latency "
        f"p50 {statistics.median(per_write):.1f} ms, p99 {percentile(per_write, 0.99):.1f} ms"
    )
    print(
        f"deliveries: {deliveries:,}/{expected:,}; listeners with every event: {complete}/{args.listeners}; "
        f"in order: {in_order}/{result.connected}; duplicates: {duplicates}; closed by the server: {closed}"
    )
    print(f"delivery rate: {rate:,.0f} deliveries/s")
    print(
        f"delay from the write's HTTP response to receipt: p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
        f"max {delays[-1] if delays else math.nan:.1f} ms"
    )
    print(
        f"server CPU for the writes and their deliveries: {user:.2f} s user + {system:.2f} s system "
        f"= {(user + system) / max(deliveries, 1) * 1e6:.0f} us per delivery "
        f"(machine load average before the writes: {result.load_average:.2f})"
    )
    print(
        f"server RSS: {result.rss_before / 1024:.1f} MB before the listeners, "
        f"{result.rss_idle / 1024:.1f} MB with {result.connected} idle listeners "
        f"= {kb_per_listener:.1f} KB per listener; "
        f"{result.rss_after / 1024:.1f} MB after the writes, peak {result.rss_peak / 1024:.1f} MB"
    )
    targets = [
        ("every listener got every event, in order", complete == args.listeners == in_order),
        (f"p99 delay < {TARGET_P99_MS:.0f} ms", p99 < TARGET_P99_MS),
        (f"< {TARGET_KB_PER_LISTENER:.0f} KB per idle listener", kb_per_listener < TARGET_KB_PER_LISTENER),
    ]
    print("targets: " + "; ".join(f"{name}: {'met' if ok else 'MISSED'}" for name, ok in targets))
    return 0 if all(ok for _, ok in targets) else 1
