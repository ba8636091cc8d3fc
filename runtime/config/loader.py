"""Load a config directory into validated :class:`Config`, listing every problem at once.

Config files are ``*.json``, ``*.yaml`` and ``*.yml`` directly in the config directory and in its
``pipes/`` and ``systems/`` subdirectories (other subdirectories, e.g. ``data/``, are not read).
A file holds one object or a list of objects; an object's ``type`` is ``pipe`` or ``system:...``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml
from pydantic import BaseModel, ValidationError

from runtime.config.graph import PipeDatasets, check_datasets, cycle_warnings, in_dependency_order
from runtime.config.models import ComponentSpec, PipeModel, PipeSpec, SystemSpec
from runtime.config.problems import MISPLACED_SECRET, Problems, join
from runtime.config.secrets import SECRETS_REQUIRED, Secrets, misplaced_secrets, substitute
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
        warnings: what is allowed but probably unintended (a dependency cycle), for ``sluice
            check`` to print and the runtime to log.
    """

    dir: Path
    pipes: dict[str, PipeSpec]
    systems: dict[str, SystemSpec]
    warnings: list[ConfigProblem] = field(default_factory=list)

    def downstream(self, dataset: str) -> list[str]:
        """Pipes that read ``dataset``."""
        return [p.id for p in self.pipes.values() if dataset in p.reads]


def _read_file(path: Path, problems: Problems) -> list[Any]:
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


def load_config(
    config_dir: str | Path, registry: Registry, secrets: Secrets | None = None, *,
    require_writers: bool = False,
) -> Config:
    """Read, substitute and validate every config file of ``config_dir``.

    The config directory is put on ``sys.path`` so ``python`` transforms can name modules kept
    beside the config.

    Args:
        config_dir: the config directory.
        registry: the component types.
        secrets: where ``$SECRET(name)`` values come from (default: the environment).
        require_writers: also refuse a pipe reading a dataset no pipe of the config writes
            (``sluice check``; a run reads such a dataset as it finds it in the store).

    Raises:
        ConfigError: with every problem found (file, ``_id``, key path, reason).
    """
    root = Path(config_dir)
    problems = Problems()
    if not root.is_dir():
        raise ConfigError([ConfigProblem(str(root), None, "", "config directory does not exist")])
    if str(root.resolve()) not in sys.path:
        sys.path.insert(0, str(root.resolve()))
    system_objs, pipe_objs = _objects(root, secrets or Secrets(), problems)
    systems: dict[str, SystemSpec | None] = {o["_id"]: _system(f, o, registry, problems) for f, o in system_objs}
    built = [_pipe(f, o, registry, systems, problems) for f, o in pipe_objs]
    check_datasets([b for _, b in built], problems, require_writers=require_writers)
    if problems.items:
        raise ConfigError(problems.items)
    pipes = [p for p, _ in built if p is not None]
    valid = {sid: s for sid, s in systems.items() if s is not None}
    return Config(root, in_dependency_order(pipes), valid, cycle_warnings(pipes))


Objects = list[tuple[str, dict[str, Any]]]


def _objects(root: Path, secrets: Secrets, problems: Problems) -> tuple[Objects, Objects]:
    """The substituted (file, object) pairs of every system and every pipe, unique ``_id`` each."""
    objects: Objects = []
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
    systems: Objects = []
    pipes: Objects = []
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
            pipes.append((file, obj))
        elif isinstance(otype, str) and otype.startswith("system:"):
            systems.append((file, obj))
        else:
            problems.add(file, oid, "type", f"must be 'pipe' or 'system:<kind>', got {otype!r}")
    return systems, pipes


def _system(file: str, obj: dict[str, Any], registry: Registry, problems: Problems) -> SystemSpec | None:
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
    model: type[BaseModel], body: Any, file: str, oid: str | None, key: str, problems: Problems,
    skip: tuple[str, ...] = (),
) -> Any:
    """``body`` validated by ``model`` (keys typed ``Secret`` refuse plain strings; a secret
    elsewhere is a problem), or None when it has problems (recorded)."""
    try:
        config = model.model_validate(body, context=SECRETS_REQUIRED)
    except ValidationError as exc:
        problems.from_validation(file, oid, key, exc, body)
        return None
    misplaced = misplaced_secrets(config, skip)
    for path in misplaced:
        problems.add(file, oid, join(key, path), MISPLACED_SECRET)
    return None if misplaced else config


