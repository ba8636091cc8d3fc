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
from rich.console import Console

from runtime.config import Secrets
from runtime.errors import ConfigError, SluiceError
from runtime.logs import configure_logging
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
        where = self.store or f"sqlite {self.data_dir.resolve() / 'sluice.db'}"
        return f"data directory: {self.data_dir.resolve()} (store: {where})"


def common_options(func: F) -> F:
    """Add ``--data-dir``, ``--store``, ``--secrets-file``, ``--log-format``, ``--log-level``;
    the command receives ``settings: Settings``."""

    @click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=".sluice",
                  envvar="SLUICE_DATA_DIR", show_default=True,
                  help="Directory for state (the default store lives here).")
    @click.option("--store", envvar="SLUICE_STORE", default=None,
                  help="State store URL, e.g. sqlite:///var/lib/sluice/state.db (default: DATA_DIR/sluice.db).")
    @click.option("--secrets-file", type=click.Path(dir_okay=False, path_type=Path), envvar="SLUICE_SECRETS_FILE",
                  default=None, help="JSON/YAML object of $SECRET(name) values (else the environment).")
    @click.option("--log-format", type=click.Choice(["console", "json"]), default="console",
                  envvar="SLUICE_LOG_FORMAT", show_default=True)
    @click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="warning",
                  envvar="SLUICE_LOG_LEVEL", show_default=True)
    @functools.wraps(func)
    def wrapper(*args: Any, data_dir: Path, store: str | None, secrets_file: Path | None,
                log_format: str, log_level: str, **kwargs: Any) -> Any:
        configure_logging(log_format, log_level)  # type: ignore[arg-type]
        return func(*args, settings=Settings(data_dir, store, secrets_file), **kwargs)

    return wrapper  # type: ignore[return-value]


def run_async(coro: Coroutine[Any, Any, int | None]) -> None:
    """Run a command's coroutine; map Sluice errors to a message and an exit code.

    Exit codes: 0 success, 1 a pipe or operation failed, 2 invalid configuration or usage.
    """
    try:
        code = asyncio.run(coro)
    except ConfigError as exc:
        err.print(str(exc), markup=False)
        raise SystemExit(2) from None
    except SluiceError as exc:
        err.print(f"error: {exc}", markup=False)
        raise SystemExit(1) from None
    raise SystemExit(code or 0)
