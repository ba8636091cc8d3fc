"""DTL hops over real datasets in a real store (SQLite and PostgreSQL), and the store's hop indexes."""

import decimal
import sqlite3

import orjson
import pytest

from runtime.dtl.hops import HopResolver
from runtime.dtl.joinkeys import join_keys
from runtime.dtl.rules import RuleSet
from runtime.errors import DtlCompileError, FatalError
from runtime.store import _sqlite_indexes as ixsql
from tests.core.helpers import is_postgres, pg_rows

CUSTOMERS = [
    {"_id": "c1", "name": "Ann", "address_id": "a1", "tags": ["x", "y"]},
    {"_id": "c2", "name": "Bob", "address_id": "a2", "tags": ["y"]},
    {"_id": "c3", "name": "Cid", "address_id": None, "tags": []},
    {"_id": "c4", "name": "Dan", "address_id": ["a2", "a3"], "tags": ["z"]},
]
ADDRESSES = [
    {"_id": "a1", "street": "Main 1", "customer_id": "c1", "country": 1, "labels": ["x"]},
    {"_id": "a2", "street": "Side 2", "customer_id": "c1", "country": 2, "labels": ["y", "z"]},
    {"_id": "a3", "street": "Back 3", "customer_id": "c2", "country": 1.0, "labels": []},
    {"_id": "a4", "street": "Gone 4", "customer_id": "c2", "country": "1", "labels": ["x"]},
]


def rules(hop):
    return RuleSet({"default": [["add", "found", hop]]})


def found(out):
    return [[e["_id"] for e in o[0]["found"]] for o in out]


@pytest.fixture
async def stocked(store):
    await store.write_batch("customers", CUSTOMERS, pipe="p", checkpoint=None)
    await store.write_batch("addresses", ADDRESSES, pipe="p", checkpoint=None)
    return store


async def run(store, hop, entities=None):
    resolver = HopResolver(store)
    return await resolver.apply(rules(hop), entities or CUSTOMERS), resolver


async def index_rows(store, dataset):
    if is_postgres(store):
        rows = await pg_rows(store, "SELECT h.path, h.key, h.id, d.ds FROM hix h JOIN datasets d ON d.ds = h.ds "
                             "WHERE d.name = $1", dataset)
        key = (await pg_rows(store, "SELECT ds FROM datasets WHERE name = $1", dataset))[0][0]
        return sorted((p, k.decode(), i.decode()) for p, k, i, _ in rows), key
    with sqlite3.connect(store.path) as c:
        key = c.execute("SELECT ds FROM datasets WHERE name = ?", (dataset,)).fetchone()[0]
        return sorted(c.execute(f"SELECT path, key, id FROM hix_{key}").fetchall()), key


async def rebuilt(store, key, names):
    """The index rows a from-scratch build gives: every latest, non-deleted version."""
    if is_postgres(store):
        bodies = await pg_rows(store, "SELECT l.body FROM latest x JOIN log l ON l.ds = x.ds AND l.off = x.off "
                               "WHERE x.ds = $1 AND NOT x.deleted", key)
        return sorted(r for (b,) in bodies for r in ixsql.rows_of(orjson.loads(b), names))
    with sqlite3.connect(store.path) as c:
        bodies = c.execute(f"SELECT l.body FROM latest_{key} x JOIN log_{key} l ON l.off = x.off "
                           "WHERE x.deleted = 0").fetchall()
    return sorted(r for (b,) in bodies for r in ixsql.rows_of(orjson.loads(b), names))


N1 = ["hops", {"datasets": ["addresses a"], "where": ["eq", "_S.address_id", "a._id"]}]
ONE_N = ["hops", {"datasets": ["addresses a"], "where": ["eq", "a.customer_id", "_S._id"]}]


async def test_n_to_1_join_with_null_and_list_join_values(stocked):
    out, resolver = await run(stocked, N1)
    assert found(out) == [["a1"], ["a2"], [], ["a2", "a3"]]
    assert resolver.queries == 1  # one batched index query for the whole batch


async def test_1_to_n_join_results_ordered_by_id(stocked):
    out, _ = await run(stocked, ONE_N, list(reversed(CUSTOMERS)))
    assert found(out) == [[], [], ["a3", "a4"], ["a1", "a2"]]


