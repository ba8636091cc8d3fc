"""Options every command shares, and how they become a Runtime or a store."""

from __future__ import annotations

import asyncio
import functools
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
import structlog
from rich.console import Console
from yarl import URL

from runtime.config import Secrets
from runtime.errors import ConfigError, SluiceError
from runtime.logs import CLI_LOGGER, LEVELS, configure_logging, log_format
from runtime.runtime import Runtime
from runtime.store import StateStore, make_store

F = TypeVar("F", bound=Callable[..., Any])
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, soft_wrap=True)


@dataclass(frozen=True)
class Settings:
    """Where state lives and how to log, from flags or ``SLUICE_*`` environment variables."""

    data_dir: Path
    store: str | None
    secrets_file: Path | None

    @asynccontextmanager
    async def open_store(self) -> AsyncIterator[StateStore]:
        """The configured store, open for the duration of the block."""
        store = make_store(self.store, self.data_dir)
        await store.open()
        try:
            yield store
        finally:
            await store.close()

    def secrets(self) -> Secrets:
        try:
            return Secrets(self.secrets_file)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from exc

    def runtime(self, config_dir: str) -> Runtime:
        return Runtime(config_dir, data_dir=self.data_dir, store=self.store, secrets=self.secrets())

    def describe(self) -> str:
        """``data directory: DIR (store: URL)``, the password in a store URL shown as ``***``."""
        return f"data directory: {self.data_dir.resolve()} (store: {self.store_label()})"

    def store_label(self) -> str:
        if self.store is None:
            return f"sqlite {self.data_dir.resolve() / 'sluice.db'}"
        url = URL(self.store)
        return str(url.with_password("***")) if url.password else self.store

    def announce(self) -> None:
        """Say where state lives (stderr, or a ``data.directory`` JSON log line)."""
        notice("data.directory", self.describe(), data_dir=str(self.data_dir.resolve()), store=self.store_label())


def notice(event: str, text: str, *, level: str = "info", **fields: Any) -> None:
    """Tell the person at the terminal: ``text`` on stderr in console format (red for errors); with
    ``--log-format json`` the ``event`` and ``fields`` as one JSON line instead (logger
    ``sluice.cli``, whatever ``--log-level``), so that every line on stderr is JSON.

    Args:
        event: event name, e.g. ``data.directory``.
        text: the console line (no rich markup).
        level: ``info``, ``warning`` or ``error``.
        fields: the event's fields (JSON-serialisable).
    """
    if log_format() == "json":
        getattr(structlog.get_logger(CLI_LOGGER), level)(event, **fields)
    else:
        err.print(text, markup=False, style="red" if level == "error" else None)


def log_options(default_format: str, default_level: str) -> Callable[[F], F]:
    """Add ``--log-format``, ``--log-level`` (Sluice's loggers) and ``--library-log-level``
    (every other library's); the command receives ``log_format``, ``log_level``, ``library_log_level``."""

    def add(func: F) -> F:
        for option in reversed((
            click.option("--log-format", type=click.Choice(["console", "json"]), default=default_format,
                         envvar="SLUICE_LOG_FORMAT", show_default=True),
            click.option("--log-level", type=click.Choice(LEVELS), default=default_level,
                         envvar="SLUICE_LOG_LEVEL", show_default=True,
                         help="Level of Sluice's own loggers (sluice.*)."),
            click.option("--library-log-level", type=click.Choice(LEVELS), default="warning",
                         envvar="SLUICE_LIBRARY_LOG_LEVEL", show_default=True,
                         help="Level of every other library's loggers (aiosqlite, asyncio, aiohttp)."),
        )):
            func = option(func)
        return func

    return add


def common_options(func: F) -> F:
    """Add ``--data-dir``, ``--store``, ``--secrets-file`` and the :func:`log_options`;
    the command receives ``settings: Settings``."""

    @click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=".sluice",
                  envvar="SLUICE_DATA_DIR", show_default=True,
                  help="Directory for state (the default store lives here).")
    @click.option("--store", envvar="SLUICE_STORE", default=None,
                  help="State store URL, e.g. sqlite:///var/lib/sluice/state.db or postgresql://USER@HOST/DB "
                       "(default: DATA_DIR/sluice.db).")
    @click.option("--secrets-file", type=click.Path(dir_okay=False, path_type=Path), envvar="SLUICE_SECRETS_FILE",
                  default=None, help="JSON/YAML object of $SECRET(name) values (else the environment).")
    @log_options("console", "info")
    @functools.wraps(func)
    def wrapper(*args: Any, data_dir: Path, store: str | None, secrets_file: Path | None,
                log_format: str, log_level: str, library_log_level: str, **kwargs: Any) -> Any:
        configure_logging(log_format, log_level, library_log_level)  # type: ignore[arg-type]
        return func(*args, settings=Settings(data_dir, store, secrets_file), **kwargs)

    return wrapper  # type: ignore[return-value]


def run_async(coro: Coroutine[Any, Any, int | None]) -> None:
    """Run a command's coroutine; map Sluice errors to a message and an exit code.

    Exit codes: 0 success, 1 a pipe or operation failed, 2 invalid configuration or usage. With
    ``--log-format json`` a usage error and an unexpected exception (with its traceback in
    ``exception``) are JSON lines too; in console format click and Python print them as usual.
    """
    json_logs = log_format() == "json"
    try:
        code = asyncio.run(coro)
    except ConfigError as exc:
        notice("config.invalid", str(exc), level="error", problems=[str(p) for p in exc.problems])
        raise SystemExit(2) from None
    except SluiceError as exc:
        notice("command.failed", f"error: {exc}", level="error", error=str(exc))
        raise SystemExit(1) from None
    except click.UsageError as exc:
        if not json_logs:
            raise
        notice("usage.invalid", str(exc), level="error", error=exc.format_message())
        raise SystemExit(2) from None
    except Exception:
        if not json_logs:
            raise
        structlog.get_logger(CLI_LOGGER).exception("command.crashed")
        raise SystemExit(1) from None
    raise SystemExit(code or 0)
