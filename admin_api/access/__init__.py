"""Access control in the admin API (issue 12): doors, rules, records, alarms, visitors, patrol.

The first domain package of admin_api/ (shared/design/architecture.md): its routes, queries
and Structs live here, over the shared auth, problems and store. The decision itself is the
switch's (docs/access.md); these routes change its rules (each change on the change feed as
AccessChanged) and read what it recorded. docs/access-admin.md is the guide.
"""

from admin_api.access import (
    _biometrics,
    _commands,
    _doors,
    _live,
    _maps,
    _monitor,
    _patrol,
    _rules,
    _visitors,
)
from admin_api.access._tasks import (
    PatrolCheck,
    check_patrols,
    expire_passes,
    run_access_tasks,
)

ROUTES = [*_doors.ROUTES, *_rules.ROUTES, *_monitor.ROUTES, *_visitors.ROUTES,
          *_patrol.ROUTES, *_biometrics.ROUTES, *_live.ROUTES, *_maps.ROUTES,
          *_commands.ROUTES]

__all__ = ["ROUTES", "PatrolCheck", "check_patrols", "expire_passes", "run_access_tasks"]
