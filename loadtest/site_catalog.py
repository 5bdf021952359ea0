"""Which terminals and cards a load test may use, read from the site's PostgreSQL.

    python -m loadtest.site_catalog --dsn postgresql://127.0.0.1/onecard [--terminal-ids 1-200]

prints the catalog as JSON: enabled POS terminals (id, key version, whether the till has a fixed
price), active cards of active accounts, and cards of accounts reported lost. It holds no keys:
whoever has the master secret derives them (`protocols.ocp.derive_terminal_key`).

The locust users run it as a child process (`read_site_catalog_subprocess`): locust
monkey-patches the standard library for gevent, and asyncpg is better kept out of that process.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
from typing import Final

import asyncpg
import msgspec

CARDS_MAX: Final = 1_000_000
"""Most active cards a catalog carries (a random sample beyond that)."""
LOST_CARDS_MAX: Final = 10_000
TERMINALS_MAX: Final = 100_000
CATALOG_READ_SECONDS_MAX: Final = 60.0
"""Deadline of the child process that reads the catalog."""


class CatalogTerminal(msgspec.Struct, frozen=True):
    terminal_id: int
    key_version: int
    fixed_price: bool
    """The till's merchant charges a fixed price: purchases carry amount_fen 0."""


class SiteCatalog(msgspec.Struct, frozen=True):
    terminals: list[CatalogTerminal]
    cards: list[int]
    """Active cards of active accounts."""
    lost_cards: list[int]
    """Active cards whose account is reported lost: purchases are declined CARD_LOST."""


_TERMINALS_SQL = """
SELECT t.id, t.key_version, m.mode = 1 AS fixed_price
FROM terminals t JOIN merchants m ON m.id = t.merchant_id
WHERE t.kind = 1 AND t.status = 0 AND m.kind <> 'system' AND t.id BETWEEN $1 AND $2
ORDER BY t.id LIMIT $3
"""
_CARDS_SQL = """
SELECT c.card_no FROM cards c JOIN accounts a ON a.id = c.account_id
WHERE c.status = 0 AND a.status = $1
ORDER BY c.card_no LIMIT $2
"""


def parse_id_range(text: str) -> tuple[int, int]:
    """`"1-200"` -> (1, 200); `"17"` -> (17, 17); `""` -> everything."""
    text = text.strip()
    if not text:
        return 1, 2**31 - 1
    lo, sep, hi = text.partition("-")
    first = int(lo)
    last = int(hi) if sep else first
    if not 1 <= first <= last:
        raise ValueError(f"terminal id range {text!r}: expected FIRST-LAST with 1 <= FIRST <= LAST")
    return first, last


async def read_site_catalog(conn: asyncpg.Connection, terminal_ids: tuple[int, int]
                            ) -> SiteCatalog:
    terminals = await conn.fetch(_TERMINALS_SQL, terminal_ids[0], terminal_ids[1], TERMINALS_MAX)
    cards = await conn.fetch(_CARDS_SQL, 0, CARDS_MAX)
    lost = await conn.fetch(_CARDS_SQL, 2, LOST_CARDS_MAX)
    return SiteCatalog(
        terminals=[CatalogTerminal(r["id"], r["key_version"], r["fixed_price"])
                   for r in terminals],
        cards=[r["card_no"] for r in cards],
        lost_cards=[r["card_no"] for r in lost],
    )


async def _read(dsn: str, terminal_ids: tuple[int, int]) -> SiteCatalog:
    async with asyncio.timeout(CATALOG_READ_SECONDS_MAX):
        conn = await asyncpg.connect(dsn)
        try:
            return await read_site_catalog(conn, terminal_ids)
        finally:
            await conn.close()


def read_site_catalog_subprocess(dsn: str, terminal_ids: str = "") -> SiteCatalog:
    """The catalog, read by `python -m loadtest.site_catalog` in a child process."""
    out = subprocess.run(
        [sys.executable, "-m", "loadtest.site_catalog", "--dsn", dsn,
         "--terminal-ids", terminal_ids],
        capture_output=True, timeout=CATALOG_READ_SECONDS_MAX + 10, check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(
            "reading the site catalog failed: " + out.stderr.decode(errors="replace").strip()
        )
    return msgspec.json.decode(out.stdout, type=SiteCatalog)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.site_catalog",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", required=True, help="the site's PostgreSQL")
    parser.add_argument("--terminal-ids", default="", help="only terminals FIRST-LAST")
    args = parser.parse_args(argv)
    try:
        ids = parse_id_range(args.terminal_ids)
        catalog = asyncio.run(_read(args.dsn, ids))
    except (ValueError, OSError, asyncpg.PostgresError) as exc:
        print(f"site_catalog: {exc}", file=sys.stderr)
        return 2
    sys.stdout.buffer.write(msgspec.json.encode(catalog))
    return 0


if __name__ == "__main__":
    sys.exit(main())
