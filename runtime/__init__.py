"""Sluice's runtime: the public API.

Layers, bottom up (each imports only the ones below it):

1. ``errors``, ``entities``                   — the exception tree; entity fields, canonical JSON, hash
2. ``store``                                  — StateStore protocol and its SQLite implementation
3. ``config``, ``plugins``, ``templates``     — typed config and the component registry
4. ``components``, ``actors``, ``pipes``      — component base classes; mailboxes; PipeRun
5. ``rescans``, ``runtime``                   — run kinds; the embedding API
6. ``cli``                                    — the ``sluice`` command

Connectors (``connectors/``) build on layers 1-4 and reach the runtime only through the registry.
"""

from runtime.actors import Batch, Mailbox, MailboxStats
from runtime.components import (
    Chunk,
    ComponentConfig,
    ComponentContext,
    RunInfo,
    Sink,
    Source,
    SourceConfig,
    System,
    Transform,
)
from runtime.config import Config, Secret, Secrets, load_config
from runtime.entities import Entity, canonical_json, content_hash
from runtime.errors import (
    BadDataError,
    ComponentError,
    ConfigError,
    ConfigProblem,
    DependencyTrackingError,
    DtlCompileError,
    DtlFailError,
    DtlTripError,
    EntityError,
    ErrorRatioError,
    FatalError,
    FencedError,
    LeaseHeldError,
    OperationRefusedError,
    PipeTrippedError,
    SluiceError,
    SourceEmptyError,
    StoreError,
    TransientError,
)
from runtime.logs import library_defaults
from runtime.pipes import PipeRun, RunResult
from runtime.plugins import Registry, default_registry
from runtime.runtime import Runtime
from runtime.store import Checkpoint, DatasetInfo, PipeState, StateStore, WriteResult

library_defaults()

__all__ = [
    "BadDataError",
    "Batch",
    "Checkpoint",
    "Chunk",
    "ComponentConfig",
    "ComponentContext",
    "ComponentError",
    "Config",
    "ConfigError",
    "ConfigProblem",
    "DatasetInfo",
    "DependencyTrackingError",
    "DtlCompileError",
    "DtlFailError",
    "DtlTripError",
    "Entity",
    "EntityError",
    "ErrorRatioError",
    "FatalError",
    "FencedError",
    "LeaseHeldError",
    "Mailbox",
    "MailboxStats",
    "OperationRefusedError",
    "PipeRun",
    "PipeState",
    "PipeTrippedError",
    "Registry",
    "RunInfo",
    "RunResult",
    "Runtime",
    "Secret",
    "Secrets",
    "Sink",
    "SluiceError",
    "Source",
    "SourceConfig",
    "SourceEmptyError",
    "StateStore",
    "StoreError",
    "System",
    "Transform",
    "TransientError",
    "WriteResult",
    "canonical_json",
    "content_hash",
    "default_registry",
    "load_config",
]
