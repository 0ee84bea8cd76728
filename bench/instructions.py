"""Instructions per request: this checkout beside another git revision, counted by valgrind.

    uv run python -m bench instructions --base REV [--scenarios read,list] [--vms 500] [--duration 8]

On a machine whose CPU is shared, throughput swings by a fifth between identical runs, and even the CPU
time a request costs moves by several percent. The number of instructions the server executes per
request does not: callgrind counts them, whatever else the machine is doing. Each side is started under
callgrind with its instrumentation off (imports and start-up run at near full speed), loaded with the
same VMs and warmed up with the scenario's load; then the counters are zeroed, the instrumentation is
switched on for one wrk run (one thread, 8 connections), and the count is dumped and divided by the
requests wrk completed. The sides run one after the other; the count does not depend on what else runs.

What it leaves out: the kernel's work (system calls: sockets, the log's writes) and time spent waiting,
which ``bench compare`` includes in its CPU column. Under valgrind the server runs about 50 times
slower, so a run of ``--duration`` seconds serves a few hundred requests: enough for a stable count.
Needs valgrind (``callgrind_control``) and wrk.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.compare import LOADS as ALL_LOADS
from bench.compare import base_worktree, describe_checkout, git
from bench.http import ADMIN_EMAIL, ADMIN_PASSWORD, PROJECT_ROOT, load_vms, login, serve, wrk

# Writes that add VMs (write) or change them (update) leave every id the reads name in place; a delete run
# needs VMs added for it first (bench compare does that) and is left out.
LOADS = {name: load for name, load in ALL_LOADS.items() if name != "delete"}
CONNECTIONS = 8
WARMUP_SECONDS = 3
START_SECONDS = 300  # imports under valgrind, on a busy machine


def callgrind(pid: int, *options: str) -> None:
    subprocess.run(["callgrind_control", *options, str(pid)], check=True, capture_output=True)


def count_side(
    app_dir: Path, workdir: Path, scenarios: list[str], vms: int, duration: int
) -> dict[str, float]:
    """Instructions per request of each scenario, on one side."""
    workdir.mkdir()
    out = workdir / "callgrind.out"
    env = {
        "VMS_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'vms.sqlite3'}",
        "VMS_ADMIN_EMAIL": ADMIN_EMAIL,
        "VMS_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "VMS_LOGIN_RATE_LIMIT": "100000",
        "VMS_BCRYPT_ROUNDS": "4",  # sign-ins are not measured here
        "PYTHONHASHSEED": "0",  # the same hashing, so the same dict layouts, on both sides
    }
    wrapper = ("valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}")
    counts: dict[str, float] = {}
    with serve(
        "app:create_app", env, workdir, app_dir=app_dir, wrapper=wrapper, start_seconds=START_SECONDS
    ) as server:
        token = login(server.url, ADMIN_EMAIL, ADMIN_PASSWORD)
        asyncio.run(load_vms(server.url, token, vms))
        for dump, scenario in enumerate(scenarios, start=1):
            script, _, _ = LOADS[scenario]
            wrk_env = {"TOKEN": token, "VM_COUNT": str(vms)}
            wrk(server.url, connections=CONNECTIONS, duration=WARMUP_SECONDS, script=script, env=wrk_env)
            callgrind(server.process.pid, "--zero")
            callgrind(server.process.pid, "--instr=on")
            measured = wrk(server.url, connections=CONNECTIONS, duration=duration, script=script, env=wrk_env)
            callgrind(server.process.pid, f"--dump={scenario}")
            callgrind(server.process.pid, "--instr=off")
            text = Path(f"{out}.{dump}").read_text()
            total = int(re.search(r"^totals: (\d+)", text, re.MULTILINE).group(1))  # type: ignore[union-attr]
            counts[scenario] = total / measured.requests
            print(
                f"  {scenario}: {measured.requests} requests, {counts[scenario]:,.0f} per request", flush=True
            )
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench instructions",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--base", required=True, help="git revision to compare against (e.g. HEAD~1, main)")
    parser.add_argument("--duration", type=int, default=8, help="seconds of each counted wrk run")
    parser.add_argument("--vms", type=int, default=500, help="VMs to load into each side")
    parser.add_argument("--scenarios", default="read,list", help="comma-separated, from: " + ",".join(LOADS))
    args = parser.parse_args(argv)
    scenarios = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    if unknown := [name for name in scenarios if name not in LOADS]:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(LOADS)}")
    for tool in ("wrk", "valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            print(
                f"{tool} is needed (apt-get install {'wrk' if tool == 'wrk' else 'valgrind'})",
                file=sys.stderr,
            )
            return 2
    try:
        base_commit = git("rev-parse", "--verify", "--short", f"{args.base}^{{commit}}")
    except subprocess.CalledProcessError as error:
        print(f"not a revision: {args.base}: {error.stderr.strip()}", file=sys.stderr)
        return 2
    print(f"base: {base_commit} ({args.base})")
    print(f"new:  {describe_checkout()} (this checkout, {PROJECT_ROOT})", flush=True)
    with (
        tempfile.TemporaryDirectory(prefix="vms-bench-instructions-") as tmp,
        base_worktree(base_commit, Path(tmp)) as base_dir,
    ):
        counts = {}
        for side, app_dir in (("base", base_dir), ("new", PROJECT_ROOT)):
            print(f"{side}:", flush=True)
            counts[side] = count_side(app_dir, Path(tmp) / f"data-{side}", scenarios, args.vms, args.duration)
    print()
    print(f"{'scenario':<32} {'base instr/req':>15} {'new instr/req':>15} {'new/base':>9}")
    for scenario in scenarios:
        base, new = counts["base"][scenario], counts["new"][scenario]
        label = LOADS[scenario][2].partition(" (")[0]  # its path, without bench compare's connections
        print(f"{label:<32} {base:>15,.0f} {new:>15,.0f} {new / base:>8.3f}x")
    return 0
