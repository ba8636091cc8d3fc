"""The ``sluice`` command line. Commands live in modules of this package; each is added to the
group in :mod:`runtime.cli.main`."""

from runtime.cli.main import main

__all__ = ["main"]
