"""``sluice describe``: the config keys of a pipe, a pump or a registered component type, as rich
tables or as the Markdown of the README's configuration reference."""

from __future__ import annotations

import click
from rich.table import Table
from rich.text import Text

from runtime.cli.options import out
from runtime.describe import KIND_ORDER, ModelDoc, Target, describe, find_target, targets
from runtime.plugins import Registry, default_registry


@click.command(name="describe", short_help="Config keys of a pipe, a pump or a component type.")
@click.argument("kind", required=False, metavar="[KIND]")
@click.argument("type_name", required=False, metavar="[TYPE]")
@click.option("--markdown", is_flag=True, help="Print Markdown tables (as in the README) instead.")
@click.option("--nested/--no-nested", default=True, show_default=True,
              help="Also describe the models used inside the keys (paging, auth, ...).")
def describe_cmd(kind: str | None, type_name: str | None, markdown: bool, nested: bool) -> None:
    """Describe the config keys of KIND (pipe, pump, source, transform, sink, system) and TYPE
    (e.g. `source file`, `system rest`): type, default and meaning of each. Without TYPE: the
    types of KIND; without KIND: every type, plugins included."""
    registry = default_registry()
    if kind is None or (kind in ("source", "transform", "sink", "system") and type_name is None):
        out.print(listing(registry, kind))
        return
    target = lookup(registry, kind, type_name)
    docs = describe(target, nested=nested)
    if markdown:
        click.echo(to_markdown(docs), nl=False)
    else:
        for doc in docs:
            out.print(key_table(doc, target.label))


def lookup(registry: Registry, kind: str, type_name: str | None) -> Target:
    """The target, or a usage error (exit code 2) naming the known kinds or types."""
    try:
        return find_target(registry, kind, type_name)
    except LookupError as exc:
        raise click.UsageError(str(exc)) from None


def listing(registry: Registry, kind: str | None) -> Table:
    """Kind, type and one-line summary of every target (of ``kind`` only, when given)."""
    table = Table(title="sluice describe KIND TYPE: the keys of each", title_justify="left")
    for column in ("kind", "type", "summary"):
        table.add_column(column)
    for target in sorted(targets(registry), key=lambda t: KIND_ORDER.index(t.kind)):
        if kind in (None, target.kind):
            table.add_row(target.kind, target.type_name, Text(target.summary))
    return table


def key_table(doc: ModelDoc, label: str) -> Table:
    """One model's keys as a rich table, titled by the target's ``label`` (``source file``) or,
    for a nested model, by its path and name."""
    title = f"{doc.path} ({doc.name})" if doc.path else label
    table = Table(title=Text(f"{title}: {doc.summary}"), title_justify="left")
    for column in ("key", "type", "default", "meaning"):
        table.add_column(column, overflow="fold")
    for key in doc.keys:
        table.add_row(Text(key.key), Text(key.type), Text(key.default), Text(key.meaning))
    return table


def to_markdown(docs: list[ModelDoc]) -> str:
    """Markdown tables (``key | type | default | meaning``), each nested one introduced by its
    path, model name and summary; ends with a newline."""
    parts = []
    for doc in docs:
        if doc.path:
            parts.append(f"`{doc.path}` ({doc.name}): {doc.summary}\n")
        rows = [f"| `{k.key}` | `{_cell(k.type)}` | {_default(k.default)} | {_cell(k.meaning)} |" for k in doc.keys]
        parts.append("\n".join(["| key | type | default | meaning |", "|---|---|---|---|", *rows]) + "\n")
    return "\n".join(parts)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _default(default: str) -> str:
    return default if default == "required" else f"`{_cell(default)}`"
