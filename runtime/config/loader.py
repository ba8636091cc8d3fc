"""Load a config directory into validated :class:`Config`, listing every problem at once.

Config files are ``*.json``, ``*.yaml`` and ``*.yml`` directly in the config directory and in its
``pipes/`` and ``systems/`` subdirectories (other subdirectories, e.g. ``data/``, are not read).
A file holds one object or a list of objects; an object's ``type`` is ``pipe`` or ``system:...``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass
from graphlib import TopologicalSorter
from pathlib import Path
from typing import Any

import orjson
import yaml
from pydantic import BaseModel, ValidationError

from runtime.config.models import ComponentSpec, PipeModel, PipeSpec, SystemSpec
from runtime.config.secrets import Secret, Secrets, substitute
from runtime.errors import ConfigError, ConfigProblem
from runtime.plugins import Registry

CONFIG_SUFFIXES = (".json", ".yaml", ".yml")
CONFIG_SUBDIRS = ("", "pipes", "systems")


@dataclass(frozen=True)
class Config:
    """A validated configuration.

    Attributes:
        dir: the config directory.
        pipes: pipes by ``_id``, in dependency order (a pipe after the pipes that write what it reads).
        systems: systems by ``_id``.
    """

    dir: Path
    pipes: dict[str, PipeSpec]
    systems: dict[str, SystemSpec]

    def downstream(self, dataset: str) -> list[str]:
        """Pipes that read ``dataset``."""
        return [p.id for p in self.pipes.values() if dataset in p.reads]


class _Problems:
    def __init__(self) -> None:
        self.items: list[ConfigProblem] = []

    def add(self, file: str, obj: str | None, key: str, reason: str) -> None:
        self.items.append(ConfigProblem(file, obj, key, reason))

    def from_validation(self, file: str, obj: str | None, prefix: str, exc: ValidationError) -> None:
        for err in exc.errors():
            path = ".".join(str(p) for p in err["loc"])
            key = f"{prefix}.{path}" if prefix and path else prefix or path
            if isinstance(err.get("input"), Secret):
                reason = "$SECRET(...) is not allowed here; only keys that take secrets accept one"
            elif err["type"] == "extra_forbidden":
                reason = "unknown key"
            else:
                reason = err["msg"]
            self.add(file, obj, key, reason)


def _read_file(path: Path, problems: _Problems) -> list[Any]:
    try:
        data = path.read_bytes()
        parsed = orjson.loads(data) if path.suffix == ".json" else yaml.safe_load(data)
    except orjson.JSONDecodeError as exc:
        problems.add(str(path), None, "", f"not valid JSON: {exc}")
        return []
    except yaml.YAMLError as exc:
        problems.add(str(path), None, "", f"not valid YAML: {exc}")
        return []
    except OSError as exc:
        problems.add(str(path), None, "", f"cannot be read: {exc}")
        return []
    if parsed is None:
        return []
    return parsed if isinstance(parsed, list) else [parsed]


def config_files(config_dir: Path) -> list[Path]:
    """The config files of a directory, in the order they are read."""
    files: list[Path] = []
    for sub in CONFIG_SUBDIRS:
        folder = config_dir / sub if sub else config_dir
        if folder.is_dir():
            files.extend(sorted(p for p in folder.iterdir() if p.suffix in CONFIG_SUFFIXES and p.is_file()))
    return files


def load_config(config_dir: str | Path, registry: Registry, secrets: Secrets | None = None) -> Config:
    """Read, substitute and validate every config file of ``config_dir``.

    The config directory is put on ``sys.path`` so ``python`` transforms can name modules kept
    beside the config.

    Raises:
        ConfigError: with every problem found (file, ``_id``, key path, reason).
    """
    root = Path(config_dir)
    problems = _Problems()
    if not root.is_dir():
        raise ConfigError([ConfigProblem(str(root), None, "", "config directory does not exist")])
    if str(root.resolve()) not in sys.path:
        sys.path.insert(0, str(root.resolve()))
    secrets = secrets or Secrets()
    objects: list[tuple[str, dict[str, Any]]] = []
    for path in config_files(root):
        for i, obj in enumerate(_read_file(path, problems)):
            if not isinstance(obj, dict):
                problems.add(str(path), None, f"[{i}]", f"expected an object, got {type(obj).__name__}")
                continue
            oid = obj.get("_id") if isinstance(obj.get("_id"), str) else None

            def report(key: str, reason: str, _f: str = str(path), _o: str | None = oid) -> None:
                problems.add(_f, _o, key, reason)

            objects.append((str(path), substitute(obj, secrets, report)))
    seen: dict[str, str] = {}
    system_objs: list[tuple[str, dict[str, Any]]] = []
    pipe_objs: list[tuple[str, dict[str, Any]]] = []
    for file, obj in objects:
        oid, otype = obj.get("_id"), obj.get("type")
        if not isinstance(oid, str) or not oid:
            problems.add(file, None, "_id", "missing or not a non-empty string")
            continue
        if "/" in oid:
            problems.add(file, oid, "_id", "must not contain '/'")
        if oid in seen:
            problems.add(file, oid, "_id", f"duplicate _id, also defined in {seen[oid]}")
            continue
        seen[oid] = file
        if otype == "pipe":
            pipe_objs.append((file, obj))
        elif isinstance(otype, str) and otype.startswith("system:"):
            system_objs.append((file, obj))
        else:
            problems.add(file, oid, "type", f"must be 'pipe' or 'system:<kind>', got {otype!r}")
    systems = {s.id: s for s in (_system(f, o, registry, problems) for f, o in system_objs) if s}
    pipes = [p for p in (_pipe(f, o, registry, systems, problems) for f, o in pipe_objs) if p]
    _check_writers(pipes, problems)
    if problems.items:
        raise ConfigError(problems.items)
    return Config(root, _in_dependency_order(pipes), systems)


def _system(file: str, obj: dict[str, Any], registry: Registry, problems: _Problems) -> SystemSpec | None:
    oid = obj["_id"]
    cls = registry.get("system", obj["type"])
    if cls is None:
        known = ", ".join(registry.names("system")) or "none installed"
        problems.add(file, oid, "type", f"unknown system type {obj['type']!r}; known: {known}")
        return None
    body = {k: v for k, v in obj.items() if k != "_id"}
    config = _validate(cls.Config, body, file, oid, "", problems)
    return SystemSpec(oid, file, cls, config) if config is not None else None


def _validate(
    model: type[BaseModel], body: Any, file: str, oid: str | None, key: str, problems: _Problems
) -> Any:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        problems.from_validation(file, oid, key, exc)
        return None


def _component(
    kind: str, key: str, body: Any, registry: Registry, systems: dict[str, SystemSpec],
    file: str, pipe: str, problems: _Problems,
) -> ComponentSpec | None:
    if not isinstance(body, dict):
        problems.add(file, pipe, key, f"expected an object, got {type(body).__name__}")
        return None
    type_name = body.get("type")
    cls = registry.get(kind, type_name) if isinstance(type_name, str) else None  # type: ignore[arg-type]
    if cls is None:
        known = ", ".join(registry.names(kind))  # type: ignore[arg-type]
        problems.add(file, pipe, f"{key}.type", f"unknown {kind} type {type_name!r}; known: {known}")
        return None
    system = body.get("system")
    if system is not None and system not in systems:
        problems.add(file, pipe, f"{key}.system", f"no system with _id {system!r} is defined")
        return None
    config = _validate(cls.Config, body, file, pipe, key, problems)
    return ComponentSpec(kind, key, cls, config) if config is not None else None


def _pipe(
    file: str, obj: dict[str, Any], registry: Registry, systems: dict[str, SystemSpec],
    problems: _Problems,
) -> PipeSpec | None:
    oid = obj["_id"]
    model = _validate(PipeModel, obj, file, oid, "", problems)
    if model is None:
        return None
    raw_transforms = model.transform if isinstance(model.transform, list) else (
        [model.transform] if model.transform else []
    )
    key_of = (lambda i: f"transform[{i}]") if isinstance(model.transform, list) else (lambda i: "transform")
    source = _component("source", "source", model.source, registry, systems, file, oid, problems)
    transforms = [
        _component("transform", key_of(i), t, registry, systems, file, oid, problems)
        for i, t in enumerate(raw_transforms)
    ]
    sink_body = model.sink if model.sink is not None else {"type": "dataset"}
    sink = _component("sink", "sink", sink_body, registry, systems, file, oid, problems)
    if source is None or sink is None or any(t is None for t in transforms):
        return None
    parts: list[ComponentSpec] = [source, *[t for t in transforms if t], sink]
    reads = _unique(d for c in parts for d in c.cls.datasets_read(c.config))
    writes = _unique(d for c in parts for d in c.cls.datasets_written(c.config, oid))
    return PipeSpec(oid, file, model, source, [t for t in transforms if t], sink, reads, writes)


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _check_writers(pipes: list[PipeSpec], problems: _Problems) -> None:
    writer: dict[str, str] = {}
    for p in pipes:
        for ds in p.writes:
            if ds in writer:
                problems.add(
                    p.file, p.id, "sink.dataset",
                    f"dataset {ds!r} is already written by pipe {writer[ds]!r}; one dataset, one writer",
                )
            writer.setdefault(ds, p.id)


def _in_dependency_order(pipes: list[PipeSpec]) -> dict[str, PipeSpec]:
    """Pipes ordered so a pipe comes after the writers of its inputs. Pipes in a dependency cycle
    are grouped and keep their file order among themselves; the groups are ordered as usual."""
    writer = {ds: p.id for p in pipes for ds in p.writes}
    graph = {p.id: {writer[d] for d in p.reads if d in writer and writer[d] != p.id} for p in pipes}
    position = {p.id: i for i, p in enumerate(pipes)}
    group_of: dict[str, int] = {}
    for n, members in enumerate(_cycles(graph)):
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


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
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
