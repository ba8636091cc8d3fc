"""Entities: reserved fields, canonical JSON, content hash (DESIGN.md "Entities and datasets")."""

from runtime.entities import canonical_json, content_hash, strip_reserved


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
