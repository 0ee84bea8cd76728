"""Logging: structlog for every line VMS writes, one format for all of them, and no secrets in any line.

Each line carries the id of the request it belongs to (``request_id``, from app/context.py), so an
operator can follow one request from its access line to its security events and its change-log entry.
Lines are JSON (one object per line, for a log pipeline) unless the process writes to a terminal, where
they are plain text; ``VMS_LOG_FORMAT`` (auto, console, json) overrides that guess.

Lines go to standard error, like uvicorn's own: standard output stays clean for the command line's
results (``litestar users list --json``).

The access line per request is app/http/access_log.py's. Uvicorn's own access log, which prints the
request target with its query string (where browsers put ``?token=``), is switched off while that one is
on; if it is turned back on (``VMS_ACCESS_LOG=false``), a filter redacts tokens from it. Bodies are never
logged (they hold passwords).
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import threading
import time
from typing import Any, Literal

import msgspec
import structlog
from litestar.logging.config import LoggingConfig, StructLoggingConfig
from litestar.plugins.structlog import StructlogConfig, StructlogPlugin
from structlog.typing import EventDict, Processor, WrappedLogger

from app.context import request_id

LogFormat = Literal["auto", "console", "json"]

_TOKEN_IN_QUERY = re.compile(r"([?&](?:token|access_token)=)[^&\s\"']+", re.IGNORECASE)
_BEARER = re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
# enc_hook=str: a value msgspec cannot encode (an exception, a path) is logged as its text, not lost.
_encoder = msgspec.json.Encoder(enc_hook=str)


def redact(text: str) -> str:
    return _BEARER.sub(r"\1[redacted]", _TOKEN_IN_QUERY.sub(r"\1[redacted]", text))


class RedactSecrets(logging.Filter):
    """Rewrites a record's message and arguments so tokens never reach a handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(arg) if isinstance(arg, str) else arg for arg in record.args)
        return True


