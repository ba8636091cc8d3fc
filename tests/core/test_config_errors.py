"""Invalid config is refused before anything runs, with file, _id, key path and reason."""

from __future__ import annotations

import pytest

from runtime import ConfigError, Secrets, load_config
from runtime.plugins import default_registry

GOOD_SOURCE = {"type": "embedded", "entities": [{"_id": "a"}]}


def pipe(**overrides):
    return {"_id": "p", "type": "pipe", "source": GOOD_SOURCE, **overrides}


def rest_system(**overrides):
    return {"_id": "api", "type": "system:rest", "base_url": "http://127.0.0.1:9/",
            "operations": {"list-items": {"url": "items"}}, **overrides}


def rest_source(**overrides):
    return {"type": "rest", "system": "api", "operation": "list-items", **overrides}


CASES = [
    # (name, objects, expected (key, reason fragment))
    ("unknown source type", [pipe(source={"type": "nope"})], ("source.type", "unknown source type 'nope'")),
    ("unknown sink type", [pipe(sink={"type": "teleport"})], ("sink.type", "unknown sink type 'teleport'")),
    (
        "unknown transform type",
        [pipe(transform=[{"type": "python", "function": "json:dumps"}, {"type": "x"}])],
        ("transform[1].type", "unknown transform type 'x'"),
    ),
    ("missing source", [{"_id": "p", "type": "pipe"}], ("source", "Field required")),
    ("unknown pipe key", [pipe(sourse={"type": "embedded"})], ("sourse", "unknown key")),
    ("unknown component key", [pipe(source={**GOOD_SOURCE, "entites": []})], ("source.entites", "unknown key")),
    ("bad object type", [{"_id": "p", "type": "pipeline"}], ("type", "must be 'pipe' or 'system:<kind>'")),
    ("missing _id", [{"type": "pipe", "source": GOOD_SOURCE}], ("_id", "missing or not a non-empty string")),
    ("slash in _id", [pipe(_id="a/b")], ("_id", "must not contain '/'")),
    ("batch_size zero", [pipe(batch_size=0)], ("batch_size", "greater than or equal to 1")),
    ("pump mode", [pipe(pump={"mode": "sometimes"})], ("pump.mode", "'scheduled', 'manual' or 'off'")),
    (
        "bad cron",
        [pipe(pump={"cron_expression": "every day"})],
        ("pump.cron_expression", "not a valid cron expression"),
    ),
    (
        "cron that never fires",
        [pipe(pump={"rescan_cron_expression": "0 0 30 2 *"})],
        ("pump.rescan_cron_expression", "cron expression '0 0 30 2 *' never fires"),
    ),
    ("negative interval", [pipe(pump={"schedule_interval": -5})], ("pump.schedule_interval", "greater than 0")),
    ("partial rescan half set", [pipe(pump={"partial_rescan_delta": 60})], ("pump", "go together")),
    (
        "keep_versions zero",
        [pipe(compaction={"keep_versions": 0})],
        ("compaction.keep_versions", "greater than or equal to 1"),
    ),
    (
        "embedded without _id",
        [pipe(source={"type": "embedded", "entities": [{"x": 1}]})],
        ("source.entities", "have no string _id"),
    ),
    (
        "file source both id options",
        [pipe(source={"type": "file", "path": "x.csv", "primary_key": "a", "id_expression": "{{ a }}"})],
        ("source", "set primary_key or id_expression, not both"),
    ),
    ("file format unknown", [pipe(source={"type": "file", "path": "x.bin"})], ("source", "cannot tell the format")),
    (
        "file source unknown encoding",
        [pipe(source={"type": "file", "path": "x.csv", "encoding": "utf-99"})],
        ("source.encoding", "unknown text encoding 'utf-99'"),
    ),
    (
        "id_expression syntax",
        [pipe(source={"type": "file", "path": "x.csv", "id_expression": "{{ a "})],
        ("source.id_expression", "template syntax error"),
    ),
    (
        "python function missing",
        [pipe(transform={"type": "python", "function": "json:nothing_here"})],
        ("transform.function", "has no function 'nothing_here'"),
    ),
    (
        "python module missing",
        [pipe(transform={"type": "python", "function": "no_such_mod:f"})],
        ("transform.function", "cannot import module 'no_such_mod'"),
    ),
    (
        "breaker negative",
        [pipe(sink={"type": "dataset", "circuit_breaker_threshold_count": -1})],
        ("sink.circuit_breaker_threshold_count", "greater than or equal to 0"),
    ),
    (
        "unknown system referenced",
        [pipe(source={"type": "dataset", "dataset": "x", "system": "ghost"})],
        ("source.system", "no system with _id 'ghost'"),
    ),
    ("unknown system type", [{"_id": "s", "type": "system:warp"}], ("type", "unknown system type 'system:warp'")),
    (
        "two writers of one dataset",
        [pipe(), pipe(_id="q", sink={"type": "dataset", "dataset": "p"})],
        ("sink.dataset", "already written by pipe 'p'"),
    ),
    (
        "missing env var",
        [pipe(source={"type": "dataset", "dataset": "$ENV(SLUICE_TEST_UNSET_VAR)"})],
        ("source.dataset", "$ENV(SLUICE_TEST_UNSET_VAR) is not set"),
    ),
    (
        "secret where not allowed",
        [pipe(source={"type": "dataset", "dataset": "$SECRET(token)"})],
        ("source.dataset", "$SECRET(...) is not allowed here"),
    ),
    (
        "secret inside embedded entities",
        [pipe(source={"type": "embedded", "entities": [{"_id": "a", "key": "$SECRET(token)"}]})],
        ("source.entities[0].key", "$SECRET(...) is not allowed here"),
    ),
    (
        "secret inside rest properties",
        [rest_system(), pipe(source=rest_source(properties={"k": ["$SECRET(token)"]}))],
        ("source.properties.k[0]", "$SECRET(...) is not allowed here"),
    ),
    (
        "secret as a rest initial since",
        [rest_system(), pipe(source=rest_source(initial_since_value={"from": "$SECRET(token)"}))],
        ("source.initial_since_value.from", "$SECRET(...) is not allowed here"),
    ),
    (
        "plain bearer token",
        [rest_system(auth={"type": "bearer", "token": "hunter2"})],
        ("auth.token", "use $SECRET(name)"),
    ),
    (
        "plain basic password",
        [rest_system(auth={"type": "basic", "username": "u", "password": "hunter2"})],
        ("auth.password", "use $SECRET(name)"),
    ),
    (
        "plain receiver token",
        [pipe(source={"type": "http_endpoint", "token": "hunter2"})],
        ("source.token", "use $SECRET(name)"),
    ),
    (
        "unknown rest operation in a source",
        [rest_system(), pipe(source=rest_source(operation="list-itmes"))],
        ("source.operation", "system 'api' has no operation 'list-itmes'; known: list-items"),
    ),
    (
        "unknown rest operation in a transform",
        [rest_system(), pipe(transform={"type": "rest", "system": "api", "operation": "get-item"})],
        ("transform.operation", "system 'api' has no operation 'get-item'; known: list-items"),
    ),
    (
        "rest payload template syntax",
        [rest_system(), pipe(source=rest_source(payload={"q": ["{{ since "]}))],
        ("source.payload", "template syntax error"),
    ),
    (
        "rest operation payload template syntax",
        [rest_system(operations={"search": {"url": "s", "method": "POST", "payload": "{% if %}"}})],
        ("operations.search.payload", "template syntax error"),
    ),
    ("rest base_url not absolute", [rest_system(base_url="api.example.com/v1")], ("base_url", "absolute http")),
    (
        "dead letters into the pipe's own dataset",
        [pipe(pump={"dead_letter_dataset": "p"})],
        ("pump.dead_letter_dataset", "dataset 'p' is written by pipe 'p'"),
    ),
    (
        "dead letters into another pipe's sink",
        [pipe(pump={"dead_letter_dataset": "other"}), pipe(_id="q", sink={"type": "dataset", "dataset": "other"})],
        ("pump.dead_letter_dataset", "dataset 'other' is written by pipe 'q'"),
    ),
    (
        "dead letters into a receiver's dataset",
        [pipe(pump={"dead_letter_dataset": "inbox"}), pipe(_id="inbox", source={"type": "http_endpoint"})],
        ("pump.dead_letter_dataset", "dataset 'inbox' is written by pipe 'inbox'"),
    ),
]


