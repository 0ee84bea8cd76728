"""Real processes a test starts and stops itself: a uvicorn server (to kill it, or to run several), the CLI.

Each is stopped by its own PID; nothing here touches a process the test did not start.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx

from tests.helpers.environment import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.helpers.servers import free_port

PROJECT_ROOT = Path(__file__).resolve().parents[2]
START_SECONDS = 30.0


def sqlite_server_env(database: Path, **values: str) -> dict[str, str]:
    """The VMS_* settings of a server process on the SQLite file ``database``, with the test administrador,
    a fresh JWT secret and fast bcrypt; ``values`` add or override (``VMS_DB_TIMEOUT_SECONDS="2"``)."""
    return {
        "VMS_DATABASE_URL": f"sqlite+aiosqlite:///{database}",
        "VMS_JWT_SECRET": uuid.uuid4().hex + uuid.uuid4().hex,
        "VMS_ADMIN_EMAIL": ADMIN_EMAIL,
        "VMS_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "VMS_BCRYPT_ROUNDS": "4",
        **values,
    }


def vms_environment(values: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without any VMS_* of its own, plus ``values``."""
    environ = {name: value for name, value in os.environ.items() if not name.startswith("VMS_")}
    return {**environ, **values}


@dataclass
class ServerProcess:
    """``uvicorn --factory app:create_app`` in a process of its own, configured by VMS_* variables.

    ``group``: the process leads a process group of its own (``litestar run -W N`` runs uvicorn in a child
    process, which starts the workers), and stopping it signals that group, as Ctrl-C in a terminal does."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path
    group: bool = False

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://", 1)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def kill_hard(self) -> None:
        """``kill -9``: no shutdown of any kind."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def _signal(self, number: signal.Signals) -> None:
        if self.group:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, number)  # the group this process leads (start_new_session)
        elif self.process.poll() is None:
            self.process.send_signal(number)

    def _gone(self) -> bool:
        if not self.group:
            return self.process.poll() is not None
        self.process.poll()  # reaps the leader, so the group empties once the others have exited
        try:
            os.killpg(self.process.pid, 0)
        except ProcessLookupError:
            return True
        return False

    def stop(self) -> None:
        if self._gone():
            return
        self._signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        while not self._gone() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not self._gone():
            self._signal(signal.SIGKILL)
            self.process.wait(timeout=10)


async def wait_healthy(server: ServerProcess, seconds: float = START_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(timeout=2) as http:
        while time.monotonic() < deadline:
            assert server.process.poll() is None, f"the server exited:\n{server.output()}"
            try:
                if (await http.get(f"{server.url}/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"{server.url} did not start within {seconds} s:\n{server.output()}")


def server_command(port: int, options: Sequence[str] = ()) -> list[str]:
    """``uvicorn --factory app:create_app`` on ``port``; ``options``: more uvicorn options (``--http ...``),
    last, so they override."""
    command = [sys.executable, "-m", "uvicorn", "--factory", "app:create_app", "--port", str(port)]
    return [*command, "--log-level", "warning", *options]


def _copy(source: IO[bytes], log: Path) -> None:
    with source, log.open("ab") as output:
        for line in source:
            output.write(line)
            output.flush()


def start_server_process(
    env: Mapping[str, str],
    log: Path,
    port: int | None = None,
    options: Sequence[str] = (),
    *,
    pipe: bool = False,
) -> ServerProcess:
    """Its standard output and error go to ``log``: straight into the file, or (``pipe``) through a pipe
    this process copies from, as under a log collector or ``| tee``."""
    port = port or free_port()
    with log.open("ab") as output:
        process = subprocess.Popen(
            server_command(port, options),
            cwd=PROJECT_ROOT,
            env=vms_environment(env),
            stdout=subprocess.PIPE if pipe else output,
            stderr=subprocess.STDOUT,
        )
    if pipe:
        assert process.stdout is not None
        threading.Thread(target=_copy, args=(process.stdout, log), daemon=True).start()
    return ServerProcess(process=process, url=f"http://127.0.0.1:{port}", log=log)


def start_litestar_run(env: Mapping[str, str], log: Path, *options: str) -> ServerProcess:
    """``python -m litestar run --port P [options]``: the README's own command (its quick start, and ``-W N``
    to scale out), in a process group of its own."""
    port = free_port()
    with log.open("ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "litestar", "run", "--port", str(port), *options],
            cwd=PROJECT_ROOT,
            env=vms_environment(env),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return ServerProcess(process=process, url=f"http://127.0.0.1:{port}", log=log, group=True)


@asynccontextmanager
async def server_process(
    env: Mapping[str, str],
    log: Path,
    port: int | None = None,
    options: Sequence[str] = (),
    *,
    pipe: bool = False,
) -> AsyncIterator[ServerProcess]:
    """A started, healthy server process; stopped (by its PID) afterwards if it is still running."""
    server = start_server_process(env, log, port, options, pipe=pipe)
    try:
        await wait_healthy(server)
        yield server
    finally:
        server.stop()


@dataclass(frozen=True)
class Finished:
    """A command that ran to its end: its exit code, and its standard output and error, apart (a script
    reads stdout; log lines go to stderr)."""

    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        """Both streams, for assertions on what the command wrote anywhere."""
        return self.stdout + self.stderr


async def run_command(
    env: Mapping[str, str],
    command: Sequence[str],
    *,
    input: str | None = None,
    close_stdin: bool = False,
    seconds: float = 60.0,
) -> Finished:
    """``command`` in the project, with the VMS_* of ``env`` only, without blocking the event loop (a live
    server in this loop keeps serving meanwhile). Killed by its PID if it outlasts ``seconds``.

    Its stdin is ``input`` through a pipe, or without one ``/dev/null``, or with ``close_stdin`` no
    stdin at all (file descriptor 0 closed): never a terminal, so a command that would prompt must
    refuse instead."""
    if close_stdin:
        assert input is None
        command = ["sh", "-c", 'exec "$@" <&-', "sh", *command]
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=PROJECT_ROOT,
        env=vms_environment(env),
        stdin=asyncio.subprocess.DEVNULL if input is None else asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        sent = None if input is None else input.encode()
        stdout, stderr = await asyncio.wait_for(process.communicate(sent), seconds)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"{command} did not finish within {seconds} s") from None
    assert process.returncode is not None
    return Finished(process.returncode, stdout.decode(errors="replace"), stderr.decode(errors="replace"))


async def run_cli(
    env: Mapping[str, str],
    *args: str,
    input: str | None = None,
    close_stdin: bool = False,
    seconds: float = 60.0,
) -> Finished:
    """``python -m litestar <args>``: see :func:`run_command`."""
    command = [sys.executable, "-m", "litestar", *args]
    return await run_command(env, command, input=input, close_stdin=close_stdin, seconds=seconds)
