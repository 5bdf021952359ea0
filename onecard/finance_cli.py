"""`onecard reconcile`: import the bank's daily top-up file and match it (docs/finance.md).

    onecard reconcile --tenant 1 --date 2026-12-01 --file bank-20261201.csv [--dsn DSN]
                      [--json PATH]

The same import as `POST /tenants/{id}/bank-files/{date}`, against the database directly:
the whole file is checked first (a bad one is refused, line by line, and nothing changes),
then matched by RRN, each difference an exception for finance to resolve through the admin
API. Audited as the operating-system user who ran it. Exit 0 when the file is imported (or was
already), 2 when refused (bad file or arguments), 3 when another file holds the day.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import getpass
import os
import sys
from pathlib import Path


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("reconcile", help="import the bank's daily top-up file and reconcile it "
                       "with our top-ups (docs/finance.md)")
    p.add_argument("--tenant", type=int, required=True, help="the tenant's id")
    p.add_argument("--date", type=dt.date.fromisoformat, required=True, metavar="YYYY-MM-DD",
                   help="the business day of the file")
    p.add_argument("--file", required=True, help="the bank's file (CSV, docs/bank-link.md)")
    p.add_argument("--dsn", help="PostgreSQL DSN (default: $ONECARD_DSN)")
    p.add_argument("--json", help="also write the result as JSON to this path")
    p.set_defaults(func=cmd_reconcile)


def cmd_reconcile(args: argparse.Namespace) -> int:
    import asyncpg
    import msgspec

    from admin_api import Actor
    from admin_api._store import change
    from admin_api.finance import (
        BankFileError,
        ReconcileConflict,
        ReconcileRefused,
        read_bank_file,
        reconcile,
    )
    from admin_api.finance._bankfile import BANK_FILE_BYTES_MAX

    dsn = args.dsn or os.environ.get("ONECARD_DSN")
    if not dsn:
        print("onecard reconcile: give --dsn or set ONECARD_DSN", file=sys.stderr)
        return 2
    path = Path(args.file)
    size = path.stat().st_size
    if size > BANK_FILE_BYTES_MAX:
        print(f"onecard reconcile: {path}: the file is {size} bytes, more than "
              f"{BANK_FILE_BYTES_MAX}; nothing was changed", file=sys.stderr)
        return 2
    try:
        bank_file = read_bank_file(path.read_bytes(), args.date)
    except BankFileError as exc:
        print(f"onecard reconcile: {path}: the bank file is refused, nothing was changed:",
              file=sys.stderr)
        for p in exc.problems:
            print(f"  {'line ' + str(p.line) if p.line else 'file'}: {p.message}",
                  file=sys.stderr)
        return 2

    async def run() -> object:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
        try:
            node = await pool.fetchrow("SELECT id, path FROM org_nodes WHERE kind = 'tenant'"
                                       " AND tenant_id = $1", args.tenant)
            if node is None:
                raise ReconcileRefused(f"no tenant {args.tenant} in the organisation (onecard "
                                       "admin-init adopts tenants)")
            who = f"cli:{getpass.getuser()}"
            actor = Actor(user_id=0, username=who, role="system", node_id=node["id"],
                          node_path=list(node["path"]))
            async with change(pool, actor) as tx:
                out = await reconcile(tx.conn, args.tenant, list(node["path"]), bank_file, who)
                if not out.repeated:
                    tx.audit("bank_file.import", "bank_file", out.id, list(node["path"]),
                             after=out)
            return out
        finally:
            await pool.close()

    try:
        out = asyncio.run(run())
    except ReconcileRefused as exc:
        print(f"onecard reconcile: {exc}; nothing was changed", file=sys.stderr)
        return 2
    except ReconcileConflict as exc:
        print(f"onecard reconcile: {exc}", file=sys.stderr)
        return 3
    from admin_api.finance import FileResult

    assert isinstance(out, FileResult)
    again = " (this file was imported before: its first result)" if out.repeated else ""
    print(f"bank file of {out.business_date} for tenant {out.tenant_id}: {out.lines_count} "
          f"lines, {out.matched} matched, {out.exceptions} exceptions (ours only "
          f"{out.ours_only}, bank's only {out.bank_only}, amount differs "
          f"{out.amount_differs}){again}")
    if args.json:
        Path(args.json).write_bytes(msgspec.json.format(msgspec.json.encode(out)))
    return 0
