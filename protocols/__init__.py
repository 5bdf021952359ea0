"""Wire protocols of OneCard, sans-IO: no sockets, no clocks, no tasks.

`protocols.ocp` is the terminal protocol (OCP) between campus-card terminals and the switch;
`protocols.limits` holds the wire limits that the spec (`docs/protocol.md`) quotes. This package
imports nothing else of OneCard: only the standard library and msgspec.
"""

from protocols import ocp

__all__ = ["ocp"]
