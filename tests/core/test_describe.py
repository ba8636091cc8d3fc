"""``sluice describe`` and the README's generated config reference (runtime/describe.py,
runtime/cli/describe.py, scripts/readme_reference.py): the docs come from the models and cannot
drift from them."""

from __future__ import annotations

import difflib
import importlib.util
from typing import Any, ClassVar, Literal

import pytest
from click.testing import CliRunner
from pydantic import BaseModel, Field

from runtime.cli.describe import to_markdown
from runtime.cli.main import cli
from runtime.components import ComponentConfig, Sink
from runtime.config.secrets import Secret
from runtime.describe import (
    default_text,
    describe,
    find_target,
    parse_attributes,
    targets,
    type_text,
)
from tests.conftest import REPO

_spec = importlib.util.spec_from_file_location("readme_reference", REPO / "scripts" / "readme_reference.py")
assert _spec is not None and _spec.loader is not None
reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reference)

README = REPO / "README.md"


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, ["describe", *args])


def row(output: str, key: str) -> str:
    """The first line of the rich table row whose key cell is ``key``."""
    return next(line for line in output.splitlines() if line.startswith(f"│ {key} "))


# -- the README --------------------------------------------------------------------------------

def test_readme_generated_blocks_equal_the_generator_output():
    text = README.read_text(encoding="utf-8")
    fresh = reference.regenerate(text)
    diff = "".join(difflib.unified_diff(text.splitlines(True), fresh.splitlines(True), "README.md", "regenerated"))
    assert fresh == text, f"README is stale, run python scripts/readme_reference.py:\n{diff}"


def test_readme_has_a_generated_table_per_documented_target():
    text = README.read_text(encoding="utf-8")
    for args in ("pipe --no-nested", "pump", "source dataset", "source file", "sink dataset", "system rest",
                 "source rest", "transform rest --no-nested", "transform dtl", "sink http_endpoint",
                 "source http_endpoint"):
        assert f"{reference.START}{args} -->" in text, args


def test_regenerate_refuses_a_block_without_end():
    with pytest.raises(ValueError, match="end generated"):
        reference.regenerate(f"{reference.START}pump -->\n| stale |\n")


def test_check_reports_a_stale_readme_without_writing(tmp_path, capsys):
    stale = tmp_path / "README.md"
    stale.write_text(f"# x\n\n{reference.START}pump -->\n| old |\n<!-- end generated -->\n", encoding="utf-8")
    before = stale.read_text(encoding="utf-8")
    assert reference.main(["--check", str(stale)]) == 1
    assert "-| old |" in capsys.readouterr().out
    assert stale.read_text(encoding="utf-8") == before
    assert reference.main([str(stale)]) == 0
    assert reference.main(["--check", str(stale)]) == 0
    assert "| `schedule_interval` |" in stale.read_text(encoding="utf-8")


# -- every built-in key is documented -------------------------------------------------------------

def test_every_builtin_key_has_a_meaning():
    undocumented = [
        f"{target.label}: {doc.path or doc.name}.{key.key}"
        for target in targets(reference.builtin_registry())
        for doc in describe(target)
        for key in doc.keys
        if not key.meaning.strip()
    ]
    assert undocumented == []


def test_targets_cover_pipe_pump_and_every_registered_type():
    labels = [t.label for t in targets(reference.builtin_registry())]
    assert labels[:2] == ["pipe", "pump"]
    for label in ("source file", "source rest", "transform python", "sink dataset", "sink null",
                  "system system:rest"):
        assert label in labels


# -- the pieces ---------------------------------------------------------------------------------

def test_parse_attributes_multi_key_entries_and_continuations():
    doc = """Summary.

    Attributes:
        a, b: shared text
            continued here.
        c / d: other.
        e: last.

    Raises:
        ValueError: not an attribute.
    """
    assert parse_attributes(doc) == {
        "a": "shared text continued here.", "b": "shared text continued here.",
        "c": "other.", "d": "other.", "e": "last.",
    }
    assert parse_attributes("No sections.") == {}
    assert parse_attributes(None) == {}


class _Inner(BaseModel):
    """Inner thing.

    Attributes:
        n: a number.
    """

    n: int = 1


class _Outer(BaseModel):
    """Outer thing.

    Attributes:
        id: the id.
        kind: which.
        inner, inners, by_name: nested.
        tags: tags.
        secret: a secret.
    """

    id: str = Field(alias="_id")
    kind: Literal["a", "b"] | None = None
    inner: _Inner = Field(default_factory=_Inner)
    inners: list[_Inner] = Field(default_factory=list)
    by_name: dict[str, _Inner] | None = None
    tags: dict[str, str | Secret] = Field(default_factory=dict)
    secret: Secret | None = None