@pytest.mark.parametrize(("name", "objects", "expected"), CASES, ids=[c[0] for c in CASES])
def test_bad_config_is_refused_with_its_location(name, objects, expected, write_config, monkeypatch):
    monkeypatch.delenv("SLUICE_TEST_UNSET_VAR", raising=False)
    root = write_config(objects)
    with pytest.raises(ConfigError) as info:
        load_config(root, default_registry(), Secrets(environ={"token": "s3cr3t-value"}))
    key, reason = expected
    matching = [p for p in info.value.problems if p.key == key and reason in p.reason]
    assert matching, f"{name}: {[str(p) for p in info.value.problems]}"
    problem = matching[0]
    assert problem.file.endswith("pipes.yaml")
    assert "s3cr3t-value" not in str(info.value)


def test_all_problems_are_listed_at_once(write_config):
    root = write_config([pipe(source={"type": "nope"}), pipe(_id="q", batch_size=0), {"_id": "r", "type": "?"}])
    with pytest.raises(ConfigError) as info:
        load_config(root, default_registry())
    assert {p.pipe for p in info.value.problems} == {"p", "q", "r"}
    text = str(info.value)
    assert "3 problems" in text and "pipes.yaml: q: batch_size:" in text and text.endswith("`sluice check` again.")


def test_every_problem_of_one_pipe_is_listed(write_config):
    # the README's example: the pump's problem used to hide the source's
    root = write_config({"_id": "orders", "type": "pipe", "source": {"type": "rset"},
                         "pump": {"cron_expression": "daily"}, "transform": {"type": "x"}})
    with pytest.raises(ConfigError) as info:
        load_config(root, default_registry())
    assert {(p.pipe, p.key) for p in info.value.problems} == {
        ("orders", "source.type"), ("orders", "pump.cron_expression"), ("orders", "transform.type")}


