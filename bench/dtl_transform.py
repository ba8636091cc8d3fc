"""DTL transform benchmark (issue 10 bench (a)): a 10-rule DTL transform over 1,000,000 entities.

Usage::

    .venv/bin/python bench/dtl_transform.py [--entities 1000000] [--batch 1000]

The transform alone (no source, no sink, no store): the ``dtl`` component's :meth:`transform`
(what a pipe's transform actor calls, worker thread included) over batches of ``--batch``
generated entities, against a hand-written Python function doing the same ten steps on the same
batches (also in a worker thread, as the ``python`` transform runs one), the two interleaved batch
by batch. Both outputs are compared on the first batch. Prints entities per second of each and the
ratio DTL / Python (target >= 0.5), by wall-clock (the target's) and by CPU time (steadier on a
shared machine).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import anyio

from connectors.dtl import DtlTransform, DtlTransformConfig
from runtime.components import ComponentContext, RunInfo

TARGET = 0.5

RULES: dict[str, Any] = {"default": [
    ["copy", "_id"],
    ["filter", ["neq", "_S._deleted", True]],
    ["add", "name", ["upper", "_S.name"]],
    ["add", "email", ["lower", ["concat", "_S.first", ".", "_S.last", "@example.org"]]],
    ["add", "total", ["+", "_S.price", "_S.tax"]],
    ["add", "expensive", ["gt", "_S.price", 500]],
    ["add-if", "note", "_S.note"],
    ["rename", "cat", "category"],
    ["add", "tags", ["sorted", "_S.tags"]],
    ["add", "kind", ["case-eq", "_S.kind", 1, "small", 2, "large", "other"]],
]}


def by_hand(entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same ten steps as :data:`RULES`, written in Python."""
    out = []
    for e in entities:
        t: dict[str, Any] = {"_id": e["_id"]}
        if e.get("_deleted") is True:
            t["_deleted"] = True
            out.append(t)
            continue
        t["name"] = e["name"].upper()
        t["email"] = f"{e['first']}.{e['last']}@example.org".lower()
        t["total"] = e["price"] + e["tax"]
        t["expensive"] = e["price"] > 500
        if e.get("note") is not None:
            t["note"] = e["note"]
        if "cat" in e:
            t["category"] = e["cat"]
        t["tags"] = sorted(e["tags"])
        t["kind"] = {1: "small", 2: "large"}.get(e["kind"], "other")
        out.append(t)
    return out


def batch(start: int, n: int) -> list[dict[str, Any]]:
    return [{"_id": f"e{i}", "name": f"name {i}", "first": "Ada", "last": f"L{i % 97}",
             "price": i % 1000, "tax": 7, "note": None if i % 3 else "n", "cat": "c",
             "tags": ["b", "a", "c"], "kind": i % 3, **({"_deleted": True} if i % 50 == 0 else {})}
            for i in range(start, start + n)]


async def measure(entities: int, size: int) -> dict[str, float]:
    """Both sides over the same batches, interleaved batch by batch (which side goes first
    alternating), so that the machine's load changes weigh on both alike; wall-clock and CPU
    (this process, worker threads included) seconds of each side."""
    context = ComponentContext("bench", None, RunInfo("bench", True, None, size))  # type: ignore[arg-type]
    dtl = DtlTransform(DtlTransformConfig(type="dtl", rules=RULES), context)
    batches = [batch(i, size) for i in range(0, min(entities, 100 * size), size)]
    first = batches[0]
    assert await dtl.transform(first) == by_hand(first), "DTL and Python outputs differ"
    rounds = max(1, entities // (len(batches) * size))
    spent = {"dtl_s": 0.0, "python_s": 0.0, "dtl_cpu_s": 0.0, "python_cpu_s": 0.0}

    async def timed(side: str, b: list[dict[str, Any]]) -> None:
        w, c = time.perf_counter(), time.process_time()
        if side == "dtl":
            await dtl.transform(b)
        else:
            await anyio.to_thread.run_sync(by_hand, b)
        spent[f"{side}_s"] += time.perf_counter() - w
        spent[f"{side}_cpu_s"] += time.process_time() - c

    for r in range(rounds):
        for i, b in enumerate(batches):
            for side in ("dtl", "python") if (r + i) % 2 == 0 else ("python", "dtl"):
                await timed(side, b)
    return {"entities": rounds * len(batches) * size, **spent}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    r = asyncio.run(measure(args.entities, args.batch))
    n = r["entities"]
    dtl, python = n / r["dtl_s"], n / r["python_s"]
    ratio, cpu_ratio = dtl / python, r["python_cpu_s"] / r["dtl_cpu_s"]
    print(f"entities: {n:,} in batches of {args.batch} (10 DTL rules, transform alone, "
          "the two sides interleaved batch by batch)")
    print(f"dtl transform:   {r['dtl_s']:.2f} s, {dtl:,.0f} entities/s (CPU {r['dtl_cpu_s']:.2f} s)")
    print(f"python function: {r['python_s']:.2f} s, {python:,.0f} entities/s (CPU {r['python_cpu_s']:.2f} s)")
    print(f"ratio dtl/python: {ratio:.2f} wall-clock, {cpu_ratio:.2f} CPU "
          f"(target >= {TARGET}: {'met' if ratio >= TARGET else 'not met'})")

if __name__ == "__main__":
    main()
