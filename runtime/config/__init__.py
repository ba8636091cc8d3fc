"""Configuration: load a directory of JSON/YAML objects, substitute ``$ENV``/``$SECRET``, validate.

See :func:`load_config`; every problem is reported at once in one :class:`~runtime.errors.ConfigError`.
"""

from runtime.config.loader import Config, config_files, load_config
from runtime.config.models import (
    CompactionConfig,
    ComponentSpec,
    PipeModel,
    PipeSpec,
    PumpConfig,
    SystemSpec,
)
from runtime.config.secrets import Secret, Secrets, reveal

__all__ = [
    "CompactionConfig",
    "ComponentSpec",
    "Config",
    "PipeModel",
    "PipeSpec",
    "PumpConfig",
    "Secret",
    "Secrets",
    "SystemSpec",
    "config_files",
    "load_config",
    "reveal",
]
