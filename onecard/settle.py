"""`onecard settle --tenant T --date D [--json PATH] [--dsn DSN]`: a business day's settlement.

Computed from the journal alone (admin_api.settlement, docs/settlement.md), read-only: it
prints a summary and, with --json, writes the canonical figures (the same bytes every run, and
the same as `GET /tenants/{T}/settlements/{D}` returns under "settlement"). Confirming a day is
an approved document, through the admin API with a finance log-in
(`POST /tenants/{T}/settlements/{D}/confirm`, then another person's approval). A bad tenant
or day is one line on stderr and exit code 2, nothing changed.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("settle", help="compute a tenant's business-day settlement")
    p.add_argument("--tenant", type=int, required=True, help="the tenant id")
    p.add_argument("--date", required=True, help="the business day, YYYY-MM-DD")
    p.add_argument("--json", help="write the figures as JSON to this path")
    p.add_argument("--dsn", help="PostgreSQL DSN (default: $ONECARD_DSN)")
    p.set_defaults(func=cmd_settle)


def _yuan(fen: int) -> str:
    sign = "-" if fen < 0 else ""
    return f"{sign}{abs(fen) // 100:,}.{abs(fen) % 100:02d}"


def render(s: Any, status: str) -> str:
    t = s.totals
    lines = [
        f"settlement of tenant {s.tenant_id}, business day {s.business_day} ({status})",
        f"  from {s.start_at.isoformat()} to {s.end_at.isoformat()} (cutover "
        f"{s.cutover_s // 3600:02d}:{s.cutover_s // 60 % 60:02d}, UTC offset {s.utc_offset_s} s)",
        f"  journal rows {s.journal_rows:,}; merchants {t.merchants}",
        f"  {'merchant':>8} {'count':>9} {'gross':>14} {'reversals':>12} {'fee':>10} "
        f"{'net':>14}  due",
    ]
    for m in s.merchants:
        lines.append(f"  {m.merchant_id:>8} {m.count:>9,} {_yuan(m.gross_fen):>14} "
                     f"{_yuan(m.reversals_fen):>12} {_yuan(m.fee_fen):>10} "
                     f"{_yuan(m.net_fen):>14}  {m.due_on} ({m.settlement_cycle})")
    lines.append(f"  {'total':>8} {t.count:>9,} {_yuan(t.gross_fen):>14} "
                 f"{_yuan(t.reversals_fen):>12} {_yuan(t.fee_fen):>10} {_yuan(t.net_fen):>14}")
    for c in s.clearing:
        who = (f"tenant {c.debtor_tenant_id} owes tenant {c.creditor_tenant_id} "
               f"{_yuan(c.net_fen)}" if c.net_fen else "nobody owes anything")
        lines.append(f"  clearing with tenant {c.other_tenant_id}: our cards there "
                     f"{_yuan(c.our_cards_there_fen)}, theirs here {_yuan(c.their_cards_here_fen)}"
                     f": {who}")
    lines += [
        f"  bank top-ups {s.bank.topups.in_count:,} = {_yuan(s.bank.topups.in_fen)}; payouts "
        f"{_yuan(s.bank.payouts_fen)}",
        f"  cash in {_yuan(s.cash.in_fen)}, out {_yuan(s.cash.out_fen)}; subsidy issued "
        f"{_yuan(s.subsidy.issued.in_fen)}, spent {_yuan(s.subsidy.spent_fen)}",
        f"  float at cutover: main {_yuan(s.float_close.main_fen)}, subsidy "
        f"{_yuan(s.float_close.subsidy_fen)} (opened at {_yuan(s.float_open.total_fen)})",
        f"  balanced: {'yes' if s.balanced else 'NO'}",
    ]
    return "\n".join(lines)


def cmd_settle(args: argparse.Namespace) -> int:
    import asyncpg

    from admin_api import Problem
    from admin_api.settlement import compute_settlement, encode

    dsn = args.dsn or os.environ.get("ONECARD_DSN")
    if not dsn:
        print("onecard settle: give --dsn or set ONECARD_DSN", file=sys.stderr)
        return 2
    try:
        day = dt.date.fromisoformat(args.date)
    except ValueError:
        print(f"onecard settle: --date {args.date!r} is not a day (YYYY-MM-DD)", file=sys.stderr)
        return 2

    async def run() -> tuple[Any, str]:
        conn = await asyncpg.connect(dsn)
        try:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                s = await compute_settlement(conn, args.tenant, day)
                status = await conn.fetchval("SELECT status FROM settlements WHERE tenant_id"
                                             " = $1 AND business_day = $2", args.tenant, day)
            return s, status or "open"
        finally:
            await conn.close()

    try:
        s, status = asyncio.run(run())
    except Problem as exc:
        print(f"onecard settle: {exc.status} {exc.slug}: {exc.detail}", file=sys.stderr)
        return 2
    print(render(s, status))
    if args.json:
        Path(args.json).write_bytes(encode(s))
        print(f"  figures written to {args.json}")
    return 0 if s.balanced else 1
