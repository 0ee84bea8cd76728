"""Every request gets an id: a sane ``X-Request-ID`` from the client is kept, otherwise one is made.

It is returned in ``X-Request-ID`` and recorded with the changes the request makes (app/context.py). The
request's outer wrapper (app/http/access_log.py) sets it and adds the header.
"""

from __future__ import annotations

import itertools
import os
import re

from litestar.types import (
    HTTPResponseStartEvent,
    Scope,
    WebSocketAcceptEvent,
)

HEADER = b"x-request-id"
# Letters, digits and a few separators, at most 64: anything else is replaced, never echoed. Matched with
# fullmatch: ``$`` also matches before a final line break, which would have kept "id\n".
SANE = re.compile(rb"[A-Za-z0-9._:-]{1,64}")


# A made id is this process's random prefix and a counter: unique without a uuid4 per request, whose
# os.urandom call was 4.6% of a cached read's time. It names a request; it guards nothing.
_PREFIX = os.urandom(8).hex()
_COUNTER = itertools.count(1)


def _new_id() -> bytes:
    return f"{_PREFIX}{next(_COUNTER):016x}".encode()


def id_for(scope: Scope) -> bytes:
    """The request's id: the client's ``X-Request-ID`` if it is sane, otherwise a new one."""
    given = next((value for name, value in scope["headers"] if name == HEADER), None)
    return given if given is not None and SANE.fullmatch(given) else _new_id()


def with_id_header(message: HTTPResponseStartEvent | WebSocketAcceptEvent, rid: bytes) -> None:
    """Add ``X-Request-ID`` to the message that starts a response or accepts a WebSocket."""
    message["headers"] = [*message.get("headers", ()), (HEADER, rid)]
