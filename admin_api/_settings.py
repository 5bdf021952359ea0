"""Admin API settings: a TOML file's [admin] table, then ONECARD_ADMIN_* variables.

`dsn` falls back to ONECARD_DSN, the variable the switch reads, so one environment serves both.
A wrong setting raises SettingsError naming the setting.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import msgspec
from msgspec import Meta

ENV_PREFIX = "ONECARD_ADMIN_"
# The tables a settings file may hold: this one and the switch's (one onecard.toml serves
# both). Anything else, a misspelt [amdin] say, is refused rather than ignored.
FILE_TABLES = ("admin", "switch")


class SettingsError(Exception):
    """A missing or invalid setting; the message names it."""


class AdminSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    # PostgreSQL DSN of the site (the switch's database).
    dsn: str
    host: str = "127.0.0.1"
    port: Annotated[int, Meta(ge=0, le=65535)] = 8080
    # Access tokens live this long; a log-in gives a new one.
    token_seconds: Annotated[int, Meta(ge=30, le=86_400)] = 900
    # Failed log-ins allowed per user name, and per client address (a campus may sit behind
    # one NAT address: looser), in `login_window_seconds`; past either, log-in answers 429
    # until the window has passed.
    login_failures_max: Annotated[int, Meta(ge=1, le=1000)] = 5
    login_address_failures_max: Annotated[int, Meta(ge=1, le=100_000)] = 100
    login_window_seconds: Annotated[int, Meta(ge=1, le=86_400)] = 300
    # The switch, for money movements: the admin API is a privileged terminal (kind admin) of it.
    switch_host: str = "127.0.0.1"
    switch_port: Annotated[int, Meta(ge=0, le=65535)] = 7700
    # The admin terminal's id and key (hex, 32 bytes; derived from the site master secret by
    # `onecard terminal-key`). Never logged.
    switch_terminal_id: Annotated[int, Meta(ge=0, le=2**31 - 1)] = 0
    switch_terminal_key: Annotated[str, Meta(pattern=r"^([0-9a-fA-F]{2}){32}$|^$")] = ""
    switch_timeout_seconds: Annotated[float, Meta(gt=0, le=60)] = 5.0
    # The site master secret (hex, 32 to 64 bytes; the switch's `master_secret`): registering
    # or re-keying a terminal answers its key, derived from it, once. Falls back to
    # ONECARD_MASTER_SECRET. Empty: terminals cannot be registered here. Never logged.
    master_secret: Annotated[str, Meta(pattern=r"^([0-9a-fA-F]{2}){32,64}$|^$")] = ""
    # A cardholder's phone QR code (GET /self/people/{id}/qr) is valid this long; it needs
    # master_secret (its key is derived from it).
    qr_seconds: Annotated[int, Meta(ge=10, le=300)] = 60
    # The key sealing bound bank card numbers (hex, 32 bytes; the switch's `bank_card_key`);
    # empty: derived from master_secret (protocols/bank_card.py). Never logged.
    bank_card_key: Annotated[str, Meta(pattern=r"^([0-9a-fA-F]{2}){32}$|^$")] = ""
    # A log-in approves documents only once it is this old (24 h): log-ins made to approve
    # a document of their maker's are refused anyway; this gives everyone else a day to see
    # a new log-in in the audit trail before it can approve. 0 turns the wait off.
    approver_cooling_off_seconds: Annotated[int, Meta(ge=0, le=30 * 86_400)] = 86_400
    pool_max: Annotated[int, Meta(ge=1, le=200)] = 10
    # The reverse proxies in front of the API whose X-Forwarded-For (and -Proto) is believed:
    # comma-separated addresses or networks ("10.0.0.5, 192.168.0.0/24"), or "*" for any peer.
    # Empty (the default): none; the client's address (log-in limits, the audit log) is then
    # the TCP peer's, and a forwarded header is ignored, whoever sends it.
    trusted_proxies: str = ""
    # Cards past their valid_until are cancelled (and refused by the switches) this often.
    expiry_check_seconds: Annotated[float, Meta(ge=0.1, le=86_400)] = 300.0
    # Visitor passes end and patrol checkpoints are judged this often (admin_api/access/).
    access_check_seconds: Annotated[float, Meta(ge=0.1, le=3600)] = 5.0
    # Live streams (server-sent events, e.g. /access/alarms/live): each reads its subtree this
    # often, ends after live_max_seconds (the client reconnects and is authenticated again),
    # and at most live_streams_max are open in this process.
    live_poll_seconds: Annotated[float, Meta(ge=0.05, le=60)] = 1.0
    live_max_seconds: Annotated[float, Meta(ge=1, le=3600)] = 300.0
    live_streams_max: Annotated[int, Meta(ge=1, le=10_000)] = 100
    # Report summaries (GET /tenants/{id}/summary, /merchants/{id}/summary: a whole period of
    # the journal aggregated) run at most this many at once in this process; the others wait
    # their turn, so a room of operators cannot take every core of the database the tills
    # commit to (docs/benchmarks.md, "The web console beside the tills").
    report_queries_max: Annotated[int, Meta(ge=1, le=64)] = 1
    # The switch's operator HTTP port (its --metrics-port), e.g. "http://127.0.0.1:9100": the
    # console's operations page reads /readyz and /metrics there. Empty: not configured (the
    # page then shows only whether the API's own terminal is signed on).
    switch_status_url: Annotated[str, Meta(pattern=r"^(https?://[^\s/?#]+/?)?$")] = ""

    def __post_init__(self) -> None:
        for entry in self.trusted_proxy_list:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                if entry != "*":
                    raise ValueError(f"trusted_proxies: {entry!r} is neither an address nor a "
                                     f"network (env {ENV_PREFIX}TRUSTED_PROXIES)") from None

    @property
    def trusted_proxy_list(self) -> list[str]:
        return [p.strip() for p in self.trusted_proxies.split(",") if p.strip()]

    def __repr__(self) -> str:
        def show(name: str) -> str:
            if name in _SECRETS and getattr(self, name):
                return "'***'"
            if name == "dsn":
                return repr(_redacted(self.dsn))
            return repr(getattr(self, name))

        shown = ", ".join(f"{name}={show(name)}" for name in self.__struct_fields__)
        return f"AdminSettings({shown})"

    @property
    def master_secret_bytes(self) -> bytes:
        return bytes.fromhex(self.master_secret)


_SECRETS = ("switch_terminal_key", "master_secret", "bank_card_key")


def _redacted(dsn: str) -> str:
    """The DSN without its password."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@",
                                                                  ":***@", 1)))


