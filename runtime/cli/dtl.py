"""``sluice dtl``: evaluate a DTL expression, or apply a rule set, to one entity (for learning
the language and trying a rule before putting it in a pipe)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import orjson

from runtime.cli.options import Settings, common_options, run_async
from runtime.dtl import conformance, values
from runtime.errors import DtlCompileError


def _json(text: str, what: str) -> Any:
    """``text`` as JSON, or the JSON of the file it names.

    Raises:
        click.BadParameter: neither a file nor valid JSON (exit 2).
    """
    path = Path(text)
    if len(text) < 4096 and path.is_file():
        text = path.read_text()
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON nor a JSON file: {exc}", param_hint=what) from None


def _expression(text: str, rules: bool) -> Any:
    """EXPR: JSON, a JSON file, or (an expression only) a bare string such as ``_S.name``."""
    if rules or text.lstrip()[:1] in ("[", "{", '"') or Path(text).is_file():
        return _json(text, "EXPR")
    return text


@click.command(name="dtl")
@click.argument("expr")
@click.option("--entity", default=None, help="The source entity _S, as JSON (or a JSON file).")
@click.option("--dataset", default=None, help="Read the source entity from this dataset (with --id).")
@click.option("--id", "entity_id", default=None, help="The _id of the entity to read from --dataset.")
@click.option("--rules", is_flag=True,
              help="EXPR is a rule set ({\"default\": [...]}); print the entities it outputs.")
@common_options
def dtl_cmd(expr: str, entity: str | None, dataset: str | None, entity_id: str | None, rules: bool,
            settings: Settings) -> None:
    """Evaluate the DTL expression EXPR (or, with --rules, apply the rule set EXPR) against an
    entity and print the result as JSON (transit encoding for typed values: "~t..." datetimes).

    Exit codes: 0 done, 1 a fail!/trip! ran, 2 bad input (not JSON, a compile error, with the
    position of each problem, or no such entity).
    """
    if entity is not None and dataset is not None:
        raise click.UsageError("give --entity or --dataset/--id, not both")
    if (dataset is None) != (entity_id is None):
        raise click.UsageError("--dataset and --id go together")
    raw = _expression(expr, rules)
    source = _json(entity, "--entity") if entity is not None else {}

    async def go() -> int:
        nonlocal source
        if dataset is not None and entity_id is not None:
            async with settings.open_store() as store:
                found = await store.get(dataset, entity_id)
            if not found:
                raise click.BadParameter(f"no entity {entity_id!r} in dataset {dataset!r}",
                                         param_hint="--id")
            source = found[-1]  # stored as transit JSON already
        try:
            result = (conformance.apply(raw, [source]) if rules
                      else conformance.evaluate(raw, source))
        except DtlCompileError as exc:
            for p in exc.problems:
                click.echo(f"{p.key}: {p.reason}", err=True)
            return 2
        sys.stdout.write(orjson.dumps(values.encode(result), option=orjson.OPT_INDENT_2).decode())
        sys.stdout.write("\n")
        return 0

    run_async(go())
