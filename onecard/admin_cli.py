"""`onecard admin`, `onecard admin-init` and `onecard openapi`: the admin API's commands."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncpg

    from admin_api._routes_merchants import MealWindow

PASSWORD_ENV = "ONECARD_ADMIN_PASSWORD"
MEAL_WINDOWS = "breakfast=06:30-09:00,lunch=11:00-13:30,dinner=17:00-19:30"


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("admin", help="run the admin HTTP API (uvicorn on uvloop)")
    p.add_argument("--config", help="TOML settings file ([admin] table)")
    p.add_argument("--dsn", help="PostgreSQL DSN (default: $ONECARD_DSN)")
    p.add_argument("--host", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port (default 8080; 0 picks a free one)")
    p.add_argument("--ready-file", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_admin)

    p = sub.add_parser("admin-init", help="create the platform node, the first tenant and the "
                       "first admin; adopt the tenants and accounts that exist")
    p.add_argument("--dsn", help="PostgreSQL DSN (default: $ONECARD_DSN)")
    p.add_argument("--tenant", metavar="NAME", help="create this tenant (a campus, park or "
                   "community) unless one has this name; required while the site has none")
    p.add_argument("--utc-offset", type=_utc_offset, default="+08:00", metavar="+HH:MM",
                   help="the new tenant's local time (default +08:00)")
    p.add_argument("--meal-windows", type=_meal_windows, metavar="NAME=HH:MM-HH:MM,...",
                   default=MEAL_WINDOWS,
                   help="the new tenant's meal windows, local time (default %(default)s; "
                   "'' for none)")
    p.add_argument("--username", default="admin", help="the first platform admin (default admin)")
    p.add_argument("--platform-name", default="Headquarters")
    p.add_argument("--password-file", help=f"read the password from this file (else "
                   f"${PASSWORD_ENV}, else ask)")
    p.set_defaults(func=cmd_admin_init)

    p = sub.add_parser("adms", help="serve the ZKTeco ADMS (iclock) push protocol to the "
                       "site's own attendance and door terminals (docs/adms.md)")
    p.add_argument("--dsn", help="PostgreSQL DSN (default: $ONECARD_DSN)")
    p.add_argument("--host", default=os.environ.get("ONECARD_ADMS_HOST", "127.0.0.1"),
                   help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=int(os.environ.get("ONECARD_ADMS_PORT", "8081")),
                   help="listen port (default 8081, the devices' usual; 0 picks a free one)")
    p.add_argument("--reconcile-seconds", type=float,
                   default=float(os.environ.get("ONECARD_ADMS_RECONCILE_SECONDS", "5")),
                   help="compare a polling device's users and templates at most this often "
                   "(default 5)")
    p.add_argument("--resend-seconds", type=float,
                   default=float(os.environ.get("ONECARD_ADMS_RESEND_SECONDS", "60")),
                   help="hand out again commands not acknowledged within this long "
                   "(default 60)")
    p.add_argument("--ready-file", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_adms)

    p = sub.add_parser("openapi", help="print the admin API's OpenAPI document (JSON)")
    p.add_argument("--output", help="write it to this file instead")
    p.set_defaults(func=cmd_openapi)


def cmd_openapi(args: argparse.Namespace) -> int:
    from admin_api import AdminSettings, create_app

    app = create_app(AdminSettings(dsn="postgresql://unused/openapi"))
    text = json.dumps(app.openapi_schema.to_schema(), indent=2, sort_keys=True) + "\n"
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def cmd_admin(args: argparse.Namespace) -> int:
    import uvicorn

    from admin_api import SettingsError, create_app, load_settings

    try:
        settings = load_settings(Path(args.config) if args.config else None, overrides={
            "dsn": args.dsn, "host": args.host, "port": args.port})
    except SettingsError as exc:
        print(f"onecard admin: {exc}", file=sys.stderr)
        return 2

    async def check_database() -> None:
        await (await _migrated_connection(settings.dsn)).close()

    asyncio.run(check_database())
    listener = _listen(settings.host, settings.port)
    app = create_app(settings)
    # X-Forwarded-For only from the proxies named in `trusted_proxies` (uvicorn's own default
    # would believe any local process).
    config = uvicorn.Config(app, host=settings.host, port=settings.port, loop="uvloop",
                            http="h11", lifespan="on", access_log=False, log_level="warning",
                            server_header=False, proxy_headers=bool(settings.trusted_proxy_list),
                            forwarded_allow_ips=settings.trusted_proxy_list or None)
    server = uvicorn.Server(config)
    ready_file = args.ready_file

    async def serve() -> None:
        task = asyncio.create_task(server.serve(sockets=[listener]))
        while not server.started and not task.done():  # noqa: ASYNC110 - uvicorn has no event
            await asyncio.sleep(0.05)
        if server.started:
            sock = server.servers[0].sockets[0]
            host, port = sock.getsockname()[:2]
            print(f"onecard admin: serving on http://{host}:{port} (docs at /docs)",
                  file=sys.stderr, flush=True)
            if ready_file:
                tmp = ready_file + ".tmp"
                Path(tmp).write_text(json.dumps({"host": host, "port": port,  # noqa: ASYNC240
                                                 "pid": os.getpid()}))
                os.replace(tmp, ready_file)
        await task

    asyncio.run(serve())
    return 0 if server.started else 1


def cmd_adms(args: argparse.Namespace) -> int:
    import uvicorn

    from admin_api.adms import create_adms_app

    dsn = args.dsn or os.environ.get("ONECARD_DSN")
    if not dsn:
        print("onecard adms: no database: give --dsn or set ONECARD_DSN", file=sys.stderr)
        return 2

    async def check_database() -> None:
        await (await _migrated_connection(dsn)).close()

    asyncio.run(check_database())
    listener = _listen(args.host, args.port)
    app = create_adms_app(dsn, reconcile_seconds=args.reconcile_seconds,
                          resend_seconds=args.resend_seconds)
    config = uvicorn.Config(app, host=args.host, port=args.port, loop="uvloop",
                            http="h11", lifespan="on", access_log=False, log_level="warning",
                            server_header=False)
    server = uvicorn.Server(config)

    async def serve() -> None:
        task = asyncio.create_task(server.serve(sockets=[listener]))
        while not server.started and not task.done():  # noqa: ASYNC110 - uvicorn has no event
            await asyncio.sleep(0.05)
        if server.started:
            host, port = server.servers[0].sockets[0].getsockname()[:2]
            print(f"onecard adms: serving /iclock on http://{host}:{port}", file=sys.stderr,
                  flush=True)
            if args.ready_file:
                tmp = args.ready_file + ".tmp"
                Path(tmp).write_text(json.dumps({"host": host, "port": port,  # noqa: ASYNC240
                                                 "pid": os.getpid()}))
                os.replace(tmp, args.ready_file)
        await task

    asyncio.run(serve())
    return 0 if server.started else 1


async def _migrated_connection(dsn: str) -> asyncpg.Connection:
    """A connection to a database at this code's schema version; MigrationError (which says
    to run `onecard migrate`) otherwise."""
    import asyncpg

    from migrations import check_schema

    conn = await asyncpg.connect(dsn)
    try:
        await check_schema(conn)
    except BaseException:
        await conn.close()
        raise
    return conn


def _listen(host: str, port: int) -> socket.socket:
    """The admin API's listening socket, bound here so a port in use is one line."""
    from switch import listen_failure

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as exc:
        raise listen_failure(exc, "admin port", host, port) from None