async def test_n_to_n_join_overlaps_value_sets(stocked):
    hop = ["hops", {"datasets": ["addresses a"], "where": ["eq", "_S.tags", "a.labels"]}]
    out, _ = await run(stocked, hop)
    assert found(out) == [["a1", "a2", "a4"], ["a2"], [], ["a2"]]


async def test_join_keys_follow_dtl_equality():
    assert join_keys(1) == join_keys(1.0) == join_keys(decimal.Decimal("1.00")) == ["n:1"]
    assert join_keys(0.1) != join_keys(decimal.Decimal("0.1"))  # as DTL: 0.1 as a float is not exactly 0.1
    assert join_keys("1") != join_keys(1) and join_keys(True) != join_keys(1)
    assert join_keys([None, "a", ["a", "b"]]) == ["s:a", "s:b"]


async def test_typed_join_1_joins_1_0_but_not_string(stocked):
    hop = ["hops", {"datasets": ["addresses a"], "where": ["eq", "_S.country", "a.country"]}]
    out, _ = await run(stocked, hop, [{"_id": "x", "country": 1}, {"_id": "y", "country": "1"}])
    assert found(out) == [["a1", "a3"], ["a4"]]


async def test_filters_and_return_alias_and_expression(stocked):
    hop = ["hops", {"datasets": ["addresses a"],
                    "where": [["eq", "a.customer_id", "_S._id"], ["neq", "a.street", "Main 1"]],
                    "return": "a.street"}]
    out, _ = await run(stocked, hop)
    assert [o[0]["found"] for o in out] == [["Side 2"], ["Back 3", "Gone 4"], [], []]


async def test_two_aliases_chained_and_chained_specs(stocked):
    two = ["hops", {"datasets": ["addresses a", "customers c"],
                    "where": [["eq", "_S.address_id", "a._id"], ["eq", "a.customer_id", "c._id"]]}]
    out, resolver = await run(stocked, two)
    assert found(out) == [["c1"], ["c1"], [], ["c1", "c2"]]
    assert resolver.queries == 2  # two join steps: two rounds, one batched query each
    chained = ["hops", {"datasets": ["addresses a"], "where": ["eq", "_S.address_id", "a._id"]},
               {"datasets": ["customers c"], "where": ["eq", "_S.customer_id", "c._id"]}]
    out, _ = await run(stocked, chained)
    assert found(out) == [["c1"], ["c1"], [], ["c1", "c2"]]


async def test_deleted_entity_and_changed_join_key_move_in_the_same_write(stocked):
    await stocked.write_batch("customers", CUSTOMERS, pipe="p", checkpoint=None)
    out, _ = await run(stocked, ONE_N)  # builds the index on addresses.customer_id
    assert found(out)[:2] == [["a1", "a2"], ["a3", "a4"]]
    await stocked.write_batch("addresses", [{"_id": "a2", "customer_id": "c2"},
                                            {"_id": "a4", "_deleted": True, "customer_id": "c2"}],
                              pipe="p", checkpoint=None)
    rows, key = await index_rows(stocked, "addresses")
    assert rows == await rebuilt(stocked, key, ['["customer_id"]'])
    assert ("[\"customer_id\"]", "s:c1", "a2") not in rows and all(r[2] != "a4" for r in rows)
    out, _ = await run(stocked, ONE_N)
    assert found(out)[:2] == [["a1"], ["a2", "a3"]]


async def test_hopped_to_entity_deleted_after_index_built(stocked):
    await run(stocked, N1)
    await stocked.write_batch("addresses", [{"_id": "a1", "_deleted": True}], pipe="p", checkpoint=None)
    rows, key = await index_rows(stocked, "addresses")
    assert rows == await rebuilt(stocked, key, ['["_id"]']) and all(r[2] != "a1" for r in rows)
    out, _ = await run(stocked, N1)
    assert found(out) == [[], ["a2"], [], ["a2", "a3"]]


