"""A pseudo-terminal for a process a test starts: what a program sees when an operator runs it by hand.

The process gets the terminal's far end as its stdin, stdout and stderr and, in a session of its own, as
its controlling terminal (``/dev/tty``, where hidden prompts read). The test reads everything the process
writes (kept in a file, so the process never blocks on a full terminal) and types into it.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import re
import select
import subprocess
import termios
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.processes import PROJECT_ROOT, vms_environment

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _take_terminal() -> None:
    """In the child, after ``setsid``: make its stdin (the terminal) its controlling terminal."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


@dataclass
class Terminal:
    controller: int
    log: Path

    def text(self) -> str:
        """What the process wrote so far, without colour codes, with plain line ends."""
        raw = self.log.read_bytes().decode(errors="replace")
        return _ANSI.sub("", raw).replace("\r\n", "\n")

    def type(self, text: str) -> None:
        os.write(self.controller, text.encode())

    async def wait_for(self, text: str, seconds: float = 30.0) -> None:
        deadline = time.monotonic() + seconds
        while text not in self.text():
            assert time.monotonic() < deadline, f"{text!r} did not appear within {seconds} s:\n{self.text()}"
            await asyncio.sleep(0.05)


@asynccontextmanager
async def in_terminal(
    command: Sequence[str], env: Mapping[str, str], log: Path
) -> AsyncIterator[tuple[subprocess.Popen[bytes], Terminal]]:
    """``command`` started in the project with the VMS_* of ``env`` on a new pseudo-terminal; killed by its
    PID on the way out if it is still running."""
    controller, far_end = os.openpty()
    try:
        process = subprocess.Popen(
            list(command),
            cwd=PROJECT_ROOT,
            env=vms_environment(env),
            stdin=far_end,
            stdout=far_end,
            stderr=far_end,
            start_new_session=True,
            preexec_fn=_take_terminal,
        )
    finally:
        os.close(far_end)
    loop = asyncio.get_running_loop()
    output = log.open("wb")

    def read_some() -> bool:
        """Copy what is there to the log; False once the process has closed its end."""
        try:
            data = os.read(controller, 65536)
        except OSError:  # EIO: every holder of the far end closed it
            return False
        output.write(data)
        output.flush()
        return bool(data)

    def drain() -> None:
        if not read_some():
            loop.remove_reader(controller)

    loop.add_reader(controller, drain)
    try:
        yield process, Terminal(controller, log)
    finally:
        if process.poll() is None:
            process.kill()
        await asyncio.to_thread(process.wait, 10)
        loop.remove_reader(controller)
        while select.select([controller], [], [], 0)[0] and read_some():
            pass  # what the process wrote last, before it exited
        output.close()
        os.close(controller)
