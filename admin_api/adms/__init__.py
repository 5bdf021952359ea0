"""The ZKTeco ADMS ("iclock") push edge: attendance and door terminals a site already owns.

A separate Litestar app (`onecard adms`), not routes of the admin API: devices authenticate by
serial number only, so they get a port of their own on the devices' network, never the admin
API's. It imports `protocols` (the text codec, protocols/adms.py) and the admin API's store,
nothing of the switch. docs/adms.md is the subset served.

    app = admin_api.adms.create_adms_app(dsn)
"""

from admin_api.adms._app import AdmsStatistics, create_adms_app, reconcile_users

__all__ = ["AdmsStatistics", "create_adms_app", "reconcile_users"]
