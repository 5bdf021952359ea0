"""Switch settings: a TOML file's [switch] table, then ONECARD_* environment variables.

Decoded and validated with msgspec; a wrong setting raises ConfigError naming the setting.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit, urlunsplit

import msgspec
from msgspec import Meta

from switch import limits
from switch._errors import ConfigError

ENV_PREFIX = "ONECARD_"


class SwitchSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    # PostgreSQL DSN (postgresql://user@host:port/db or a Unix-socket URI).
    dsn: str
    # Site master secret, hex, at least 32 bytes. Every terminal key is derived from it
    # (docs/protocol.md). Never logged.
    master_secret: Annotated[str, Meta(pattern=r"^([0-9a-fA-F]{2}){32,64}$")]
    host: str = "127.0.0.1"
    port: Annotated[int, Meta(ge=0, le=65535)] = 7700
    accounts_max: Annotated[int, Meta(ge=16, le=50_000_000)] = 1_000_000
    merchants_max: Annotated[int, Meta(ge=16, le=32_768)] = 4_096
    journal_batch_max: Annotated[int, Meta(ge=1, le=65_536)] = limits.JOURNAL_BATCH_MAX
    group_commit_window_seconds: Annotated[float, Meta(ge=0, le=1)] = (
        limits.GROUP_COMMIT_WINDOW_SECONDS
    )
    checkpoint_interval_seconds: Annotated[float, Meta(gt=0)] = 60.0
    checkpoint_rows: Annotated[int, Meta(ge=1)] = 2_000_000
    drain_deadline_seconds: Annotated[float, Meta(gt=0)] = limits.DRAIN_DEADLINE_SECONDS
    # Group commits slower than this are logged as journal.slow_commit.
    commit_slow_seconds: Annotated[float, Meta(gt=0)] = limits.COMMIT_SLOW_SECONDS
    heartbeat_interval_seconds: Annotated[int, Meta(ge=1, le=3600)] = 30
    connections_max: Annotated[int, Meta(ge=1, le=limits.CONNECTIONS_MAX)] = limits.CONNECTIONS_MAX
    metrics_port: Annotated[int, Meta(ge=0, le=65535)] | None = None
    # One request in this many is timed through every stage (the latency histograms); 1 times
    # them all, at a cost of about 1 us each.
    latency_sample_every: Annotated[int, Meta(ge=1, le=1_000_000)] = limits.LATENCY_SAMPLE_EVERY
    log_level: Annotated[str, Meta(pattern="^(debug|info|warning|error)$")] = "info"
    # The change feed (docs/architecture.md, "Change feed"): admin-side changes reach this
    # switch's balance cache through a Redis Stream, with PostgreSQL's outbox as the truth.
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Apply the change feed. Off: master data is read at start-up only.
    changefeed: bool = True
    # Run the outbox relay (PostgreSQL -> Redis) in this process too. Several relays may run.
    changefeed_relay: bool = True
    # The stream's key; "" means "onecard:changes:<database name>".
    changefeed_stream: Annotated[str, Meta(max_length=200)] = ""
    # Without news from Redis, look at the outbox in PostgreSQL this often (also the relay's
    # fallback when a notification is missed, and the pace while Redis is down).
    changefeed_poll_seconds: Annotated[float, Meta(ge=0.01, le=60)] = (
        limits.CHANGEFEED_POLL_SECONDS
    )

    def __repr__(self) -> str:
        def show(name: str) -> str:
            if name == "master_secret":
                return "<secret>"
            if name == "redis_url":
                return repr(redacted_url(self.redis_url))
            return repr(getattr(self, name))

        shown = ", ".join(f"{name}={show(name)}" for name in self.__struct_fields__)
        return f"SwitchSettings({shown})"

    @property
    def master_secret_bytes(self) -> bytes:
        return bytes.fromhex(self.master_secret)


def redacted_url(url: str) -> str:
    """The URL without its password, for logs and repr."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def load_settings(
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> SwitchSettings:
    """Merge the TOML file's [switch] table, ONECARD_<NAME> variables and explicit overrides."""
    raw: dict[str, object] = {}
    if path is not None:
        try:
            with open(path, "rb") as f:
                doc = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read settings file {path}: {exc}") from None
        table = doc.get("switch", {})
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [switch] must be a table")
        raw.update(table)
    env = os.environ if env is None else env
    fields = set(SwitchSettings.__struct_fields__)
    for name in fields:
        value = env.get(ENV_PREFIX + name.upper())
        if value is not None:
            raw[name] = value
    if overrides:
        raw.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return msgspec.convert(raw, SwitchSettings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(_explain(str(exc))) from None


def _explain(message: str) -> str:
    # msgspec says "Expected `int`, got `str` - at `$.port`" or "Object missing required field
    # `dsn`"; name the setting the way a person sets it.
    if " - at `$." in message:
        what, where = message.rsplit(" - at `$.", 1)
        name = where.rstrip("`").split(".")[0].split("[")[0]
        secret = name == "master_secret"
        detail = "must be 32 to 64 bytes of hex" if secret else what
        return f"setting {name} (env {ENV_PREFIX}{name.upper()}): {detail}"
    if "missing required field" in message:
        name = message.rsplit("`", 2)[-2]
        return f"setting {name} is required (env {ENV_PREFIX}{name.upper()} or [switch] {name})"
    if "unknown field" in message:
        name = message.rsplit("`", 2)[-2]
        return f"unknown setting {name!r} in [switch]"
    return f"invalid settings: {message}"
