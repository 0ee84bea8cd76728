"""Fault runs: stop, freeze or fill what VMS depends on, and see how it answers and heals.

    uv run python -m bench faults [--only NAME[,NAME...]] [--list]

Each scenario starts its own servers (a VMS process, and its own Redis or PostgreSQL cluster or a small
tmpfs for SQLite), never the machine's shared ones, injects one fault, keeps a client going through it,
ends the fault, and prints one line: the time until VMS answered the fault (detect), the time from the
end of the fault until requests succeeded again (heal), how many requests failed and with what, and
whether anything acknowledged was lost. The same scenarios run as tests under ``-m faults``; this prints
their figures.

Scenario modules (``bench/faults_<dependency>.py``) each expose ``SCENARIOS``: name -> a function that
takes a scratch directory and returns a :class:`FaultResult`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

SCENARIO_MODULES = ("bench.faults_sqlite", "bench.faults_postgres", "bench.faults_redis")


@dataclass
class FaultResult:
    detect_seconds: float | None
    heal_seconds: float | None
    # How the requests made during the fault ended: {"503": 40, "200": 12, "timeout": 0, ...}
    outcomes: Counter[str] = field(default_factory=Counter)
    lost: int = 0  # acknowledged writes (or events) missing afterwards
    note: str = ""

    def line(self, name: str) -> str:
        detect = "-" if self.detect_seconds is None else f"{self.detect_seconds:.2f} s"
        heal = "-" if self.heal_seconds is None else f"{self.heal_seconds:.2f} s"
        outcomes = ", ".join(f"{key}: {count}" for key, count in sorted(self.outcomes.items())) or "none"
        note = f"; {self.note}" if self.note else ""
        return f"{name:28s} detect {detect:>8s}  heal {heal:>8s}  requests {{{outcomes}}}  lost {self.lost}{note}"


Scenario = Callable[[Path], FaultResult]


def scenarios() -> dict[str, Scenario]:
    found: dict[str, Scenario] = {}
    for module_name in SCENARIO_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        found.update(module.SCENARIOS)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench faults", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated scenario names")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = parser.parse_args(argv)
    available = scenarios()
    if args.list:
        print("\n".join(available))
        return 0
    chosen = args.only.split(",") if args.only else list(available)
    unknown = [name for name in chosen if name not in available]
    if unknown:
        print(f"unknown scenarios: {', '.join(unknown)}; known: {', '.join(available)}", file=sys.stderr)
        return 2
    failed = False
    for name in chosen:
        with tempfile.TemporaryDirectory(prefix=f"vms-fault-{name}-") as tmp:
            try:
                result = available[name](Path(tmp))
            except Exception as exc:  # one broken scenario must not hide the others' figures
                print(f"{name:28s} did not run: {type(exc).__name__}: {exc}", flush=True)
                failed = True
                continue
        print(result.line(name), flush=True)
        failed = failed or result.lost > 0
    return 1 if failed else 0
