"""Logging: structlog for the app's own messages, and no secrets in any log line.

Request lines come from the server's access log (uvicorn), which prints the request target including the
query string; WebSocket clients in browsers put their token there (``?token=``), so a filter redacts it.
Bodies are never logged (they hold passwords).
"""

from __future__ import annotations

import logging
import re

import structlog
from litestar.logging.config import StructLoggingConfig
from litestar.plugins.structlog import StructlogConfig, StructlogPlugin

_TOKEN_IN_QUERY = re.compile(r"([?&](?:token|access_token)=)[^&\s\"']+", re.IGNORECASE)
_BEARER = re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE)


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


def install_redaction() -> None:
    for name in ("uvicorn.access", "uvicorn.error", "uvicorn", "litestar"):
        logger = logging.getLogger(name)
        if not any(isinstance(existing, RedactSecrets) for existing in logger.filters):
            logger.addFilter(RedactSecrets())


def create_logging_plugin(*, debug: bool, level: str) -> StructlogPlugin:
    return StructlogPlugin(
        config=StructlogConfig(
            structlog_logging_config=StructLoggingConfig(
                log_exceptions="debug" if debug else "never",
                wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
            ),
            enable_middleware_logging=False,
        )
    )