async def test_index_follows_breaker_rollback(stocked):
    await run(stocked, ONE_N)
    await stocked.write_batch("addresses", [{"_id": "a1", "customer_id": "c9"}, {"_id": "a3", "customer_id": "c9"}],
                              pipe="p", checkpoint=None, change_limit=1)
    # the breaker commits a1's change (the limit) and holds a3's: hops see committed versions only
    out, _ = await run(stocked, ONE_N, [{"_id": "c9"}])
    assert found(out) == [["a1"]]
    await stocked.rollback_breaker("addresses")  # a3's held version goes: back under c2
    rows, key = await index_rows(stocked, "addresses")
    assert rows == await rebuilt(stocked, key, ['["customer_id"]'])
    out, _ = await run(stocked, ONE_N)
    assert found(out)[:2] == [["a2"], ["a3", "a4"]]


async def test_recursion_with_max_depth(store):
    chain = [{"_id": f"n{i}", "parent": f"n{i + 1}"} for i in range(5)]
    await store.write_batch("nodes", chain, pipe="p", checkpoint=None)
    spec = {"datasets": ["nodes n"], "where": ["eq", "_S.parent", "n._id"], "recurse": True}
    out, _ = await run(store, ["hops", {**spec, "max_depth": 2}], [chain[0]])
    assert found(out) == [["n0", "n1", "n2"]]
    out, _ = await run(store, ["hops", {**spec, "max_depth": None, "exclude_root": True}], [chain[0]])
    assert found(out) == [["n1", "n2", "n3", "n4"]]


async def test_apply_hops_runs_the_rule_on_each_result(stocked):
    rs = RuleSet({"default": [["add", "streets", ["apply-hops", "street", ONE_N[1]]]],
                  "street": [["copy", "street"]]})
    out = await HopResolver(stocked).apply(rs, CUSTOMERS[:2])
    assert [o[0]["streets"] for o in out] == [[{"street": "Main 1"}, {"street": "Side 2"}],
                                              [{"street": "Back 3"}, {"street": "Gone 4"}]]
    assert rs.hop_indexes == {("addresses", ("customer_id",))}


async def test_lookup_uses_the_index_not_a_scan(stocked):
    if is_postgres(stocked):
        pytest.skip("a check of SQLite's query plan; PostgreSQL's planner scans tables this small whatever the index")
    await run(stocked, ONE_N)
    ds_key = (await index_rows(stocked, "addresses"))[1]
    with sqlite3.connect(stocked.path) as c:
        ds = type("D", (), {"key": ds_key, "latest": f"latest_{ds_key}", "log": f"log_{ds_key}"})
        plan = c.execute("EXPLAIN QUERY PLAN " + ixsql.lookup_sql(ds), ('["s:c1"]', '["customer_id"]', 99)).fetchall()
    details = [row[3] for row in plan]
    # the keys are the outer loop, each searched in the index by path and key (not the index by
    # path with the key list scanned per row, which SQLite's planner picks when left to itself)
    assert details[0].startswith("SCAN j VIRTUAL TABLE"), details
    assert "SEARCH h USING PRIMARY KEY (path=? AND key=?)" in details, details
    assert [d for d in details if d.startswith("SCAN")] == [details[0]], details


async def test_tracking_searches_the_recorded_lookups_of_the_changed_ids_only(stocked):
    from runtime.store import _sqlite_tracking as tsql

    if is_postgres(stocked):
        pytest.skip("a check of SQLite's query plan")
    await run(stocked, ONE_N)
    ds_key = (await index_rows(stocked, "addresses"))[1]
    ds = type("D", (), {"key": ds_key, "log": f"log_{ds_key}", "name": "addresses", "indexes": ("x",)})
    sql, args = tsql._matches("p", ds, 0, 99)
    with sqlite3.connect(stocked.path) as c:
        details = [row[3] for row in c.execute("EXPLAIN QUERY PLAN " + sql, args).fetchall()]
    searches = [d for d in details if d.startswith("SEARCH d ")]
    assert searches == ["SEARCH d USING PRIMARY KEY (pipe=? AND ds=? AND path=? AND key=?)"] * 2, details
    assert [d for d in details if d.startswith("SCAN")] == ["SCAN c", "SCAN c"], details


async def test_index_built_once_for_existing_data_and_absent_dataset(stocked):
    assert await stocked.ensure_index("nowhere", ["x"]) is False
    out, _ = await run(stocked, ["hops", {"datasets": ["nowhere n"], "where": ["eq", "_S._id", "n.x"]}])
    assert found(out) == [[], [], [], []]
    assert await stocked.ensure_index("addresses", ["customer_id"]) is True
    assert (await index_rows(stocked, "addresses"))[0] == await rebuilt(stocked, 2, ['["customer_id"]'])


