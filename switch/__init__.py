"""The OneCard transaction switch: asyncio + uvloop runtime around the OCP protocol and the
Cython balance cache, with a group-commit journal in PostgreSQL."""

from switch._errors import (
    ConfigError,
    JournalError,
    RecoveryError,
    SiteLockLost,
    StartupError,
    SwitchError,
    listen_failure,
)
from switch._journal import Journal
from switch._recovery import RecoveryReport, recover
from switch._server import Runtime, run_switch
from switch._settings import SwitchSettings, load_settings, redacted_url

__all__ = [
    "ConfigError",
    "Journal",
    "JournalError",
    "RecoveryError",
    "RecoveryReport",
    "Runtime",
    "SiteLockLost",
    "StartupError",
    "SwitchError",
    "SwitchSettings",
    "listen_failure",
    "load_settings",
    "recover",
    "redacted_url",
    "run_switch",
]
