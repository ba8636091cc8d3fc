"""The ``sluice`` command group."""

from __future__ import annotations

import click

from runtime.cli import commands, describe, dtl, serve, units


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sluice")
def cli() -> None:
    """Sluice: declare pipes in a config directory; collect, transform and share data safely."""


for command in (commands.run, commands.check, commands.pipes, commands.datasets,
                commands.entities, commands.reset, commands.breaker_cmd):
    cli.add_command(command)
cli.add_command(serve.serve)
cli.add_command(describe.describe_cmd)
cli.add_command(units.units_cmd)
cli.add_command(dtl.dtl_cmd)


def main() -> None:
    """Console-script entry point."""
    cli()
