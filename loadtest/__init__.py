"""Load on the switch: a lean asyncio OCP generator (for `onecard bench` and the demo) and,
with issue 4, locust users."""

from loadtest.generator import (
    CardPool,
    GeneratorReport,
    LoadGenerator,
    TerminalSpec,
)

__all__ = ["CardPool", "GeneratorReport", "LoadGenerator", "TerminalSpec"]