def load_settings(
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> AdminSettings:
    """Merge the TOML file's [admin] table, ONECARD_ADMIN_<NAME> variables and overrides."""
    raw: dict[str, object] = {}
    # Where each value came from, for the error that names it.
    source: dict[str, str] = {}
    if path is not None:
        try:
            with open(path, "rb") as f:
                doc = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(f"cannot read settings file {path}: {exc}") from None
        for key in doc:
            if key not in FILE_TABLES:
                raise SettingsError(f"{path}: unknown table or key {key!r} (a settings file "
                                    "holds the [switch] and [admin] tables)")
        table = doc.get("admin", {})
        if not isinstance(table, dict):
            raise SettingsError(f"{path}: [admin] must be a table")
        raw.update(table)
        source.update((name, f"[admin] of {path}") for name in table)
    env = os.environ if env is None else env
    for name, variable in (("dsn", "ONECARD_DSN"), ("master_secret", "ONECARD_MASTER_SECRET")):
        if name not in raw and env.get(variable):
            raw[name] = env[variable]
            source[name] = f"env {variable}"
    for name in AdminSettings.__struct_fields__:
        value = env.get(ENV_PREFIX + name.upper())
        if value is not None:
            raw[name] = value
            source[name] = f"env {ENV_PREFIX}{name.upper()}"
    for name, flag in (overrides or {}).items():
        if flag is not None:
            raw[name] = flag
            source[name] = "--" + name.replace("_", "-")
    try:
        return msgspec.convert(raw, AdminSettings, strict=False)
    except msgspec.ValidationError as exc:
        message = str(exc)
        if " - at `$." in message:
            what, where = message.rsplit(" - at `$.", 1)
            name = where.rstrip("`")
            if name == "switch_terminal_key":
                what = "must be 32 bytes of hex"
            elif name == "master_secret":
                what = "must be 32 to 64 bytes of hex"
            where = source.get(name, f"env {ENV_PREFIX}{name.upper()}")
            raise SettingsError(f"setting {name} ({where}): {what}") from None
        if "missing required field" in message:
            name = message.rsplit("`", 2)[-2]
            raise SettingsError(f"setting {name} is required (env ONECARD_DSN or "
                                f"{ENV_PREFIX}{name.upper()}, or [admin] {name})") from None
        raise SettingsError(f"invalid settings: {message}") from None
