"""Switch settings: a TOML file's [switch] table, then ONECARD_* environment variables.

Decoded and validated with msgspec; a wrong setting raises ConfigError naming the setting and
where it was set. Bounds that the balance cache or the wire protocol impose are their constants.
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

from ledger_ext import ACCOUNTS_MAX, MERCHANTS_MAX
from protocols.limits import HEARTBEAT_INTERVAL_SECONDS_MAX
from switch import limits
from switch._errors import ConfigError

ENV_PREFIX = "ONECARD_"
# The tables a settings file may hold: the switch's and the admin API's (one onecard.toml
# serves both). Anything else, a misspelt [swtich] say, is refused rather than ignored.
FILE_TABLES = ("switch", "admin")
# What asyncpg and redis-py take (TOML also takes inf, hence a finite bound on every interval).
_DSN_PATTERN = r"^postgres(ql)?://"
_REDIS_URL_PATTERN = r"^(redis|rediss|unix)://"
_DAY_SECONDS = 86_400.0
# A value that fails its pattern is explained, not shown (master_secret is a secret).
_PATTERN_DETAILS = {
    "master_secret": "must be 32 to 64 bytes of hex",
    "bank_card_key": "must be 32 bytes of hex",
    "dsn": "must be a postgresql:// (or postgres://) URI",
    "redis_url": "must be a redis://, rediss:// or unix:// URL",
    "bank_kek": "must be 32 bytes of hex",
}


class SwitchSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    # PostgreSQL DSN (postgresql://user@host:port/db or a Unix-socket URI).
    dsn: Annotated[str, Meta(pattern=_DSN_PATTERN)]
    # Site master secret, hex, at least 32 bytes. Every terminal key is derived from it
    # (docs/protocol.md). Never logged.
    master_secret: Annotated[str, Meta(pattern=r"^([0-9a-fA-F]{2}){32,64}$")]
    host: str = "127.0.0.1"
    port: Annotated[int, Meta(ge=0, le=65535)] = 7700
    # Balance cache capacity: at most the ledger's own maximum.
    accounts_max: Annotated[int, Meta(ge=1, le=ACCOUNTS_MAX)] = 1_000_000
    merchants_max: Annotated[int, Meta(ge=1, le=MERCHANTS_MAX)] = 4_096
    journal_batch_max: Annotated[int, Meta(ge=1, le=65_536)] = limits.JOURNAL_BATCH_MAX
    group_commit_window_seconds: Annotated[float, Meta(ge=0, le=1)] = (
        limits.GROUP_COMMIT_WINDOW_SECONDS
    )
    checkpoint_interval_seconds: Annotated[float, Meta(gt=0, le=_DAY_SECONDS)] = 60.0
    checkpoint_rows: Annotated[int, Meta(ge=1)] = 2_000_000
    # Take a checkpoint's snapshot in a forked child, the event loop serving on (issue 14);
    # false: in-process, holding the loop for the snapshot (tens to hundreds of ms).
    checkpoint_fork: bool = True
    drain_deadline_seconds: Annotated[float, Meta(gt=0, le=_DAY_SECONDS)] = (
        limits.DRAIN_DEADLINE_SECONDS
    )
    # Group commits slower than this are logged as journal.slow_commit; one slower than
    # COMMIT_DEADLINE_SECONDS fails.
    commit_slow_seconds: Annotated[float, Meta(gt=0, le=limits.COMMIT_DEADLINE_SECONDS)] = (
        limits.COMMIT_SLOW_SECONDS
    )
    # Told to terminals at sign-on: the wire's SignOnResult bounds it.
    heartbeat_interval_seconds: Annotated[
        int, Meta(ge=1, le=HEARTBEAT_INTERVAL_SECONDS_MAX)
    ] = 30
    connections_max: Annotated[int, Meta(ge=1, le=limits.CONNECTIONS_MAX)] = limits.CONNECTIONS_MAX
    metrics_port: Annotated[int, Meta(ge=0, le=65535)] | None = None
    # One request in this many is timed through every stage (the latency histograms); 1 times
    # them all, at a cost of about 1 us each.
    latency_sample_every: Annotated[int, Meta(ge=1, le=1_000_000)] = limits.LATENCY_SAMPLE_EVERY
    log_level: Annotated[str, Meta(pattern="^(debug|info|warning|error)$")] = "info"
    # The change feed (docs/architecture.md, "Change feed"): admin-side changes reach this
    # switch's balance cache through a Redis Stream, with PostgreSQL's outbox as the truth.
    redis_url: Annotated[str, Meta(pattern=_REDIS_URL_PATTERN)] = "redis://127.0.0.1:6379/0"
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

    # The bank link (docs/bank-link.md, switch/_banklink.py): off while bank_host is "".
    bank_host: Annotated[str, Meta(max_length=255)] = ""
    bank_port: Annotated[int, Meta(ge=1, le=65535)] = 8583
    # The key-encryption key shared with the bank out of band, hex. Never logged.
    bank_kek: Annotated[str, Meta(pattern=r"^([0-9a-fA-F]{2}){32}$")] | None = None
    bank_connections: Annotated[int, Meta(ge=1, le=8)] = 1
    bank_response_timeout_seconds: Annotated[float, Meta(gt=0, le=120)] = 5.0
    bank_echo_interval_seconds: Annotated[float, Meta(gt=0, le=3600)] = 30.0
    bank_key_exchange_interval_seconds: Annotated[float, Meta(gt=0, le=_DAY_SECONDS)] = 3600.0

    # Kiosk top-up (switch/_topup.py, docs/operations.md "Bank top-up"). Workers carry that
    # many top-ups at once; each waits at most topup_deadline_seconds for the bank (then
    # "unknown, not credited" and a reversal advice).
    topup_workers: Annotated[int, Meta(ge=1, le=1024)] = 64
    topup_deadline_seconds: Annotated[float, Meta(gt=0, le=120)] = 15.0
    # PostgreSQL connections of the top-up workers (a pool of their own).
    topup_pool_max: Annotated[int, Meta(ge=1, le=64)] = 16
    # Wrong PINs in a row before a cardholder's PIN is locked.
    pin_tries_max: Annotated[int, Meta(ge=1, le=20)] = 5
    # Reversal advices: first repeat after bank_advice_backoff_seconds, doubling; after
    # bank_advice_tries_max tries the advice becomes a bank_exception document.
    bank_advice_tries_max: Annotated[int, Meta(ge=1, le=1000)] = 20
    bank_advice_backoff_seconds: Annotated[float, Meta(gt=0, le=3600)] = 1.0
    bank_advice_poll_seconds: Annotated[float, Meta(gt=0, le=60)] = 1.0
    # The key sealing bound bank card numbers (hex, 32 bytes); "" derives it from
    # master_secret (protocols/bank_card.py). The admin API must use the same.
    bank_card_key: Annotated[str, Meta(pattern=r"^([0-9a-fA-F]{2}){32}$|^$")] = ""

    def __post_init__(self) -> None:
        if self.bank_host and self.bank_kek is None:
            raise ValueError("bank_host is set: set bank_kek too (the bank link's KEK)")

    def __repr__(self) -> str:
        def show(name: str) -> str:
            if name in ("master_secret", "bank_kek", "bank_card_key"):
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
    """Merge the TOML file's [switch] table, ONECARD_<NAME> variables and explicit overrides
    (command-line flags)."""
    raw: dict[str, object] = {}
    # Where each value came from, for the error that names it.
    source: dict[str, str] = {}
    if path is not None:
        try:
            with open(path, "rb") as f:
                doc = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read settings file {path}: {exc}") from None
        for key in doc:
            if key not in FILE_TABLES:
                raise ConfigError(f"{path}: unknown table or key {key!r} (a settings file "
                                  "holds the [switch] and [admin] tables)")
        table = doc.get("switch", {})
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [switch] must be a table")
        raw.update(table)
        source.update((name, f"[switch] of {path}") for name in table)
    env = os.environ if env is None else env
    for name in SwitchSettings.__struct_fields__:
        value = env.get(ENV_PREFIX + name.upper())
        if value is not None:
            raw[name] = value
            source[name] = f"env {ENV_PREFIX}{name.upper()}"
    for name, flag in (overrides or {}).items():
        if flag is not None:
            raw[name] = flag
            source[name] = "--" + name.replace("_", "-")
    try:
        return msgspec.convert(raw, SwitchSettings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(_explain(str(exc), source, path)) from None


def _explain(message: str, source: Mapping[str, str], path: Path | None) -> str:
    # msgspec says "Expected `int`, got `str` - at `$.port`" or "Object missing required field
    # `dsn`"; name the setting the way a person sets it, and where it was set.
    if " - at `$." in message:
        what, where = message.rsplit(" - at `$.", 1)
        name = where.rstrip("`").split(".")[0].split("[")[0]
        detail = _PATTERN_DETAILS.get(name, what) if "regex" in what else what
        return f"setting {name} ({source.get(name, 'default')}): {detail}"
    if "missing required field" in message:
        name = message.rsplit("`", 2)[-2]
        return f"setting {name} is required (env {ENV_PREFIX}{name.upper()} or [switch] {name})"
    if "unknown field" in message:  # only a file can name a setting that does not exist
        name = message.rsplit("`", 2)[-2]
        return f"unknown setting {name!r} in [switch] of {path}"
    return f"invalid settings: {message}"