def _password(args: argparse.Namespace) -> str:
    if args.password_file:
        return Path(args.password_file).read_text().strip()
    if os.environ.get(PASSWORD_ENV):
        return os.environ[PASSWORD_ENV]
    import getpass

    return getpass.getpass(f"password for {args.username}: ")


def _minute(text: str) -> int:
    hours, _, minutes = text.strip().partition(":")
    if not (hours.isdigit() and minutes.isdigit() and len(minutes) == 2 and int(minutes) < 60):
        raise argparse.ArgumentTypeError(f"{text!r} is not HH:MM")
    return int(hours) * 60 + int(minutes)


def _utc_offset(text: str) -> int:
    if text[:1] not in "+-" or not text[1:] or _minute(text[1:]) > 14 * 60:
        raise argparse.ArgumentTypeError(f"{text!r} is not an offset from -14:00 to +14:00")
    return (-60 if text[0] == "-" else 60) * _minute(text[1:])


def _meal_windows(text: str) -> tuple[MealWindow, ...]:
    """"breakfast=06:30-09:00,lunch=11:00-13:30" as meal windows (checked by msgspec)."""
    import msgspec

    from admin_api._routes_merchants import MealWindow

    windows = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, span = item.partition("=")
        start, _, end = span.partition("-")
        if not (name and start and end):
            raise argparse.ArgumentTypeError(f"{item!r} is not NAME=HH:MM-HH:MM")
        try:
            windows.append(msgspec.convert({"name": name.strip(), "start_minute": _minute(start),
                                            "end_minute": _minute(end)}, MealWindow))
        except msgspec.ValidationError as exc:
            raise argparse.ArgumentTypeError(f"meal window {item!r}: {exc}") from None
    return tuple(windows)


def cmd_admin_init(args: argparse.Namespace) -> int:
    from admin_api import Problem
    from admin_api._bootstrap import TenantPlan, bootstrap
    from admin_api._passwords import weak

    dsn = args.dsn or os.environ.get("ONECARD_DSN")
    if not dsn:
        print("onecard admin-init: give --dsn or set ONECARD_DSN", file=sys.stderr)
        return 2
    password = _password(args)
    why = weak(password, args.username)
    if why is not None:
        print(f"onecard admin-init: the password is refused: {why}", file=sys.stderr)
        return 2

    tenant = (TenantPlan(args.tenant, args.utc_offset, args.meal_windows) if args.tenant
              else None)

    async def run() -> str:
        conn = await _migrated_connection(dsn)
        try:
            report = await bootstrap(conn, platform_name=args.platform_name,
                                     username=args.username, password=password, tenant=tenant)
        finally:
            await conn.close()
        made = (f"tenant {report.tenant_created} {args.tenant!r} created; " if report.tenant_created
                else f"tenant {args.tenant!r} existed; " if args.tenant else "")
        return (f"platform node {report.platform_node_id}; {made}tenant nodes created "
                f"{report.tenant_nodes_created}; people adopted {report.people_created}; "
                f"system accounts created {report.system_accounts_created}; admin terminal "
                f"{report.admin_terminal_id}; admin {args.username!r} "
                f"{'created' if report.admin_created else 'existed'}")

    try:
        print(asyncio.run(run()))
    except Problem as exc:
        print(f"onecard admin-init: {exc.detail}", file=sys.stderr)
        return 1
    return 0
