"""trio simulators of terminals and of the bank host, speaking OCP through `protocols`.

Issue 4 builds them; until then `loadtest.generator` (asyncio) drives the switch for the demo,
the benchmark and the crash tests.
"""
