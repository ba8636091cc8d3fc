"""Daemon settings: where it listens, where state lives, who may call the API.

Sources, strongest first: flags of ``sluice serve`` (passed as keyword arguments), environment
variables ``SLUICE_<NAME>`` (e.g. ``SLUICE_PORT``, ``SLUICE_ADMIN_TOKEN``), the daemon settings file
(YAML or JSON, ``--settings FILE`` / ``SLUICE_SETTINGS``), then the defaults below.

A settings file looks like::

    host: 0.0.0.0
    port: 9042
    data_dir: /var/lib/sluice
    api_tokens:
      - {token: "$SECRET(sluice-admin)", role: admin}
      - {token: "...", role: read}
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from runtime.config.secrets import Secret, Secrets, substitute
from runtime.errors import ConfigError, ConfigProblem

Role = Literal["read", "admin"]


class ApiToken(BaseModel):
    """One bearer token and its role: ``read`` (GET endpoints) or ``admin`` (everything)."""

    model_config = ConfigDict(extra="forbid")
    token: Secret
    role: Role = "read"


class DaemonSettings(BaseSettings):
    """Settings of ``sluice serve``.

    Attributes:
        host: interface to bind (default loopback only).
        port: TCP port; 0 picks a free one (the chosen port is printed in the ready line).
        data_dir: directory for state; the default store is ``DATA_DIR/sluice.db``.
        store: state store URL (``sqlite:///PATH`` or ``postgresql://USER@HOST/DATABASE``); default
            SQLite in ``data_dir``.
        secrets_file: JSON/YAML object of ``$SECRET(name)`` values (else the environment).
        api_tokens: bearer tokens with roles.
        admin_token, read_token: one token of each role from the environment
            (``SLUICE_ADMIN_TOKEN``, ``SLUICE_READ_TOKEN``), added to ``api_tokens``.
        api_auth: false turns authentication off (local development only; logged as a warning).
        public_status_page: serve ``/`` without a token.
        public_metrics: serve ``/metrics`` without a token.
        signal_debounce_s: how long a pump waits after an input dataset changed before it runs,
            collecting further changes into the same run (seconds).
        retry_backoff_s: first delay before a failed run is retried (doubles per failure).
        retry_backoff_max_s: the longest such delay.
        shutdown_timeout_s: how long a clean stop waits for running batches to commit before it
            cancels them (uncommitted work is then redone by the next run).
        publisher_concurrency: how many publisher streams may read and encode a chunk at the
            same time (the others wait their turn, so API requests are served in between).
        receiver_max_body_bytes: the largest body a JSON push receiver accepts (bytes, default
            16 MiB); a larger one is refused with 413 before it is parsed.
        cluster_lease_s: with a PostgreSQL store, the lifetime of a cluster member's leases
            (pipe runs, work units, the leader), seconds; renewed every third of it. A member
            frozen or dead longer loses them, and another takes them within twice this.
        ready_file: if set, the daemon writes ``{"host":..,"port":..,"pid":..}`` there once listening.
    """

    model_config = SettingsConfigDict(env_prefix="SLUICE_", extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=9042, ge=0, le=65535)
    data_dir: Path = Path(".sluice")
    store: str | None = None
    secrets_file: Path | None = None
    api_tokens: list[ApiToken] = Field(default_factory=list)
    admin_token: Secret | None = None
    read_token: Secret | None = None
    api_auth: bool = True
    public_status_page: bool = False
    public_metrics: bool = False
    signal_debounce_s: float = Field(default=0.5, ge=0)
    retry_backoff_s: float = Field(default=1.0, gt=0)
    retry_backoff_max_s: float = Field(default=300.0, gt=0)
    shutdown_timeout_s: float = Field(default=30.0, gt=0)
    publisher_concurrency: int = Field(default=2, ge=1)
    receiver_max_body_bytes: int = Field(default=16 * 1024**2, ge=1)
    cluster_lease_s: float = Field(default=30.0, gt=0)
    ready_file: Path | None = None

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings

    def tokens(self) -> dict[str, Role]:
        """Every configured token (revealed) -> its role."""
        out = {t.token.reveal(): t.role for t in self.api_tokens}
        if self.admin_token is not None:
            out[self.admin_token.reveal()] = "admin"
        if self.read_token is not None:
            out.setdefault(self.read_token.reveal(), "read")
        return {k: v for k, v in out.items() if k}


def load_settings(file: Path | None = None, **flags: Any) -> DaemonSettings:
    """Build settings from flags (None values ignored), environment and ``file``.

    ``$SECRET(name)`` / ``$ENV(name)`` in the file are substituted like in pipe configs.

    Raises:
        ConfigError: the file cannot be read, or a value is invalid (names file and key).
    """
    file = file or (Path(os.environ["SLUICE_SETTINGS"]) if os.environ.get("SLUICE_SETTINGS") else None)
    where = str(file) if file else "<settings>"
    problems: list[ConfigProblem] = []
    values: dict[str, Any] = {}
    if file is not None:
        try:
            loaded = yaml.safe_load(file.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError([ConfigProblem(where, None, "", f"cannot be read: {exc}")]) from exc
        if not isinstance(loaded, dict):
            raise ConfigError([ConfigProblem(where, None, "", "must hold one object of settings")])
        secrets_file = flags.get("secrets_file") or loaded.get("secrets_file")
        try:
            secrets = Secrets(Path(secrets_file) if secrets_file else None)
        except ValueError as exc:
            raise ConfigError([ConfigProblem(where, None, "secrets_file", str(exc))]) from exc
        values = substitute(loaded, secrets, lambda k, r: problems.append(ConfigProblem(where, None, k, r)))
    env_names = {f"SLUICE_{k.upper()}" for k in DaemonSettings.model_fields}
    from_env = {n for n in env_names if n in os.environ}
    init = {**{k: v for k, v in values.items() if f"SLUICE_{k.upper()}" not in from_env},
            **{k: v for k, v in flags.items() if v is not None}}
    try:
        settings = DaemonSettings(**init)
    except ValidationError as exc:
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            reason = "unknown setting" if err["type"] == "extra_forbidden" else err["msg"]
            problems.append(ConfigProblem(where, None, key, reason))
        raise ConfigError(problems) from exc
    if problems:
        raise ConfigError(problems)
    return settings