def _component(
    kind: str, key: str, body: dict[str, Any], registry: Registry, systems: dict[str, SystemSpec | None],
    file: str, pipe: str, problems: Problems,
) -> ComponentSpec | None:
    """The validated component, or None when it has problems (recorded). ``systems`` holds None
    for a system with problems of its own: the component is validated without it."""
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
    if config is None:
        return None
    spec = systems.get(system) if system is not None else None
    found = config.system_problems(system, spec.config) if spec is not None else []
    for sub, reason in found:
        problems.add(file, pipe, f"{key}.{sub}", reason)
    ok = not found and (system is None or spec is not None)
    return ComponentSpec(kind, key, cls, config) if ok else None


def _parts(obj: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """(kind, key, body) of each component object of a pipe; a part that is not an object is left
    to the pipe model, which reports it."""
    transform = obj.get("transform")
    if isinstance(transform, list):
        transforms = [("transform", f"transform[{i}]", t) for i, t in enumerate(transform)]
    else:
        transforms = [("transform", "transform", transform)] if transform is not None else []
    sink = obj.get("sink")
    if sink is None:
        sink = {"type": "dataset"}
    parts = [("source", "source", obj.get("source")), *transforms, ("sink", "sink", sink)]
    return [p for p in parts if isinstance(p[2], dict)]


def _pipe(
    file: str, obj: dict[str, Any], registry: Registry, systems: dict[str, SystemSpec | None],
    problems: Problems,
) -> tuple[PipeSpec | None, PipeDatasets]:
    """The pipe (None when it has problems) and what it reads and writes, as far as its parts
    validated; the pipe model and every component are validated, whatever the others' problems."""
    oid = obj["_id"]
    # components are validated by their own models; metadata is only kept (and shown as ***)
    model = _validate(PipeModel, obj, file, oid, "", problems, skip=("source", "transform", "sink", "metadata"))
    raw = _parts(obj)
    specs = [_component(kind, key, body, registry, systems, file, oid, problems) for kind, key, body in raw]
    parts = [c for c in specs if c is not None]
    reads = [(_dataset_key(c, ds), ds) for c in parts for ds in c.cls.datasets_read(c.config)]
    sink_ok = any(c.kind == "sink" for c in parts)
    writes = _unique(d for c in parts for d in c.cls.datasets_written(c.config, oid)) if sink_ok else None
    pump = obj.get("pump")
    dead = pump.get("dead_letter_dataset") if isinstance(pump, dict) else None  # also if the model failed
    datasets = PipeDatasets(oid, file, reads, writes, dead if isinstance(dead, str) else None)
    if model is None or len(parts) != len(raw) or writes is None:
        return None, datasets
    source, *transforms = parts[:-1]
    spec = PipeSpec(oid, file, model, source, transforms, parts[-1], _unique(ds for _, ds in reads), writes)
    refused = _side_effect_problems(spec)
    for key, reason in refused:
        problems.add(file, oid, key, reason)
    return (None if refused else spec), datasets


def _side_effect_problems(spec: PipeSpec) -> list[tuple[str, str]]:
    """A transform with side effects (Sesam's capture response with transform, seeds 001/002)
    in a publisher (each request would call it) or in a pipe tracking dependencies (a re-run
    from tracking would send again): (key, reason) of each."""
    effects = [t.key for t in spec.transforms if t.cls.side_effects(t.config)]
    if not effects:
        return []
    out = []
    if not spec.sink.cls.pump_runs:
        out.append((effects[0], f"pipe {spec.id!r} is a publisher (its sink is {spec.sink.config.type}) and "
                                f"its {effects[0]} has side_effects: every request would call it; publish the "
                                "dataset the side-effecting pipe writes instead"))
    tracked = spec.tracked_datasets()
    if tracked:
        hops = ", ".join(f"{ds!r} ({where})" for ds, where in tracked.items())
        out.append((effects[0], f"pipe {spec.id!r} tracks dependencies on {hops} and its {effects[0]} has "
                                "side_effects: a change there would send its entities again; set "
                                '"track-dependencies": false on those hops, or do the hops in a pipe before it'))
    return out


def _dataset_key(component: ComponentSpec, dataset: str) -> str:
    """Where a component names a dataset it reads: its ``dataset`` key when that holds the name."""
    if getattr(component.config, "dataset", None) == dataset:
        return f"{component.key}.dataset"
    return component.key


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
