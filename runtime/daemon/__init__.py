"""The daemon (``sluice serve``): scheduler, service API, publishers, receivers, metrics, status.

Modules: :mod:`~runtime.daemon.server` (lifecycle, reload, signals), :mod:`~runtime.daemon.app`
(routes, auth, errors), ``api_pipes`` / ``api_data`` (service API), ``publishers`` (JSON pull),
``receivers`` (JSON push), ``scrape`` (the Prometheus exposition of :mod:`runtime.metrics`),
``status`` (HTML page), :mod:`~runtime.daemon.settings`.

Nothing here is imported eagerly; the data path (connectors, pipes) imports nothing of it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


async def serve(
    runtime: Any, settings: Any = None, *, handle_signals: bool = False,
    on_ready: Callable[[int], None] | None = None,
) -> None:
    """Serve an open :class:`~runtime.runtime.Runtime` until stopped (see :class:`Daemon`).

    Args:
        runtime: an open Runtime.
        settings: :class:`~runtime.daemon.settings.DaemonSettings` (default: from the environment).
        handle_signals: install SIGTERM/SIGINT (clean stop) and SIGHUP (reload) handlers.
        on_ready: called with the bound port once the server listens.
    """
    from runtime.daemon.server import Daemon
    from runtime.daemon.settings import load_settings

    daemon = Daemon(runtime, settings if settings is not None else load_settings())
    await daemon.serve(handle_signals=handle_signals, on_ready=on_ready)
