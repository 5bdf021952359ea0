"""Prove from the database alone that money was conserved.

For the latest checkpoint: every account's and merchant's balance equals its opening balance plus
every journal row up to the checkpoint's lsn, and all balances sum to zero. Each journal row is
itself balanced (a CHECK constraint), so the journal as a whole sums to zero too.
"""

from __future__ import annotations

import asyncpg
import msgspec

_ACCOUNTS_SQL = """
WITH cp AS (SELECT * FROM checkpoints ORDER BY lsn DESC, id DESC LIMIT 1),
bal AS (
    SELECT u.account_id, u.main, u.subsidy
    FROM cp, unnest(cp.account_ids, cp.main_fen, cp.subsidy_fen) AS u(account_id, main, subsidy)
),
j AS (
    SELECT account_id, sum(main_delta_fen) AS m, sum(subsidy_delta_fen) AS s
    FROM journal WHERE lsn <= (SELECT lsn FROM cp) AND account_id > 0
    GROUP BY account_id
)
SELECT
    count(*) AS accounts,
    count(bal.account_id) AS in_checkpoint,
    count(*) FILTER (
        WHERE bal.account_id IS NULL
           OR a.opening_main_fen + coalesce(j.m, 0) <> bal.main
           OR a.opening_subsidy_fen + coalesce(j.s, 0) <> bal.subsidy
    ) AS mismatched,
    coalesce(sum(bal.main + bal.subsidy), 0) AS balance_fen
FROM accounts a LEFT JOIN bal ON bal.account_id = a.id LEFT JOIN j ON j.account_id = a.id
"""

_MERCHANTS_SQL = """
WITH cp AS (SELECT * FROM checkpoints ORDER BY lsn DESC, id DESC LIMIT 1),
bal AS (
    SELECT u.merchant_id, u.balance
    FROM cp, unnest(cp.merchant_ids, cp.merchant_balance_fen) AS u(merchant_id, balance)
),
j AS (
    SELECT merchant_id, sum(merchant_delta_fen) AS d
    FROM journal WHERE lsn <= (SELECT lsn FROM cp) AND merchant_id > 0
    GROUP BY merchant_id
)
SELECT
    count(*) AS merchants,
    count(*) FILTER (
        WHERE bal.merchant_id IS NULL OR m.opening_balance_fen + coalesce(j.d, 0) <> bal.balance
    ) AS mismatched,
    coalesce(sum(bal.balance), 0) AS balance_fen
FROM merchants m LEFT JOIN bal ON bal.merchant_id = m.id LEFT JOIN j ON j.merchant_id = m.id
"""


# Rows after the checkpoint: each journal row carries the account's balances after it, so the
# latest row of every account must equal its opening balance plus all of its deltas.
_JOURNAL_SQL = """
WITH last AS (
    SELECT DISTINCT ON (account_id) account_id, main_fen, subsidy_fen
    FROM journal WHERE account_id > 0 ORDER BY account_id, lsn DESC
),
sums AS (
    SELECT account_id, sum(main_delta_fen) AS m, sum(subsidy_delta_fen) AS s
    FROM journal WHERE account_id > 0 GROUP BY account_id
)
SELECT count(*) FILTER (
    WHERE a.opening_main_fen + sums.m <> last.main_fen
       OR a.opening_subsidy_fen + sums.s <> last.subsidy_fen
) AS mismatched
FROM accounts a JOIN last ON last.account_id = a.id JOIN sums ON sums.account_id = a.id
"""


class AuditReport(msgspec.Struct, frozen=True):
    conserved: bool
    checkpoint_lsn: int
    journal_rows: int
    journal_rows_after_checkpoint: int
    accounts: int
    accounts_mismatched: int
    merchants: int
    merchants_mismatched: int
    sum_of_balances_fen: int
    journal_sum_fen: int
    duplicate_requests: int
    reason: str
    journal_balances_mismatched: int = 0


async def audit_conservation(conn: asyncpg.Connection) -> AuditReport:
    """Run every check on one snapshot of the database (a checkpoint written meanwhile cannot
    make the account and merchant sums come from two different checkpoints)."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        return await _audit(conn)


async def _audit(conn: asyncpg.Connection) -> AuditReport:
    cp = await conn.fetchrow("SELECT lsn FROM checkpoints ORDER BY lsn DESC, id DESC LIMIT 1")
    rows = await conn.fetchrow(
        "SELECT count(*) AS n, coalesce(sum(main_delta_fen + subsidy_delta_fen"
        " + merchant_delta_fen), 0) AS s, coalesce(max(lsn), 0) AS max_lsn FROM journal"
    )
    duplicates = await conn.fetchval(
        "SELECT count(*) FROM (SELECT 1 FROM journal GROUP BY terminal_id, txn_seq"
        " HAVING count(*) > 1) d"
    )
    if cp is None:
        return AuditReport(False, 0, rows["n"], rows["n"], 0, 0, 0, 0, 0, int(rows["s"]),
                           duplicates,
                           "no checkpoint in the database")
    acc = await conn.fetchrow(_ACCOUNTS_SQL)
    mer = await conn.fetchrow(_MERCHANTS_SQL)
    after = await conn.fetchval("SELECT count(*) FROM journal WHERE lsn > $1", cp["lsn"])
    journal_mismatched = await conn.fetchval(_JOURNAL_SQL)
    # sum() of bigint is numeric in PostgreSQL (a Decimal here): money is an int, always.
    total = int(acc["balance_fen"]) + int(mer["balance_fen"])
    journal_sum = int(rows["s"])
    problems = []
    if acc["mismatched"]:
        problems.append(f"{acc['mismatched']} accounts differ from opening + journal")
    if mer["mismatched"]:
        problems.append(f"{mer['mismatched']} merchants differ from opening + journal")
    if total != 0:
        problems.append(f"balances sum to {total} fen, not 0")
    if journal_sum != 0:
        problems.append(f"journal sums to {journal_sum} fen, not 0")
    if duplicates:
        problems.append(f"{duplicates} requests journaled twice")
    if journal_mismatched:
        problems.append(f"{journal_mismatched} accounts whose latest journal row differs from "
                        "opening + journal")
    return AuditReport(
        conserved=not problems,
        checkpoint_lsn=cp["lsn"],
        journal_rows=rows["n"],
        journal_rows_after_checkpoint=after,
        accounts=acc["accounts"],
        accounts_mismatched=acc["mismatched"],
        merchants=mer["merchants"],
        merchants_mismatched=mer["mismatched"],
        sum_of_balances_fen=total,
        journal_sum_fen=journal_sum,
        duplicate_requests=duplicates,
        reason="; ".join(problems) or "every balance = opening + journal; all balances sum to 0",
        journal_balances_mismatched=journal_mismatched,
    )