async def test_compile_errors_name_the_position():
    with pytest.raises(DtlCompileError) as err:
        RuleSet({"default": [["add", "x", ["hops", {"datasets": ["addresses a", "customers c"],
                                                     "where": ["eq", "_S.a", "a._id"], "bogus": 1}]]]})
    text = str(err.value)
    assert "rules.default[0][2][1].bogus" in text and "alias 'c' is not joined" in text
    with pytest.raises(DtlCompileError, match=r"default\[0\]\[2\]\[1\]\.where\[0\]\[2\]: the 'a' side"):
        rules(["hops", {"datasets": ["addresses a"], "where": ["eq", "_S.a", ["lower", "a.x"]]}])
    with pytest.raises(DtlCompileError, match="'return' cannot be combined with 'recurse'"):
        rules(["hops", {"datasets": ["n n"], "where": ["eq", "_S.p", "n._id"], "recurse": True, "return": "n"}])


async def test_hops_without_a_resolver_fail_clearly():
    with pytest.raises(FatalError, match="HopResolver"):
        rules(N1).apply({"_id": "c1"})


async def test_write_path_costs_nothing_more_without_a_hop_index(store):
    if is_postgres(store):
        pytest.skip("traces the SQLite writer connection's statements")
    statements: list[str] = []
    await store._w.set_trace_callback(statements.append)  # the writer connection's SQL, as run
    await store.write_batch("plain", [{"_id": "a", "k": 1}], pipe="p", checkpoint=None)
    await store.write_batch("plain", [{"_id": "a", "k": 2}], pipe="p", checkpoint=None)
    assert statements and not any("hix_" in s for s in statements)
    await store.ensure_index("plain", ["k"])
    statements.clear()
    await store.write_batch("plain", [{"_id": "a", "k": 3}], pipe="p", checkpoint=None)
    assert sum("hix_" in s for s in statements) == 2  # the batch's ids leave their keys, then get the new ones


async def test_a_schema_5_store_is_upgraded_to_hold_hop_indexes(tmp_path):
    from runtime.store.sqlite import SqliteStore

    path = tmp_path / "old.db"
    s = SqliteStore(path)
    await s.open()
    await s.write_batch("addresses", ADDRESSES, pipe="p", checkpoint=None)
    await s.close()
    with sqlite3.connect(path) as c:  # back to schema 5: no column for index paths
        c.execute("ALTER TABLE datasets DROP COLUMN indexes")
        c.execute("PRAGMA user_version = 5")
    s = SqliteStore(path)
    await s.open()
    try:
        out = await HopResolver(s).apply(rules(ONE_N), CUSTOMERS[:1])
        assert found(out) == [["a1", "a2"]]
    finally:
        await s.close()


async def test_a_resolver_reused_for_the_next_batch_sees_writes_in_between(stocked):
    resolver, rs = HopResolver(stocked), rules(N1)
    assert found(await resolver.apply(rs, CUSTOMERS[:1])) == [["a1"]]
    await stocked.write_batch("addresses", [{"_id": "a1", "_deleted": True}], pipe="p", checkpoint=None)
    assert found(await resolver.apply(rs, CUSTOMERS[:1])) == [[]]


async def test_trace_logs_what_each_source_entity_joined(stocked):
    from structlog.testing import capture_logs

    hop = ["hops", {"datasets": ["addresses a"], "where": ["eq", "a.customer_id", "_S._id"], "trace": True}]
    with capture_logs() as logs:
        await run(stocked, hop)
    traced = {e["source"]: e["found"] for e in logs if e["event"] == "hops.trace"}
    assert traced == {"c1": ["a1", "a2"], "c2": ["a3", "a4"], "c3": [], "c4": []}
    assert {e["hop"] for e in logs if e["event"] == "hops.trace"} == {"rules.default[0][2][1]"}
    with pytest.raises(DtlCompileError, match=r"trace is true or false"):
        rules(["hops", {"datasets": ["addresses a"], "where": ["eq", "a.customer_id", "_S._id"], "trace": "yes"}])