def test_union_errors_name_the_key_once(write_config):
    # pydantic reports each member of a union (``transform``: object or list; ``username``:
    # string or secret); the problem names the config's key, once
    root = write_config([rest_system(auth={"type": "basic", "username": 5, "password": "$SECRET(token)"}),
                         pipe(transform=[{"type": "python", "function": "json:dumps"}, 5])])
    with pytest.raises(ConfigError) as info:
        load_config(root, default_registry(), Secrets(environ={"token": "t"}))
    assert [(p.pipe, p.key, p.reason) for p in info.value.problems] == [
        ("api", "auth.username", "Input should be a valid string, or Value error, expected a string or $SECRET(name)"),
        ("p", "transform[1]", "Input should be a valid dictionary"),
    ]


def test_a_rest_component_needs_a_rest_system(write_config):
    from runtime.components import System

    class Queue(System):
        """A system of another kind (registered for this test only)."""

    registry = default_registry().clone()
    registry.register("system", "system:queue", Queue)
    root = write_config([{"_id": "q", "type": "system:queue"}, pipe(source={"type": "rest", "system": "q"})])
    with pytest.raises(ConfigError) as info:
        load_config(root, registry)
    assert [(p.key, p.reason) for p in info.value.problems] == [
        ("source.system", "system 'q' is a system:queue; the rest source needs a system:rest")]


def test_a_pipe_naming_a_system_with_problems_is_not_told_the_system_is_missing(write_config):
    root = write_config([rest_system(auth={"type": "bearer", "token": "hunter2"}), pipe(source=rest_source())])
    with pytest.raises(ConfigError) as info:
        load_config(root, default_registry())
    assert [(p.pipe, p.key) for p in info.value.problems] == [("api", "auth.token")]
    assert "hunter2" not in str(info.value)


def test_syntax_errors_name_the_file(tmp_path):
    root = tmp_path / "cfg"
    root.mkdir()
    (root / "a.json").write_text('{"_id": "p", ')
    (root / "b.yaml").write_text("_id: [unclosed")
    with pytest.raises(ConfigError) as info:
        load_config(root, default_registry())
    reasons = {p.file.rsplit("/", 1)[-1]: p.reason for p in info.value.problems}
    assert reasons["a.json"].startswith("not valid JSON") and reasons["b.yaml"].startswith("not valid YAML")


def test_duplicate_ids_across_files(tmp_path):
    root = tmp_path / "cfg"
    (root / "pipes").mkdir(parents=True)
    (root / "one.yaml").write_text("_id: p\ntype: pipe\nsource: {type: embedded, entities: []}\n")
    (root / "pipes" / "two.json").write_text(
        '[{"_id": "p", "type": "pipe", "source": {"type": "embedded", "entities": []}}]'
    )
    with pytest.raises(ConfigError, match=r"two\.json: p: _id: duplicate _id, also defined in .*one\.yaml"):
        load_config(root, default_registry())


def test_secret_accepted_by_a_secret_key_and_never_shown(write_config):
    from pydantic import BaseModel

    from runtime import Secret
    from runtime.config.secrets import substitute

    class Auth(BaseModel):
        token: Secret

    problems: list = []
    value = substitute(
        {"token": "Bearer $SECRET(tok)"}, Secrets(environ={"tok": "abc"}), lambda k, r: problems.append((k, r))
    )
    auth = Auth.model_validate(value)
    assert auth.token.reveal() == "Bearer abc" and "abc" not in repr(auth) and str(auth.token) == "***"
    assert auth.model_dump() == {"token": "***"} and problems == []


def test_secrets_file_is_used_before_the_environment(tmp_path):
    f = tmp_path / "secrets.json"
    f.write_text('{"tok": "from-file"}')
    assert Secrets(f, environ={"tok": "from-env"}).secret("tok") == "from-file"
    (tmp_path / "bad.json").write_text("[1]")
    with pytest.raises(ValueError, match=r"bad\.json: must hold one object"):
        Secrets(tmp_path / "bad.json")
