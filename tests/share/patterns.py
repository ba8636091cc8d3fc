"""The share patterns' pipes (seeds 001/002, sesam.md §8), shared by the tests and the example
``config/examples/share-insert-update``: a local dataset ``people`` shared to the target API by
an insert pipe, an update pipe with optimistic locking and a delete pipe, and the collect pipe of
the target establishing origin."""

from __future__ import annotations

from typing import Any

# the insert pipe's own ledger, the share sink dataset: _id = the local _id, $generated_id = the target's id
SENT_TO = {"datasets": ["insert-responses s"], "where": [["eq", "_S._id", "s._id"], ["eq", "s.state", "sent"]],
           "return": "s.$generated_id"}
# the last version collected from the target, via the generated id
COLLECTED = {"datasets": ["insert-responses s", "target-records t"],
             "where": [["eq", "_S._id", "s._id"], ["eq", "s.$generated_id", "t.id"]], "return": "t"}


def share_pipes(dead_letters: bool = True) -> list[dict[str, Any]]:
    """The insert, collect, update and delete pipes (the local dataset ``people`` is the source)."""
    pump = {"dead_letter_dataset": "share-dead", "max_retries_per_entity": 3} if dead_letters else {}
    return [
        {"_id": "insert", "type": "pipe", "source": {"type": "dataset", "dataset": "people"},
         "transform": {"type": "dtl", "rules": {"default": [
             ["copy", "*"], ["add", "ref", "_S._id"],
             # restore / lost ledger: a record collected with this external reference exists already
             ["filter", ["is-empty", ["hops", {"datasets": ["target-records t"],
                                               "where": [["eq", "_S._id", "t.ref"]], "track-dependencies": False}]]]]}},
         "sink": {"type": "rest", "system": "target", "insert_operation": "insert", "lookup_operation": "lookup"},
         "pump": pump},
        {"_id": "target-records", "type": "pipe",
         "source": {"type": "rest", "system": "target", "operation": "list"},
         "transform": {"type": "dtl", "rules": {"default": [
             ["copy", "*"],
             # establish origin: the share sink dataset knows which local entity the record came from
             ["add", "$origin", ["first", ["hops", {
                 "datasets": ["insert-responses s"], "where": [["eq", "_S.id", "s.$generated_id"]],
                 "return": "s.$origin", "track-dependencies": False}]]]]}}},
        {"_id": "update", "type": "pipe", "source": {"type": "dataset", "dataset": "people"},
         "transform": {"type": "dtl", "rules": {"default": [
             ["copy", "*"], ["add", "ref", "_S._id"],
             ["filter", ["neq", "_S._deleted", True]],
             ["add", "id", ["first", ["hops", SENT_TO]]],
             ["add", "$collected", ["first", ["hops", COLLECTED]]]]}},
         "sink": {"type": "rest", "system": "target", "update_operation": "patch",
                  "optimistic_locking": {"operation": "get"}},
         "pump": pump},
        {"_id": "delete", "type": "pipe", "source": {"type": "dataset", "dataset": "people"},
         "transform": {"type": "dtl", "rules": {"default": [
             ["copy", "_id"], ["filter", ["eq", "_S._deleted", True]], ["filter", ["neq", "_S.$replaced", True]],
             ["add", "_deleted", True], ["add", "id", ["first", ["hops", SENT_TO]]]]}},
         "sink": {"type": "rest", "system": "target", "delete_operation": "delete"},
         "pump": pump},
    ]
