"""Load on the switch: a lean asyncio OCP generator (for `onecard bench` and the demo), and
locust users.

The locust side is `loadtest/locustfile.py` and `loadtest/ocp_user.py` (the switch, over OCP),
and `loadtest/locustfile_admin.py` and `loadtest/admin_user.py` (the admin API, over HTTP); only
locust imports them, because importing locust monkey-patches the standard library for gevent.
Importing this package never imports locust. Their locust-free parts: `loadtest.ocp_session`
(one terminal on a blocking socket), `loadtest.load_plan` (which terminals and cards),
`loadtest.site_catalog` (read those from PostgreSQL), `loadtest.admin_plan` (the admin users'
log-ins and request names).
"""

from loadtest.generator import (
    CardPool,
    GeneratorReport,
    LoadGenerator,
    TerminalSpec,
)

__all__ = ["CardPool", "GeneratorReport", "LoadGenerator", "TerminalSpec"]
