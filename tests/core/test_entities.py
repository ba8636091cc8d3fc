"""Entities: reserved fields, canonical JSON, content hash (DESIGN.md "Entities and datasets")."""

import pytest

from runtime.entities import PreparedBatch, canonical_json, content_hash, is_deleted, prepare, strip_reserved
from runtime.errors import EntityError


def test_hash_ignores_key_order_and_generated_fields():
    a = {"_id": "1", "name": "x", "n": {"b": 1, "a": 2}}
    b = {"n": {"a": 2, "b": 1}, "name": "x", "_id": "1", "_updated": 7, "_ts": 1, "_hash": "zz"}
    assert canonical_json(a) == canonical_json(b)
    assert content_hash(a) == content_hash(b)
    assert len(content_hash(a)) == 32


def test_hash_covers_id_deleted_and_data():
    base = {"_id": "1", "v": 1}
    assert content_hash(base) != content_hash({"_id": "2", "v": 1})
    assert content_hash(base) != content_hash({"_id": "1", "v": 2})
    assert content_hash(base) != content_hash({"_id": "1", "v": 1, "_deleted": True})


def test_only_true_means_deleted():
    assert content_hash({"_id": "1", "_deleted": False}) == content_hash({"_id": "1"})
    assert content_hash({"_id": "1", "_deleted": "yes"}) == content_hash({"_id": "1"})


def test_canonical_json_is_sorted_compact_utf8():
    assert canonical_json({"_id": "é", "b": 1, "a": [1, 2]}) == '{"_id":"é","a":[1,2],"b":1}'.encode()


def test_strip_reserved_keeps_nested_underscores_and_does_not_copy_clean_entities():
    clean = {"_id": "1", "x": {"_nested": 1}}
    assert strip_reserved(clean) is clean
    assert strip_reserved({"_id": "1", "_foo": 1, "x": 2}) == {"_id": "1", "x": 2}


@pytest.mark.parametrize("entity", [
    {"_id": "a", "x": 1},
    {"_id": "a", "_ts": 5, "_updated": 3, "x": 1},
    {"_id": "a", "_deleted": False},
    {"_id": "a", "_deleted": True, "x": None},
    {"_id": "_a", "_b": 1},
    {"_id": "a", "s": 'quote"_underscore'},
    {"_id": "a", "n": {"_k": [{"_j": 1}]}},
    {"_id": "a", "A": 1, "Z": 2, "_x": object()},  # not JSON, but dropped before hashing
    {"B": "upper keys sort before _id", "_id": "é"},
])
def test_prepare_gives_the_canonical_json_and_hash_of_each_entity(entity):
    batch = prepare([entity])
    assert batch.heads[0] + b"}" == canonical_json(entity)
    assert batch.hashes[0] == content_hash(entity) and batch.deleted[0] == is_deleted(entity)


@pytest.mark.parametrize("entity", [{"x": 1}, {"_id": 7}, {"_id": None, "_x": 1}, {"_idx": "a"}])
def test_prepare_refuses_an_entity_without_a_string_id(entity):
    with pytest.raises(EntityError, match="no string _id"):
        prepare([{"_id": "ok"}, entity])


def test_if_hash_is_a_condition_of_the_write_not_part_of_the_entity():
    plain, guarded = {"_id": "a", "v": 1}, {"_id": "a", "v": 1, "_if_hash": "f" * 32}
    one, two = prepare([plain]), prepare([guarded, plain])
    assert one.expected is None and two.expected == ["f" * 32, None]
    assert two.heads[0] == one.heads[0] and two.hashes[0] == content_hash(plain)
    both = PreparedBatch.concat([one, two, one])
    assert both.expected == [None, "f" * 32, None, None] and len(both) == 4
    assert PreparedBatch.concat([one, one]).expected is None
