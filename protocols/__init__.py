"""Wire protocols of OneCard, sans-IO: no sockets, no clocks, no tasks.

`protocols.ocp` is the terminal protocol (OCP) between campus-card terminals and the switch;
`protocols.limits` holds the wire limits that the spec (`docs/protocol.md`) quotes.
`protocols.iso8583` is the bank link (docs/bank-link.md), imported on its own (it needs
pyiso8583 and cryptography). This package imports nothing else of OneCard.
"""

from protocols import ocp

__all__ = ["ocp"]
