import asyncio

import asyncpg

from migrations import SCHEMA_VERSION, apply_migrations, check_schema, schema_version


def test_migrate_from_nothing_then_again_is_a_no_op(empty_db_dsn: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(empty_db_dsn)
        try:
            assert await schema_version(conn) == 0
            first = await apply_migrations(conn)
            assert [m.version for m in first] == list(range(1, SCHEMA_VERSION + 1))
            assert await apply_migrations(conn) == []
            await check_schema(conn)
            tables = {
                r["tablename"]
                for r in await conn.fetch(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                )
            }
            assert {"tenants", "accounts", "cards", "merchants", "terminals", "journal",
                    "checkpoints"} <= tables
        finally:
            await conn.close()

    asyncio.run(run())


def test_journal_refuses_a_row_that_does_not_balance(db_dsn: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(db_dsn)
        try:
            row = [1, 1, 0, 7, 1, 0, 1, 1, 1, 1, 1, 500, -500, 0, 499, 0, 0, 0, 0, 0]
            try:
                await conn.execute(
                    "INSERT INTO journal (lsn, kind, code, terminal_id, txn_seq, ref_txn_seq,"
                    " card_no, account_id, merchant_id, tenant_id, merchant_tenant_id, amount_fen,"
                    " main_delta_fen, subsidy_delta_fen, merchant_delta_fen, held_delta_fen,"
                    " main_fen, subsidy_fen, expires_s, now_s) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,"
                    "$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20)",
                    *row,
                )
            except asyncpg.CheckViolationError:
                pass
            else:
                raise AssertionError("an unbalanced journal row was accepted")
        finally:
            await conn.close()

    asyncio.run(run())
