"""The ledger's result codes are the protocol's response codes.

`ledger_ext` may not import `protocols`, so each keeps its own table; the switch passes ledger
codes straight to terminals, and refuses to import if a code differs in number or name.
"""

from ledger_ext import Code
from protocols.ocp import ResponseCode

for _code in Code:
    _wire = ResponseCode(int(_code))  # raises ValueError for a code the protocol lacks
    assert _wire.name == _code.name, f"ledger code {_code!r} is {_wire!r} on the wire"

# Limits both layers enforce must be the same numbers.
from ledger_ext import AMOUNT_FEN_MAX, TERMINAL_WINDOW_MAX  # noqa: E402
from protocols import limits as wire  # noqa: E402
from switch import limits  # noqa: E402

assert AMOUNT_FEN_MAX == wire.AMOUNT_FEN_MAX
assert TERMINAL_WINDOW_MAX == wire.TXN_SEQ_WINDOW == limits.PIPELINE_REQUESTS_MAX
