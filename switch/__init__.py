"""The OneCard transaction switch: asyncio + uvloop runtime around the OCP protocol and the
Cython balance cache, with a group-commit journal in PostgreSQL."""

from switch._errors import ConfigError, JournalError, RecoveryError, SwitchError
from switch._journal import Journal
from switch._recovery import RecoveryReport, recover
from switch._server import Runtime, run_switch
from switch._settings import SwitchSettings, load_settings

__all__ = [
    "ConfigError",
    "Journal",
    "JournalError",
    "RecoveryError",
    "RecoveryReport",
    "Runtime",
    "SwitchError",
    "SwitchSettings",
    "load_settings",
    "recover",
    "run_switch",
]