async def test_sleep_pauses_in_the_worker_thread_and_refuses_a_non_number(stocked):
    import time

    from runtime.errors import EntityError

    slow = RuleSet({"default": [["copy", "_id"], ["sleep!", 0.05],
                                ["add", "n", ["hops", {"datasets": ["addresses a"],
                                                       "where": ["eq", "a.customer_id", "_S._id"]}]]]})
    t0 = time.perf_counter()
    out = await HopResolver(stocked).apply(slow, CUSTOMERS[:2])
    assert time.perf_counter() - t0 >= 0.1 and [len(o[0]["n"]) for o in out] == [2, 2]
    with pytest.raises(EntityError, match=r"sleep! takes a number of seconds"):
        RuleSet({"default": [["sleep!", "_S.name"]]}).apply({"_id": "x", "name": "soon"})


@pytest.mark.parametrize("value", ["nul\x00inside", 'quo"te', "ünï 🚰", "line\u2028sep"])
async def test_awkward_join_values_are_indexed_looked_up_and_tracked(store, value):
    """Index rows and recorded look-ups go to SQLite in one ``json_each`` statement, or row by row
    when a text holds NUL (SQLite's JSON functions cut it there): both ways, exactly."""
    await store.write_batch("addresses", [{"_id": f"a {value}", "customer_id": value},
                                          {"_id": "a prefix", "customer_id": value.split("\x00")[0]}],
                            pipe="p", checkpoint=None)
    resolver = HopResolver(store, record=True)
    out = await resolver.apply(rules(ONE_N), [{"_id": value}])
    assert found(out) == ([[f"a {value}"]] if "\x00" in value else [sorted(["a prefix", f"a {value}"])])
    await store.record_dependencies("p", resolver.dependencies)
    mark = (await store.dataset_info("addresses")).committed
    await store.write_batch("addresses", [{"_id": f"a {value}", "customer_id": "elsewhere"}], pipe="p",
                            checkpoint=None)
    assert await store.tracked_sources("p", "addresses", mark, mark + 1, 10) == [value]
    again = await HopResolver(store).apply(rules(ONE_N), [{"_id": value}])
    assert found(again) == ([[]] if "\x00" in value else [["a prefix"]])


async def test_transit_values_of_hopped_to_entities_are_decoded(store):
    """Only bodies holding a transit string are decoded (a search for ``"~`` first): both kinds
    come back as DTL values."""
    from runtime.dtl import values

    await store.write_batch("addresses", [
        {"_id": "a1", "customer_id": "c1", "since": "~t2024-01-02T03:04:05.123456789Z", "tags": [{"n": "~f1.50"}]},
        {"_id": "a2", "customer_id": "c1", "since": "plain ~ text"},
    ], pipe="p", checkpoint=None)
    out, _ = await run(store, ONE_N, [{"_id": "c1"}])
    a1, a2 = out[0][0]["found"]
    assert isinstance(a1["since"], values.Datetime) and a1["since"].to_transit().endswith("05.123456789Z")
    assert a1["tags"][0]["n"] == decimal.Decimal("1.50")
    assert a2["since"] == "plain ~ text"


async def test_an_index_built_over_existing_versions_equals_the_one_kept_by_writes(store):
    """The build indexes plain texts in SQL and every other value in Python: over values of
    every kind, the rows equal those :func:`rows_of` gives (what the write path keeps)."""
    awkward = ["plain", "", "~~escaped", "~zunknown tag", "has\x00nul", 'quo"te', "ünï", 1, 1.0, 2.5, True, None,
               ["x", ["y", 3]], [], {"k": "v"}, "~t2024-01-02T03:04:05Z", "~f1.50"]
    entities = [{"_id": f"e{i:02}", "v": v, "w": {"x": v}, "ünï": v} for i, v in enumerate(awkward)]
    entities += [{"_id": "no-v"}, {"_id": "gone", "v": "plain", "_deleted": True}]
    await store.write_batch("awkward", entities, pipe="p", checkpoint=None)
    paths = [["v"], ["w", "x"], ["ünï"]]
    for path in paths:
        assert await store.ensure_index("awkward", path) is True
    rows, key = await index_rows(store, "awkward")
    assert rows == await rebuilt(store, key, [orjson.dumps(p).decode() for p in paths])
    assert ('["v"]', "s:plain", "e00") in rows and ('["v"]', "n:1", "e08") in rows