@pytest.mark.parametrize(("field", "expected"), [
    ("id", "string"),
    ("kind", '"a" | "b" | null'),
    ("inner", "object (_Inner)"),
    ("inners", "list of object (_Inner)"),
    ("by_name", "object of object (_Inner) | null"),
    ("tags", "object of (string | secret)"),
    ("secret", "secret | null"),
])
def test_type_text(field, expected):
    assert type_text(_Outer.model_fields[field].annotation) == expected


def test_default_text_required_json_and_factories():
    fields = _Outer.model_fields
    assert default_text(fields["id"]) == "required"
    assert default_text(fields["kind"]) == "null"
    assert default_text(fields["inner"]) == "{}"
    assert default_text(fields["inners"]) == "[]"


class _DocSinkConfig(ComponentConfig):
    """Attributes:
        outer: where it goes.
    """

    type: Literal["doc_sink"]
    outer: _Outer


class _DocSink(Sink):
    """A test-only sink. Second sentence."""

    Config: ClassVar[type[ComponentConfig]] = _DocSinkConfig

    async def write(self, entities):  # pragma: no cover - never run
        raise NotImplementedError


def test_a_registered_plugin_is_describable_with_its_nested_models_once():
    registry = reference.builtin_registry().clone()
    registry.register("sink", "doc_sink", _DocSink)
    target = find_target(registry, "sink", "doc_sink")
    assert target.summary == "A test-only sink."
    docs = describe(target)
    assert [(d.path, d.name) for d in docs] == [("", "_DocSinkConfig"), ("outer", "_Outer"), ("outer.inner", "_Inner")]
    assert docs[1].keys[0].key == "_id"
    assert describe(target, nested=False) == docs[:1]


def test_find_target_names_systems_with_or_without_prefix_and_lists_known_types():
    registry = reference.builtin_registry()
    assert find_target(registry, "system", "rest") == find_target(registry, "system", "system:rest")
    with pytest.raises(LookupError, match="known: dataset, embedded, file"):
        find_target(registry, "source", "nope")
    with pytest.raises(LookupError, match="known: pipe, pump, source"):
        find_target(registry, "widget", None)


# -- the command --------------------------------------------------------------------------------

def test_describe_without_arguments_lists_every_kind():
    result = run()
    assert result.exit_code == 0, result.output
    for kind, name in (("pipe", ""), ("pump", ""), ("source", "file"), ("transform", "python"),
                       ("sink", "dataset"), ("system", "system:rest")):
        assert f"│ {kind} " in result.output and name in result.output
    assert "Streams records of one local file as entities." in result.output


def test_describe_source_file_shows_primary_key_with_default_and_meaning():
    result = run("source", "file")
    assert result.exit_code == 0, result.output
    line = row(result.output, "primary_key")
    assert "string | list of string | null" in line
    assert "│ null " in line
    assert "field" in line
    assert row(result.output, "path").split("│")[3].strip() == "required"


def test_describe_markdown_equals_the_readme_format():
    result = run("source", "file", "--markdown")
    assert result.exit_code == 0, result.output
    registry = reference.builtin_registry()
    assert result.output == to_markdown(describe(find_target(registry, "source", "file")))
    assert result.output.startswith("| key | type | default | meaning |\n|---|---|---|---|\n")
    assert ("| `primary_key` | `string \\| list of string \\| null` | `null` | field name, or list of field names "
            "joined with `:`, that gives `_id`. |") in result.output


@pytest.mark.parametrize(("args", "message"), [
    (("source", "nope"), "unknown source type 'nope'; known: dataset, embedded, "),
    (("widget", "x"), "unknown kind 'widget'; known: pipe, pump, source, transform, sink, system"),
    (("pipe", "x"), "pipe takes no TYPE"),
])
def test_describe_unknown_kind_or_type_is_a_usage_error(args, message):
    result = run(*args)
    assert result.exit_code == 2
    assert message in result.output
    if args[0] == "source":
        assert "file, file_listing, files, http_endpoint, merge, rest" in result.output


def test_describe_source_rest_shows_the_nested_paging_model():
    result = run("source", "rest")
    assert result.exit_code == 0, result.output
    assert "paging (PagingConfig)" in result.output
    assert row(result.output, "on_max_pages")
    markdown = run("source", "rest", "--markdown").output
    assert "`paging` (PagingConfig): How the pages of one operation are requested" in markdown
    assert "PagingConfig" not in run("source", "rest", "--markdown", "--no-nested").output.split("|---|")[0]


def test_describe_system_accepts_the_short_name_and_shows_id():
    result = run("system", "rest")
    assert result.exit_code == 0, result.output
    assert row(result.output, "_id")
    assert "auth (OAuth2Auth)" in result.output
    assert run("system", "system:rest").output == result.output


def test_describe_kind_alone_lists_its_types():
    result = run("sink")
    assert result.exit_code == 0, result.output
    assert "dataset" in result.output and "null" in result.output
    assert "│ source " not in result.output
