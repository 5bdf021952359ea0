"""The simulator's errors: one root, SimError."""

from __future__ import annotations


class SimError(Exception):
    """Root of every error the simulator raises on purpose."""


class ScenarioError(SimError):
    """A scenario file cannot be read, does not decode, or says something impossible.

    The message names the file and the field (`phases[1].visit[0].weight`), the way a person
    writes it in the TOML.
    """


class UnsupportedTerminalKind(ScenarioError):
    """The scenario asks for terminals the switch does not speak yet (door, kiosk, ...)."""
