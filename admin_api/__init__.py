"""The admin HTTP API (Litestar on uvicorn): organisation, people, cards, audit, self-service.

It may import only `protocols` (the change events it writes, and OCP to reach the switch as a
privileged terminal); the schema it shares with the switch is in `migrations/`. Money never
moves here except through the switch.

    app = admin_api.create_app(admin_api.load_settings())
"""

from admin_api._app import ROUTES, VERSION, create_app
from admin_api._auth import PERMISSIONS, ROLES, Actor, hash_password
from admin_api._problems import Problem
from admin_api._settings import AdminSettings, SettingsError, load_settings

__all__ = [
    "PERMISSIONS",
    "ROLES",
    "ROUTES",
    "VERSION",
    "Actor",
    "AdminSettings",
    "Problem",
    "SettingsError",
    "create_app",
    "hash_password",
    "load_settings",
]
