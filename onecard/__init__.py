"""The OneCard application shell: the `onecard` command, the demo, the benchmark driver.

This package composes the layers (switch, simulators, load generator, migrations); no layer
imports it.
"""
