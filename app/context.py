"""What a write is made on behalf of, for the change log: its source and the request it came with.

Context variables, so the write path reads them without every service passing them along: the request-id
middleware (app/http/request_id.py) sets the request id, the CLI and the start-up bootstrap set their
source around the writes they make, and everything else is the API.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Literal

Source = Literal["api", "cli", "startup"]

write_source: ContextVar[Source] = ContextVar("vms_write_source", default="api")
request_id: ContextVar[str | None] = ContextVar("vms_request_id", default=None)


@contextmanager
def writes_from(source: Source) -> Iterator[None]:
    token = write_source.set(source)
    try:
        yield
    finally:
        write_source.reset(token)
