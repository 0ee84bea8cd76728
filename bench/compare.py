"""Side-by-side benchmark: this checkout against another git revision, both measured in the same run.

    uv run python -m bench compare --base REV [--rounds 5] [--duration 5] [--vms 5000]
        [--scenarios read,list,write,update,delete]

Checks REV out into a temporary git worktree, starts it and this checkout at the same time (one uvicorn
worker each, as in ``bench http``, each on a fresh SQLite file), loads the same VMs into both and warms
both up. Then, round by round, every scenario is run with wrk against one version and then the other,
the order flipping each round (ABBA) so drift on the shared machine cancels out; only one wrk runs at a
time. Prints the median req/s of each side, the ratio new/base with the spread of the per-round ratios,
the median p99s and whether the new version is within ``--within`` percent (default 5) of the base.

The base runs on this checkout's virtualenv, so a REV with other dependencies needs them installed.
The write scenario adds VMs and the delete scenario removes them; after each such pair the side with
fewer VMs is topped up, so both serve the same number of rows in the next round. Before each delete
run both sides get the same batch of new VMs to delete (see ``DELETE_SCRIPT`` in bench/http.py).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import httpx

from bench.http import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    DELETE_BUDGET_PER_SECOND,
    DELETE_SCRIPT,
    LIST_SCRIPT,
    PATCH_SCRIPT,
    PROJECT_ROOT,
    READ_SCRIPT,
    WRITE_SCRIPT,
    Server,
    WrkResult,
    load_vms,
    login,
    serve,
    wrk,
)

# Scenario -> (wrk script, connections, label); the same loads as bench http.
LOADS = {
    "read": (READ_SCRIPT, 32, "read GET /vms/{id} (c=32)"),
    "list": (LIST_SCRIPT, 32, "list GET /vms?limit=100 (c=32)"),
    "write": (WRITE_SCRIPT, 16, "write POST /vms (c=16)"),
    "update": (PATCH_SCRIPT, 16, "update PATCH /vms/{id} (c=16)"),
    "delete": (DELETE_SCRIPT, 16, "delete DELETE /vms/{id} (c=16)"),
}
# Scenarios that change how many VMs a side has: both are evened out after each pair.
CHANGES_COUNT = ("write", "delete")
SIDES = ("base", "new")
WARMUP_SECONDS = 2


# ---------------------------------------------------------------- git


def git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=PROJECT_ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()


def describe_checkout() -> str:
    head = git("rev-parse", "--short", "HEAD")
    changed = [line for line in git("status", "--porcelain", "--", "app/").splitlines() if line[:2] != "??"]
    return f"{head} + uncommitted changes" if changed else head


@contextmanager
def base_worktree(rev: str, tmp: Path) -> Iterator[Path]:
    path = tmp / "base"
    git("worktree", "add", "--detach", str(path), rev)
    try:
        yield path
    finally:
        removed = subprocess.run(
            ["git", "worktree", "remove", "--force", str(path)],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
        )
        if removed.returncode != 0:
            print(f"could not remove the worktree {path}: {removed.stderr.strip()}", file=sys.stderr)


# ---------------------------------------------------------------- both servers at once


class ServerFailed(Exception):
    def __init__(self, side: str, reason: str, log_tail: str) -> None:
        super().__init__(f"{side} server failed to start: {reason}")
        self.log_tail = log_tail


class _Running(threading.Thread):
    """One ``serve`` held open on its own thread, so both servers start at the same time."""

    def __init__(self, side: str, env: dict[str, str], workdir: Path, app_dir: Path) -> None:
        super().__init__(name=f"serve-{side}")
        self.side, self.env, self.workdir, self.app_dir = side, env, workdir, app_dir
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.server: Server | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with serve("app:create_app", self.env, self.workdir, app_dir=self.app_dir) as server:
                self.server = server
                self.ready.set()
                self.stop.wait()
        except BaseException as error:
            self.server = None
            self.error = error
        finally:
            self.ready.set()

    def failure(self) -> ServerFailed:
        reason = str(self.error).partition(":")[0] if self.error else "unknown"
        tail = "".join(
            "\n".join(log.read_text().splitlines()[-30:]) for log in self.workdir.glob("server-*.log")
        )
        return ServerFailed(self.side, reason, tail)


@contextmanager
def serve_side_by_side(
    app_dirs: dict[str, Path], tmp: Path, env: dict[str, str]
) -> Iterator[dict[str, Server]]:
    threads = []
    for side, app_dir in app_dirs.items():
        workdir = tmp / f"data-{side}"
        workdir.mkdir()
        side_env = {**env, "VMS_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'vms.sqlite3'}"}
        threads.append(_Running(side, side_env, workdir, app_dir))
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.ready.wait()
        for thread in threads:
            if thread.server is None:
                raise thread.failure()
        yield {thread.side: thread.server for thread in threads if thread.server is not None}
    finally:
        # Every exit path: each thread leaves its serve block, which terminates its server.
        for thread in threads:
            thread.stop.set()
        for thread in threads:
            thread.join()


# ---------------------------------------------------------------- measuring


@dataclass
class Side:
    server: Server
    token: str
    vm_count: int
    delete_top: int = 0  # the highest id of the batch added for the next delete run

    @property
    def wrk_env(self) -> dict[str, str]:
        return {"TOKEN": self.token, "VM_COUNT": str(self.vm_count), "DELETE_TOP": str(self.delete_top)}

    def total_vms(self) -> int:
        response = httpx.get(
            self.server.url + "/vms?limit=1", headers={"Authorization": f"Bearer {self.token}"}, timeout=60
        )
        response.raise_for_status()
        return int(response.headers["X-Total-Count"])


def even_out(sides: dict[str, Side]) -> None:
    """Top up whichever side has fewer VMs after a write run, so both serve the same table size."""
    totals = {name: side.total_vms() for name, side in sides.items()}
    target = max(totals.values())

    async def top_up() -> None:
        await asyncio.gather(
            *(
                load_vms(sides[name].server.url, sides[name].token, target - total)
                for name, total in totals.items()
                if total < target
            )
        )

    asyncio.run(top_up())


def add_for_deletion(sides: dict[str, Side], duration: int) -> None:
    """Give both sides the same batch of new VMs on top, for the delete run that follows to remove."""
    budget = DELETE_BUDGET_PER_SECOND * duration

    async def add() -> list[int]:
        return await asyncio.gather(
            *(load_vms(side.server.url, side.token, budget) for side in sides.values())
        )

    for side, top in zip(sides.values(), asyncio.run(add()), strict=True):
        side.delete_top = top


@dataclass
class Load:
    """One wrk run against one side, and the server's CPU time per request during it: on a machine whose
    CPU is shared (steal), throughput swings by a fifth between identical runs, while the CPU a request
    costs the server moves much less."""

    wrk: WrkResult
    cpu_us_per_request: float

    @property
    def requests_per_second(self) -> float:
        return self.wrk.requests_per_second


def run_load(side: Side, scenario: str, duration: int) -> Load:
    script, connections, _ = LOADS[scenario]
    cpu_before = side.server.cpu_seconds()
    result = wrk(side.server.url, connections=connections, duration=duration, script=script, env=side.wrk_env)
    cpu = side.server.cpu_seconds() - cpu_before
    return Load(result, cpu * 1e6 / result.requests if result.requests else float("nan"))


@dataclass
class Results:
    runs: dict[str, dict[str, list[Load]]] = field(default_factory=dict)

    def add(self, scenario: str, side: str, result: Load) -> None:
        self.runs.setdefault(scenario, {name: [] for name in SIDES})[side].append(result)

    def ratios(self, scenario: str) -> list[float]:
        base, new = self.runs[scenario]["base"], self.runs[scenario]["new"]
        return [n.requests_per_second / b.requests_per_second for b, n in zip(base, new, strict=True)]


def median_of(results: list[Load], attribute: str) -> float:
    return statistics.median(getattr(result.wrk, attribute) for result in results)


def median_cpu(results: list[Load]) -> float:
    return statistics.median(result.cpu_us_per_request for result in results)


def print_table(results: Results, scenarios: list[str], within_percent: float) -> None:
    print()
    print(
        f"{'scenario':<32} {'base req/s':>10} {'new req/s':>10} {'new/base':>9} {'per-round':>13} "
        f"{'p99 ms base / new':>18} {'errors':>9} {'server CPU µs/req base / new':>29}"
    )
    verdicts = []
    for scenario in scenarios:
        base, new = results.runs[scenario]["base"], results.runs[scenario]["new"]
        base_rps, new_rps = median_of(base, "requests_per_second"), median_of(new, "requests_per_second")
        ratio = new_rps / base_rps
        ratios = results.ratios(scenario)
        spread = f"{min(ratios):.2f}-{max(ratios):.2f}x"
        p99 = f"{median_of(base, 'p99_ms'):.1f} / {median_of(new, 'p99_ms'):.1f}"
        errors = f"{sum(r.wrk.errors for r in base)}/{sum(r.wrk.errors for r in new)}"
        base_cpu, new_cpu = median_cpu(base), median_cpu(new)
        cpu = f"{base_cpu:,.0f} / {new_cpu:,.0f} ({new_cpu / base_cpu:.2f}x)"
        print(
            f"{LOADS[scenario][2]:<32} {base_rps:>10,.0f} {new_rps:>10,.0f} {f'{ratio:.2f}x':>9} {spread:>13} "
            f"{p99:>18} {errors:>9} {cpu:>29}"
        )
        paired = statistics.median(ratios)
        verdicts.append(
            f"{scenario}: within {within_percent:g}%: {'yes' if ratio >= 1 - within_percent / 100 else 'no'} "
            f"({ratio:.2f}x; the median of "
            f"the per-round ratios, each round's two runs side by side: {paired:.2f}x)"
        )
    print()
    for verdict in verdicts:
        print(verdict)


def measure(sides: dict[str, Side], scenarios: list[str], rounds: int, duration: int) -> Results:
    # Warm-up, not counted: one short run of every scenario on each side.
    for scenario in scenarios:
        if scenario == "delete":
            add_for_deletion(sides, min(WARMUP_SECONDS, duration))
        for name in SIDES:
            run_load(sides[name], scenario, min(WARMUP_SECONDS, duration))
        if scenario in CHANGES_COUNT:
            even_out(sides)
    print("warmed up", flush=True)

    results = Results()
    for round_index in range(rounds):
        order = SIDES if round_index % 2 == 0 else SIDES[::-1]
        for scenario in scenarios:
            if scenario == "delete":
                add_for_deletion(sides, duration)
            pair = {name: run_load(sides[name], scenario, duration) for name in order}
            for name in SIDES:
                results.add(scenario, name, pair[name])
            ratio = pair["new"].requests_per_second / pair["base"].requests_per_second
            print(
                f"round {round_index + 1}/{rounds} {scenario:<5} ({' then '.join(order)}): "
                f"base {pair['base'].requests_per_second:,.0f}, new {pair['new'].requests_per_second:,.0f} "
                f"req/s = {ratio:.2f}x; server CPU per request base {pair['base'].cpu_us_per_request:,.0f} µs, "
                f"new {pair['new'].cpu_us_per_request:,.0f} µs",
                flush=True,
            )
            if scenario in CHANGES_COUNT:
                even_out(sides)
    return results


def _terminated(signum: int, frame: FrameType | None) -> None:
    # SIGTERM takes the same way out as Ctrl-C, so the servers and the worktree are cleaned up.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--base", required=True, help="git revision to compare against (e.g. HEAD~1, main)")
    parser.add_argument(
        "--rounds", type=int, default=5, help="measured rounds (each runs every scenario on both)"
    )
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--vms", type=int, default=5000, help="VMs to load into each side")
    parser.add_argument(
        "--within", type=float, default=5, help="the throughput a new version may lose, in percent"
    )
    parser.add_argument(
        "--scenarios", default="read,list,write", help="comma-separated, from: " + ",".join(LOADS)
    )
    args = parser.parse_args(argv)
    scenarios = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    if unknown := [name for name in scenarios if name not in LOADS]:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(LOADS)}")
    if args.rounds < 1 or args.duration < 1 or args.vms < 1:
        parser.error("--rounds, --duration and --vms must be at least 1")
    if shutil.which("wrk") is None:
        print("wrk is needed: apt-get install wrk", file=sys.stderr)
        return 2
    try:
        base_commit = git("rev-parse", "--verify", "--short", f"{args.base}^{{commit}}")
    except subprocess.CalledProcessError as error:
        print(f"not a revision: {args.base}: {error.stderr.strip()}", file=sys.stderr)
        return 2

    print(f"base: {base_commit} ({args.base})")
    print(f"new:  {describe_checkout()} (this checkout, {PROJECT_ROOT})", flush=True)
    env = {
        "VMS_ADMIN_EMAIL": ADMIN_EMAIL,
        "VMS_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "VMS_LOGIN_RATE_LIMIT": "100000",
        "VMS_BCRYPT_ROUNDS": "12",
    }
    previous_handler = signal.signal(signal.SIGTERM, _terminated)
    try:
        with (
            tempfile.TemporaryDirectory(prefix="vms-bench-compare-") as tmp,
            base_worktree(base_commit, Path(tmp)) as base_dir,
            serve_side_by_side({"base": base_dir, "new": PROJECT_ROOT}, Path(tmp), env) as servers,
        ):
            sides = {
                name: Side(server, login(server.url, ADMIN_EMAIL, ADMIN_PASSWORD), args.vms)
                for name, server in servers.items()
            }

            async def load_both() -> None:
                await asyncio.gather(
                    *(load_vms(side.server.url, side.token, args.vms) for side in sides.values())
                )

            asyncio.run(load_both())
            print(f"loaded {args.vms} VMs into each", flush=True)
            results = measure(sides, scenarios, args.rounds, args.duration)
    except ServerFailed as failure:
        print(failure, file=sys.stderr)
        print(failure.log_tail, file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as error:
        print(f"{' '.join(map(str, error.cmd))} failed: {(error.stderr or '').strip()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
    print_table(results, scenarios, args.within)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
