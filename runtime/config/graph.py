"""The datasets of a config as a graph: who writes what, who reads what, in which order pipes run.

Checked here (Sesam's rules, and Sluice's own for dead letters):

- one dataset, one writer;
- a ``pump.dead_letter_dataset`` is a dataset of its own: no pipe writes it (else every run would
  write letters into a pipe's dataset and its deletion tracking would tombstone them);
- with ``require_writers`` (``sluice check``): every dataset a pipe reads is written by a pipe of
  the config (a receiver's sink and dead-letter datasets count), else it is almost always a typo
  and the closest written name is suggested;
- pipes that read each other's datasets (a dependency cycle) are a warning, not an error.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from graphlib import CycleError, TopologicalSorter

from runtime.config.models import PipeSpec
from runtime.config.problems import Problems
from runtime.errors import ConfigProblem


@dataclass(frozen=True)
class PipeDatasets:
    """What one pipe object reads and writes, as far as its parts validated.

    Attributes:
        pipe: the pipe ``_id``.
        file: its config file.
        reads: ``(key, dataset)`` per dataset read, e.g. ``("source.dataset", "orders")``.
        writes: datasets its sink writes; None when the sink did not validate (unknown).
        dead_letters: its ``pump.dead_letter_dataset``, or None.
    """

    pipe: str
    file: str
    reads: list[tuple[str, str]]
    writes: list[str] | None
    dead_letters: str | None


def check_datasets(pipes: list[PipeDatasets], problems: Problems, *, require_writers: bool) -> None:
    """Record the problems of the dataset graph (see the module docstring) in ``problems``."""
    writer: dict[str, str] = {}
    for p in pipes:
        for ds in p.writes or []:
            if ds in writer:
                problems.add(p.file, p.pipe, "sink.dataset",
                             f"dataset {ds!r} is already written by pipe {writer[ds]!r}; one dataset, one writer")
            writer.setdefault(ds, p.pipe)
    for p in pipes:
        if p.dead_letters in writer:
            problems.add(
                p.file, p.pipe, "pump.dead_letter_dataset",
                f"dataset {p.dead_letters!r} is written by pipe {writer[p.dead_letters]!r}; dead letters "
                f"need a dataset of their own, e.g. '{p.pipe}-dead-letters'")
    if require_writers and all(p.writes is not None for p in pipes):
        written = set(writer) | {p.dead_letters for p in pipes if p.dead_letters}
        for p in pipes:
            for key, ds in p.reads:
                if ds not in written:
                    problems.add(p.file, p.pipe, key, _unwritten(ds, written))


def _unwritten(dataset: str, written: set[str]) -> str:
    close = difflib.get_close_matches(dataset, sorted(written), n=1)
    hint = f"did you mean {close[0]!r}?" if close else "check the name"
    return f"no pipe of the config writes dataset {dataset!r}; {hint}"


def _graph(pipes: list[PipeSpec]) -> dict[str, set[str]]:
    """Pipe -> the pipes writing what it reads (itself excluded)."""
    writer = {ds: p.id for p in pipes for ds in p.writes}
    return {p.id: {writer[d] for d in p.reads if d in writer and writer[d] != p.id} for p in pipes}


def cycle_warnings(pipes: list[PipeSpec]) -> list[ConfigProblem]:
    """One warning per group of pipes that read each other's datasets, naming one cycle in data
    flow order from its first pipe in file order: ``a -> b -> a`` (b reads what a writes)."""
    graph = _graph(pipes)
    by_id = {p.id: p for p in pipes}
    position = {p.id: i for i, p in enumerate(pipes)}
    warnings = []
    for members in (m for m in _components(graph) if len(m) > 1):
        cycle = _a_cycle({pid: graph[pid] & set(members) for pid in members})
        first = min(range(len(cycle)), key=lambda i: position[cycle[i]])
        cycle = cycle[first:] + cycle[:first]
        named = " -> ".join([*cycle, cycle[0]])
        spec = by_id[cycle[0]]
        warnings.append(ConfigProblem(
            spec.file, spec.id, "",
            f"dependency cycle {named}: these pipes read each other's datasets; `sluice run` "
            "runs them again while one of them has new input"))
    return warnings


def _a_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of a strongly connected ``graph`` (found by graphlib), in data flow order: each
    pipe writes what the next one reads."""
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as exc:
        return list(exc.args[1][:-1])
    return list(graph)  # not reached: a strongly connected group of two or more has a cycle


def in_dependency_order(pipes: list[PipeSpec]) -> dict[str, PipeSpec]:
    """Pipes ordered so a pipe comes after the writers of its inputs. Pipes in a dependency cycle
    are grouped and keep their file order among themselves; the groups are ordered as usual."""
    graph = _graph(pipes)
    position = {p.id: i for i, p in enumerate(pipes)}
    group_of: dict[str, int] = {}
    for n, members in enumerate(_components(graph)):
        for pid in members:
            group_of[pid] = n
    groups: dict[int, set[int]] = {g: set() for g in set(group_of.values())}
    for pid, deps in graph.items():
        groups[group_of[pid]].update(group_of[d] for d in deps if group_of[d] != group_of[pid])
    by_id = {p.id: p for p in pipes}
    ordered: list[str] = []
    for g in TopologicalSorter(groups).static_order():
        ordered.extend(sorted((pid for pid, n in group_of.items() if n == g), key=position.__getitem__))
    return {pid: by_id[pid] for pid in ordered}


def _components(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of ``graph`` (Tarjan): each pipe alone, or a cycle's pipes."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            members = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                members.append(w)
                if w == v:
                    break
            found.append(members)

    for v in graph:
        if v not in index:
            visit(v)
    return found
