"""The switch's error tree. Declines are results, not exceptions."""


class SwitchError(Exception):
    """Root of every error the switch raises on purpose."""


class ConfigError(SwitchError):
    """A setting is missing or wrong; the message names the setting."""


class JournalError(SwitchError):
    """A group commit failed; nothing in its batch was acknowledged."""


class RecoveryError(SwitchError):
    """The state in PostgreSQL cannot be loaded (schema, checkpoint or journal is not sound)."""
