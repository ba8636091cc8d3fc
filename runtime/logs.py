"""Structured logs: structlog over the standard library, JSON lines or console, on stderr.

Pipe id and run id are bound per run through ``structlog.contextvars`` and appear on every line
the run logs, stdlib records included. Events are names plus fields
(``log.info("page.fetched", page=3)``), never formatted strings.

Two levels: Sluice's own loggers (``sluice`` and below: ``sluice.pipe``, ``sluice.rest``, ...) log
at ``level``; every other logger (aiosqlite, whose debug lines hold SQL with bound entity data,
asyncio, aiohttp) at ``library_level``, ``warning`` unless asked for explicitly.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog

LogFormat = Literal["console", "json"]
LEVELS = ("debug", "info", "warning", "error")
#: Logger of what the command line tells the person at the terminal (data directory, failures);
#: it logs whatever the level, as its console counterpart is always printed.
CLI_LOGGER = "sluice.cli"

_SHARED: list[structlog.typing.Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_logger_name,
    structlog.stdlib.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]
_configured: list[LogFormat] = []


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted, so that lines go through
    rich's live display (which swaps ``sys.stderr`` while it runs) instead of tearing it."""

    @property
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


def configure_logging(fmt: LogFormat = "console", level: str = "info", library_level: str = "warning") -> None:
    """Send every log line to stderr in ``fmt``: Sluice's at ``level`` or above, other
    libraries' at ``library_level`` or above.

    Args:
        fmt: ``console`` (human-readable) or ``json`` (one JSON object per line).
        level: ``debug``, ``info``, ``warning`` or ``error``, for loggers named ``sluice.*``.
        library_level: the same, for every other logger (aiosqlite, asyncio, aiohttp, ...).

    Raises:
        ValueError: unknown level.
    """
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[*_SHARED, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler = _StderrHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=_SHARED,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_numeric(library_level))
    logging.getLogger("sluice").setLevel(_numeric(level))
    logging.getLogger(CLI_LOGGER).setLevel(logging.DEBUG)
    _configured[:] = [fmt]


def log_format() -> LogFormat | None:
    """The format :func:`configure_logging` set, or None when it was not called (embedded)."""
    return _configured[0] if _configured else None


def _numeric(level: str) -> int:
    if level.lower() not in LEVELS:
        raise ValueError(f"unknown log level {level!r}; use debug, info, warning or error")
    return logging.getLevelName(level.upper())


def library_defaults() -> None:
    """Route structlog through the standard library unless the host program configured structlog
    itself: embedded, Sluice then logs like any library (warnings to stderr by default)."""
    if not structlog.is_configured():
        structlog.configure(
            processors=[*_SHARED, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
            logger_factory=structlog.stdlib.LoggerFactory(),
            wrapper_class=structlog.stdlib.BoundLogger,
            cache_logger_on_first_use=False,
        )
