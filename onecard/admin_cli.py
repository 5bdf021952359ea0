"""`onecard admin`, `onecard admin-init` and `onecard openapi`: the admin API's commands."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

PASSWORD_ENV = "ONECARD_ADMIN_PASSWORD"


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("admin", help="run the admin HTTP API (uvicorn on uvloop)")
    p.add_argument("--config", help="TOML settings file ([admin] table)")
    p.add_argument("--dsn", help="PostgreSQL DSN (default: $ONECARD_DSN)")
    p.add_argument("--host", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port (default 8080; 0 picks a free one)")
    p.add_argument("--ready-file", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_admin)

    p = sub.add_parser("admin-init", help="create the platform node and its first admin; adopt "
                       "the tenants and accounts that exist")
    p.add_argument("--dsn", help="PostgreSQL DSN (default: $ONECARD_DSN)")
    p.add_argument("--username", default="admin", help="the first platform admin (default admin)")
    p.add_argument("--platform-name", default="Headquarters")
    p.add_argument("--password-file", help=f"read the password from this file (else "
                   f"${PASSWORD_ENV}, else ask)")
    p.set_defaults(func=cmd_admin_init)

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
        task = asyncio.create_task(server.serve())
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


def _password(args: argparse.Namespace) -> str:
    if args.password_file:
        return Path(args.password_file).read_text().strip()
    if os.environ.get(PASSWORD_ENV):
        return os.environ[PASSWORD_ENV]
    import getpass

    return getpass.getpass(f"password for {args.username}: ")


def cmd_admin_init(args: argparse.Namespace) -> int:
    import asyncpg

    from admin_api._bootstrap import bootstrap

    dsn = args.dsn or os.environ.get("ONECARD_DSN")
    if not dsn:
        print("onecard admin-init: give --dsn or set ONECARD_DSN", file=sys.stderr)
        return 2
    password = _password(args)
    if len(password) < 10:
        print("onecard admin-init: the password must have at least 10 characters",
              file=sys.stderr)
        return 2

    async def run() -> str:
        conn = await asyncpg.connect(dsn)
        try:
            report = await bootstrap(conn, platform_name=args.platform_name,
                                     username=args.username, password=password)
        finally:
            await conn.close()
        return (f"platform node {report.platform_node_id}; tenant nodes created "
                f"{report.tenant_nodes_created}; people adopted {report.people_created}; "
                f"system accounts created {report.system_accounts_created}; admin terminal "
                f"{report.admin_terminal_id}; admin {args.username!r} "
                f"{'created' if report.admin_created else 'existed'}")

    print(asyncio.run(run()))
    return 0
