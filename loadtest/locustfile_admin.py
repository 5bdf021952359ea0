"""Load on the admin API with locust: `locust -f loadtest/locustfile_admin.py --host
http://HOST:8080`.

docs/operations.md, "Load tests with locust", has the commands. The users live in
`loadtest/admin_user.py` (FastHttpUser): `CardOfficeUser`, `CashierUser`, `CardholderUser`,
`AuditorUser`, `ReportsUser`; name some on the command line to run only those. Money requests
(the cashier's top-ups) need the switch the admin API talks to: without it they answer 503.
The OCP users of the switch are in `loadtest/locustfile.py` (another --host: run them as a
second locust process).

Only locust imports this file: `import loadtest` never imports locust (which monkey-patches the
standard library for gevent).
"""

import sys
from pathlib import Path

try:
    import loadtest  # noqa: F401 - installed (pip install -e .), or run from the repository
except ImportError:  # a checkout that is not installed: the repository root holds the package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtest.admin_user import (
    AuditorUser,
    CardholderUser,
    CardOfficeUser,
    CashierUser,
    ReportsUser,
)

__all__ = ["AuditorUser", "CardOfficeUser", "CardholderUser", "CashierUser", "ReportsUser"]
