"""``python -m bench <scenario> [options]``: run one benchmark; ``<scenario> --help`` lists its options."""

from __future__ import annotations

import argparse
import importlib
import sys

# Scenario name -> (module with ``main(argv) -> int``, one-line description).
SCENARIOS = {
    "http": ("bench.http", "HTTP read/list/write throughput, login storm, peak memory (needs wrk)"),
    "fanout": ("bench.fanout", "WebSocket fan-out: N listeners on /ws/vms, M VM writes, delay and memory"),
    "resume": ("bench.resume", "a client resumes 10,000 events back while fan-out listeners get live writes"),
    "compare": ("bench.compare", "read, list, write: this checkout beside another git revision (needs wrk)"),
    "instructions": (
        "bench.instructions",
        "instructions per request (valgrind), this checkout beside a git revision: exact on a busy machine",
    ),
    "refresh": ("bench.refresh", "POST /login/refresh chains: refreshes per second and per CPU-second"),
    "scaleout": ("bench.scaleout", "read and write for 1, 2, 4 workers on PostgreSQL + Redis beside SQLite"),
    "faults": (
        "bench.faults",
        "stop, freeze or fill the database or Redis: time to detect and heal, failures",
    ),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    subcommands = parser.add_subparsers(dest="scenario", required=True, metavar="scenario")
    for name, (_, description) in SCENARIOS.items():
        # Each scenario parses its own options, so its --help is the full story.
        subcommands.add_parser(name, help=description, add_help=False)
    args, rest = parser.parse_known_args(argv)
    module = importlib.import_module(SCENARIOS[args.scenario][0])
    result: int = module.main(rest)
    return result


if __name__ == "__main__":
    sys.exit(main())
