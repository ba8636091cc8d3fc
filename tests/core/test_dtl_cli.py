"""`sluice dtl`: an expression or a rule set against an entity given as JSON, a file, or read from
a dataset of a real store; compile errors print every position; bad input exits 2."""

from __future__ import annotations

import anyio
import orjson
from click.testing import CliRunner, Result

from runtime import Runtime
from runtime.cli.main import cli


def sluice(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_an_expression_against_an_entity_prints_json() -> None:
    result = sluice("dtl", '["concat", "_S.a", "-", ["upper", "_S.b"]]', "--entity", '{"a": "x", "b": "y"}')
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.stdout) == "x-Y"


def test_a_bare_path_and_typed_values_print_as_transit() -> None:
    result = sluice("dtl", "_S.when", "--entity", '{"when": "~t2020-01-02T00:00:00Z"}')
    assert orjson.loads(result.stdout) == "~t2020-01-02T00:00:00Z"


def test_rules_from_a_file_print_the_output_entities(tmp_path) -> None:
    rules = tmp_path / "rules.json"
    rules.write_text('{"default": [["copy", "_id"], ["create", {"_id": "extra"}], ["add", "n", 1]]}')
    entity = tmp_path / "entity.json"
    entity.write_text('{"_id": "a", "x": 1}')
    result = sluice("dtl", "--rules", str(rules), "--entity", str(entity))
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.stdout) == [{"_id": "a", "n": 1}, {"_id": "extra"}]


def test_compile_errors_print_every_position_and_exit_2() -> None:
    result = sluice("dtl", '["concat", ["concatt", "_S.a"], ["lowr", "_S.b"]]')
    assert result.exit_code == 2
    assert "expression[1]: unknown function 'concatt' (did you mean 'concat'?)" in result.stderr
    assert "expression[2]: unknown function 'lowr'" in result.stderr


def test_bad_input_exits_2_naming_it() -> None:
    cases = [(["_S.a", "--entity", "{bad"], "Invalid value for --entity: not JSON"),
             (["--rules", "[1, 2"], "Invalid value for EXPR: not JSON"),
             (["_S.a", "--entity", "{}", "--dataset", "d", "--id", "a"], "not both"),
             (["_S.a", "--dataset", "d"], "--dataset and --id go together")]
    for args, message in cases:
        result = sluice("dtl", *args)
        assert result.exit_code == 2 and message in result.output, (args, result.output)


def test_fail_exits_1_naming_the_entity() -> None:
    result = sluice("dtl", "--rules", '{"default": [["fail!", "no"]]}', "--entity", '{"_id": "a"}')
    assert result.exit_code == 1 and "'a'" in result.output and "no" in result.output


def test_the_entity_is_read_from_a_dataset(tmp_path, write_config) -> None:
    cfg = write_config([{"_id": "people", "type": "pipe",
                         "source": {"type": "embedded", "entities": [{"_id": "p1", "name": "Ada"}]}}])
    state = tmp_path / "state"

    async def fill() -> None:
        async with Runtime(cfg, data_dir=state) as rt:
            await rt.run_pipe("people")
    anyio.run(fill)
    result = sluice("dtl", '["upper", "_S.name"]', "--dataset", "people", "--id", "p1",
                    "--data-dir", str(state))
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.stdout) == "ADA"
    missing = sluice("dtl", "_S.name", "--dataset", "people", "--id", "nobody", "--data-dir", str(state))
    assert missing.exit_code == 2 and "no entity 'nobody' in dataset 'people'" in missing.output
