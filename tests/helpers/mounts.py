"""Storage a test can fill or make read-only: a small tmpfs and a read-only bind mount of a directory.

Both need root (``mount``); each is unmounted by the test that made it, and nothing else is touched.
Used by the SQLite storage-fault tests and ``bench faults``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

CHUNK = 256 * 1024


class MountUnavailable(RuntimeError):
    """This process cannot mount (not root, or no mount namespace rights)."""


def _run(*command: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    if result.returncode != 0:
        raise MountUnavailable(f"{' '.join(command)}: {result.stderr.strip() or result.returncode}")


@contextlib.contextmanager
def small_tmpfs(size_mb: int) -> Iterator[Path]:
    """A tmpfs of ``size_mb`` MB, mounted on a fresh directory and unmounted afterwards."""
    if os.geteuid() != 0:
        raise MountUnavailable("mounting a tmpfs needs root")
    directory = Path(tempfile.mkdtemp(prefix="vms-tmpfs-"))
    _run("mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", "tmpfs", str(directory))
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], capture_output=True, timeout=30, check=False)
        with contextlib.suppress(OSError):
            directory.rmdir()


def fill(directory: Path) -> Path:
    """Write a file in ``directory`` until its file system has no space left; the file, to free it later."""
    filler = directory / "filler"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        block = b"\0" * CHUNK
        while len(block) >= 512:
            try:
                os.write(descriptor, block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                block = block[: len(block) // 2]
    finally:
        os.close(descriptor)
    return filler


@dataclass
class BindMount:
    """``view`` shows ``source``; :meth:`read_only` and :meth:`writable` flip the view alone."""

    source: Path
    view: Path

    def read_only(self) -> None:
        _run("mount", "-o", "remount,bind,ro", str(self.view))

    def writable(self) -> None:
        _run("mount", "-o", "remount,bind,rw", str(self.view))


@contextlib.contextmanager
def bind_mount(source: Path) -> Iterator[BindMount]:
    """A bind mount of ``source`` on a fresh directory (writable at first), unmounted afterwards."""
    if os.geteuid() != 0:
        raise MountUnavailable("a bind mount needs root")
    view = Path(tempfile.mkdtemp(prefix="vms-view-"))
    _run("mount", "--bind", str(source), str(view))
    try:
        yield BindMount(source=source, view=view)
    finally:
        subprocess.run(["umount", "-l", str(view)], capture_output=True, timeout=30, check=False)
        with contextlib.suppress(OSError):
            view.rmdir()
