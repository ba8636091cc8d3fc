"""``sluice serve CONFIG_DIR``: the daemon (pumps, service API, publishers, receivers, metrics)."""

from __future__ import annotations

from pathlib import Path

import click

from runtime.cli.options import log_options, notice, run_async
from runtime.config import Secrets
from runtime.daemon.settings import load_settings
from runtime.errors import ConfigError, ConfigProblem
from runtime.heap import freeze_startup_heap
from runtime.logs import configure_logging


@click.command()
@click.argument("config_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--settings", "settings_file", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Daemon settings file (YAML/JSON); env SLUICE_SETTINGS.")
@click.option("--host", default=None, help="Interface to bind (default 127.0.0.1; env SLUICE_HOST).")
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help="TCP port, 0 for any free one (default 9042; env SLUICE_PORT).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Directory for state (default .sluice; env SLUICE_DATA_DIR).")
@click.option("--store", default=None, help="State store URL (default DATA_DIR/sluice.db; env SLUICE_STORE).")
@click.option("--secrets-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="JSON/YAML object of $SECRET(name) values (env SLUICE_SECRETS_FILE).")
@click.option("--ready-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write {host, port, pid} here once listening.")
@log_options("json", "info")
def serve(config_dir: str, settings_file: Path | None, log_format: str, log_level: str, library_log_level: str,
          **flags: object) -> None:
    """Run every pipe's pump and the HTTP service API until SIGTERM/SIGINT; SIGHUP reloads."""
    configure_logging(log_format, log_level, library_log_level)  # type: ignore[arg-type]

    async def go() -> int:
        from runtime.runtime import Runtime

        settings = load_settings(settings_file, **flags)
        try:
            secrets = Secrets(settings.secrets_file)
        except ValueError as exc:
            raise ConfigError([ConfigProblem("<settings>", None, "secrets_file", str(exc))]) from exc
        rt = Runtime(config_dir, data_dir=settings.data_dir, store=settings.store, secrets=secrets)
        async with rt:
            freeze_startup_heap()
            data_dir = settings.data_dir.resolve()
            notice("serve.starting", f"sluice serve: {config_dir} ({len(rt.pipe_ids())} pipes) on "
                   f"{settings.host}, data directory {data_dir}", config_dir=config_dir,
                   pipes=len(rt.pipe_ids()), host=settings.host, data_dir=str(data_dir))
            await rt.serve(settings, handle_signals=True)
        return 0

    run_async(go())