class DropAll(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False


def configure_server_loggers(*, uvicorn_access_log: bool) -> None:
    """Redact tokens from the standard-library loggers of the server and Litestar; switch uvicorn's access
    log off when VMS writes its own (``uvicorn_access_log`` False).

    A filter, not ``logger.disabled``: Litestar's logging set-up at start re-enables existing loggers."""
    for name in ("uvicorn.access", "uvicorn.error", "uvicorn", "litestar"):
        logger = logging.getLogger(name)
        if not any(isinstance(existing, RedactSecrets) for existing in logger.filters):
            logger.addFilter(RedactSecrets())
    access = logging.getLogger("uvicorn.access")
    for existing in [f for f in access.filters if isinstance(f, DropAll)]:
        access.removeFilter(existing)
    if not uvicorn_access_log:
        access.addFilter(DropAll())


def renders_json(log_format: LogFormat) -> bool:
    if log_format == "auto":
        return not sys.stderr.isatty()
    return log_format == "json"


def add_request_id(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """Every line written while a request is handled names that request."""
    rid = request_id.get()
    if rid is not None:
        event.setdefault("request_id", rid)
    return event


class UtcTimestamp:
    """``timestamp``: the time in ISO 8601, UTC, to the microsecond (``2026-12-04T18:38:11.454488Z``), as
    structlog's ``TimeStamper(fmt="iso", utc=True)`` writes it, with the date and time of day formatted
    once per second: a ``datetime`` built and formatted per line was 1.7 of the 6 µs an access line took."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, _: WrappedLogger, __: str, event: EventDict) -> EventDict:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        event["timestamp"] = f"{self._prefix}.{int((now - second) * 1_000_000):06d}Z"
        return event


class InfoLine:
    """``structlog.get_logger(name).info(event, **fields)`` for the line every request writes (the access
    line), with the same result: the same keys in the same order, the same request id, level and
    timestamp, written by the same :class:`StderrLogger`.

    When lines are JSON at level INFO or below, it builds the line itself: structlog's path (the lazy
    proxy, the bound logger's event dict, five processors, the renderer) cost 57,000 instructions per
    cached ``GET /vms/{id}`` (callgrind, in-process), a tenth of the whole request; this costs about a
    fifth of that. Otherwise (console lines, a higher level) it is structlog's own call."""

    __slots__ = ("_logger",)

    def __init__(self, name: str) -> None:
        self._logger = structlog.get_logger(name)

    def __call__(self, event: str, fields: dict[str, Any]) -> None:
        if not _fast_json_info:
            self._logger.info(event, **fields)
            return
        fields["event"] = event
        add_request_id(None, "info", fields)
        fields["level"] = "info"
        _TIMESTAMP(None, "info", fields)
        _LOGGER.msg(_encoder.encode(fields).decode())


def _json(event: EventDict, **_: Any) -> str:
    return _encoder.encode(event).decode()


def _renderer(as_json: bool) -> Processor:
    if as_json:
        return structlog.processors.JSONRenderer(serializer=_json)
    return structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())


_TIMESTAMP = UtcTimestamp()
# Whether InfoLine may build its line itself: JSON lines at level INFO or below (create_logging_plugin).
_fast_json_info = False


def _processors(as_json: bool) -> list[Processor]:
    # No merge_contextvars: nothing binds structlog context variables (the request id has its own
    # processor), and copying the context cost 3 of the 12 µs an access line took. InfoLine writes the
    # same line as this chain does: a change here is a change there.
    return [
        add_request_id,
        structlog.processors.add_log_level,
        _TIMESTAMP,
        structlog.processors.format_exc_info,
        _renderer(as_json),
    ]


def _stdlib_processors(as_json: bool) -> list[Processor]:
    """For lines from standard-library loggers (the server's, SQLAlchemy's): the same shape as VMS's."""
    return [
        add_request_id,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        UtcTimestamp(),
        structlog.stdlib.ExtraAdder(),
        structlog.processors.format_exc_info,  # a traceback as text: JSON cannot hold exc_info itself
        structlog.stdlib.ProcessorFormatter.remove_processors_meta,
        _renderer(as_json),
    ]


class StderrLogger:
    """Writes lines to the standard error of the moment (a stream replaced later is honoured).

    Inside a running event loop, the lines of one loop iteration are written together at its end: one
    write and one flush instead of one per line. Under load the flush per access line cost about 4% of a
    cached read (a system call each). Outside a loop (start-up, the command line) a line is written at
    once, and a process that dies mid-iteration loses at most that iteration's lines.
    """

    def __init__(self) -> None:
        self._pending: list[str] = []
        self._lock = threading.Lock()  # a process may run several loops (the command line's threads)

    def msg(self, message: str) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._write(message + "\n")
            return
        with self._lock:
            if not self._pending:
                loop.call_soon(self._flush)
            self._pending.append(message)

    def _flush(self) -> None:
        with self._lock:
            lines, self._pending = self._pending, []
        if lines:
            self._write("\n".join(lines) + "\n")

    @staticmethod
    def _write(text: str) -> None:
        stream = sys.stderr
        stream.write(text)
        stream.flush()

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


_LOGGER = StderrLogger()


def _stderr_logger(*_: Any) -> StderrLogger:
    return _LOGGER  # one, so the lines of every logger share one write per loop iteration


def create_logging_plugin(*, debug: bool, level: str, log_format: LogFormat) -> StructlogPlugin:
    global _fast_json_info  # structlog's own configuration is process-wide too
    as_json = renders_json(log_format)
    _fast_json_info = as_json and logging.getLevelName(level.upper()) <= logging.INFO
    return StructlogPlugin(
        config=StructlogConfig(
            structlog_logging_config=StructLoggingConfig(
                processors=_processors(as_json),
                logger_factory=_stderr_logger,
                standard_lib_logging_config=LoggingConfig(
                    formatters={
                        "standard": {
                            "()": structlog.stdlib.ProcessorFormatter,
                            "processors": _stdlib_processors(as_json),
                        }
                    }
                ),
                log_exceptions="debug" if debug else "never",
                wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
            ),
            enable_middleware_logging=False,
        )
    )
