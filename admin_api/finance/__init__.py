"""Finance (docs/finance.md): the bank's daily file and its reconciliation, the documents that
resolve a difference, bank top-ups, and journal vouchers for the finance system.

The domain's routes are `ROUTES`; `read_bank_file` and `reconcile` are shared with
`onecard reconcile`.
"""

from admin_api.finance._bankfile import (
    HEADER,
    BankFile,
    BankFileError,
    read_bank_file,
    write_bank_file,
)
from admin_api.finance._reconcile import (
    FileResult,
    ReconcileConflict,
    ReconcileRefused,
    ensure_bank_clearing,
    reconcile,
)
from admin_api.finance._routes import ROUTES
from admin_api.finance._vouchers import VoucherLine, day_vouchers

__all__ = [
    "HEADER",
    "ROUTES",
    "BankFile",
    "BankFileError",
    "FileResult",
    "ReconcileConflict",
    "ReconcileRefused",
    "VoucherLine",
    "day_vouchers",
    "ensure_bank_clearing",
    "read_bank_file",
    "reconcile",
    "write_bank_file",
]
