"""Load on the switch with locust: `locust -f loadtest/locustfile.py --host ocp://HOST:PORT`.

docs/operations.md, "Load tests with locust", has the commands (standalone, headless with CSV,
distributed). The users live in `loadtest/ocp_user.py`: `PosTerminalUser` speaks OCP over TCP,
one user per terminal. The admin API's users (FastHttpUser, another --host) are in
`loadtest/locustfile_admin.py`.

Only locust imports this file: `import loadtest` never imports locust (which monkey-patches the
standard library for gevent).
"""

import sys
from pathlib import Path

try:
    import loadtest  # noqa: F401 - installed (pip install -e .), or run from the repository
except ImportError:  # a checkout that is not installed: the repository root holds the package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtest.ocp_user import PosTerminalUser

__all__ = ["PosTerminalUser"]
