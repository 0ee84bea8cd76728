"""A PostgreSQL cluster of the caller's own: ``initdb`` in a scratch directory, a free port, and stop, start,
freeze and thaw at will. The machine's shared server is never touched.

The standard library only, so the fault benchmarks (bench/faults_postgres.py) and the fault tests share
it; the tests' skip-or-fail wrapper is ``tests.helpers.postgres_server.private_postgres_server``.

As root, ``initdb`` refuses to run, so the cluster (its directory, ``initdb``, ``pg_ctl`` and the server)
belongs to the ``postgres`` OS user, reached with ``runuser``. Every process of the cluster is found from
the postmaster's PID (its children in ``/proc``) and only those are signalled.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

START_SECONDS = 30.0


def postgres_binaries() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` with ``initdb`` and ``pg_ctl``, or ``PATH``'s."""

    def version(path: str) -> float:
        try:
            return float(Path(path).parts[-3])
        except ValueError:
            return 0.0

    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version)
    if candidates:
        return Path(candidates[-1]).parent
    initdb = shutil.which("initdb")
    return None if initdb is None else Path(initdb).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            text = Path(stat).read_text()
        except OSError:  # the process ended meanwhile
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ")".
        fields = text.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            found.append(int(stat.split("/")[2]))
    return found


class PostgresCluster:
    """A private cluster: trust authentication, 127.0.0.1 only, ``fsync=off``; call :meth:`close` at the
    end (it stops the server by its PID whatever state it is in, and deletes the directory)."""

    def __init__(self, binaries: Path) -> None:
        self.binaries = binaries
        self.port = _free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="vms-pg-"))
        self.data = self.directory / "data"
        self.logfile = self.directory / "server.log"
        self.frozen = False
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.directory, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")

    @property
    def url(self) -> str:
        """The ``postgres`` database, as VMS's ``VMS_DATABASE_URL``."""
        return self.url_of("postgres")

    def url_of(self, database: str) -> str:
        """``database`` of this cluster, as VMS's ``VMS_DATABASE_URL``."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def sql(self, *statements: str, database: str = "postgres") -> str:
        """Run ``statements`` with ``psql`` as the superuser, each in a transaction of its own (so ``ALTER
        SYSTEM`` and ``CREATE DATABASE`` may be among them); what they printed."""
        options = [option for statement in statements for option in ("-c", statement)]
        return self._run(
            "psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", database,
            "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", *options,
        )  # fmt: skip

    def database_on(self, directory: Path, database: str) -> str:
        """Create ``database`` in a tablespace at ``directory`` (a small file system the caller mounted, to
        fill it; the WAL stays in the data directory, so PostgreSQL refuses writes there rather than
        stopping); its URL."""
        location = directory / "tablespace"
        location.mkdir()
        if self._as_postgres:
            shutil.chown(location, "postgres", "postgres")
        self.sql(
            f"CREATE TABLESPACE {database}_space LOCATION '{location}'",
            f"CREATE DATABASE {database} TABLESPACE {database}_space",
        )
        return self.url_of(database)

    def _command(self, program: str, *args: str) -> list[str]:
        command = [str(self.binaries / program), *args]
        return ["runuser", "-u", "postgres", "--", *command] if self._as_postgres else command

    def _run(self, program: str, *args: str) -> str:
        result = subprocess.run(
            self._command(program, *args),
            cwd=self.directory,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{program} failed ({result.returncode}): {result.stdout}{result.stderr}")
        return result.stdout

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.directory} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-o", options, "-w",
            "-t", str(int(START_SECONDS)), "start",
        )  # fmt: skip

    def postmaster_pid(self) -> int | None:
        try:
            pid = int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        return pid if Path(f"/proc/{pid}").exists() else None

    def processes(self) -> list[int]:
        """The postmaster and every process it started (backends, checkpointer, WAL writer, ...)."""
        pid = self.postmaster_pid()
        return [] if pid is None else [pid, *_children(pid)]

    def freeze(self) -> None:
        """SIGSTOP every process of the cluster: connections stay open, nothing answers."""
        pid = self.postmaster_pid()
        assert pid is not None, "the cluster is not running"
        os.kill(pid, signal.SIGSTOP)  # first, so it starts no process the loop below would miss
        for child in _children(pid):
            os.kill(child, signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        for pid in reversed(self.processes()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self.frozen = False

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m fast`` (or ``immediate``): the server goes away; clients are refused."""
        if self.frozen:
            self.thaw()
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")

    def close(self) -> None:
        pid = self.postmaster_pid()
        if pid is not None:
            self.thaw()
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self.stop("immediate")
            deadline = time.monotonic() + 10
            while self.postmaster_pid() is not None and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.postmaster_pid() is not None:
                for process in reversed(self.processes()):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(process, signal.SIGKILL)
        shutil.rmtree(self.directory, ignore_errors=True)
