#!/usr/bin/env python3
"""Cost of ADMS user and template sync (docs/adms.md): a door device every person of a tenant
may open, each with one 1.5 KiB fingerprint, synced from nothing, then compared at rest.

    python bench/bench_adms_sync.py [--admin-dsn DSN] [--accounts N] [--json PATH]

A fresh database (`adms_bench_<pid>`, dropped at the end) is migrated and seeded with
`--accounts` accounts over the demo's two tenants (onecard.seed); a department grant on the
door covers tenant 1. Then, in this process, over one asyncpg pool: comparisons
(`_sync.reconcile`) and drains (hand-out of a batch and its acknowledgement, as a device's
poll and devicecmd do) until nothing is left, and ten comparisons with nothing to change.
Reports the commands queued, the rounds (COMMANDS_PER_RECONCILE_MAX per comparison), the time
of the comparisons, of each poll and acknowledgement, and of a comparison at rest (what every
polling device costs every --reconcile-seconds). A benchmark is a script that writes JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

import asyncpg

from admin_api._bootstrap import bootstrap
from admin_api.adms import _sync
from migrations import apply_migrations
from onecard.seed import SeedPlan, seed_site
from protocols import adms


async def _run(admin_dsn: str, accounts: int) -> dict[str, float | int]:
    name = f"adms_bench_{os.getpid()}"
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(f"CREATE DATABASE {name}")
    dsn = admin_dsn.rsplit("/", 1)[0] + "/" + name
    try:
        conn = await asyncpg.connect(dsn)
        try:
            await apply_migrations(conn)
            await seed_site(conn, SeedPlan(accounts=accounts, terminals=10))
            await bootstrap(conn, platform_name="HQ", username="bench",
                            password="a bench-only passphrase")
        finally:
            await conn.close()
        return await _measure(dsn)
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


async def _measure(dsn: str) -> dict[str, float | int]:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        node = await pool.fetchval("SELECT id FROM org_nodes WHERE tenant_id = 1"
                                   " ORDER BY depth LIMIT 1")
        door = await pool.fetchval("INSERT INTO doors (tenant_id, name) VALUES (1, 'Bench')"
                                   " RETURNING id")
        group = await pool.fetchval("INSERT INTO access_door_groups (tenant_id, name)"
                                    " VALUES (1, 'Bench') RETURNING id")
        await pool.execute("INSERT INTO access_door_group_doors VALUES ($1, $2)", group, door)
        await pool.execute("INSERT INTO access_grants (tenant_id, subject, node_id,"
                           " door_group_id) VALUES (1, 'department', $1, $2)", node, group)
        people = [r["id"] for r in await pool.fetch("SELECT id FROM people WHERE tenant_id = 1")]
        template = bytes(range(256)) * 6
        await pool.executemany(
            "INSERT INTO biometric_templates (tenant_id, person_id, bio_type, no, data)"
            " VALUES (1, $1, 1, 0, $2)", [(p, template) for p in people])
        await pool.execute("INSERT INTO adms_devices (serial_no, tenant_id, node_id, door_id)"
                           " VALUES ('BENCH1', 1, $1, $2)", node, door)
        rounds = commands = polls = 0
        compare_s = drain_s = 0.0
        while True:
            t0 = time.perf_counter()
            queued = await _sync.reconcile(pool, "BENCH1")
            t1 = time.perf_counter()
            compare_s += t1 - t0
            if not queued:
                break
            rounds += 1
            commands += queued
            while batch := await _sync.hand_out(pool, "BENCH1", 60.0):
                polls += 1
                await _sync.acknowledge(pool, "BENCH1",
                                        [adms.CommandReply(i, 0) for i, _ in batch])
            drain_s += time.perf_counter() - t1
        t0 = time.perf_counter()
        for _ in range(10):
            await _sync.reconcile(pool, "BENCH1")
        at_rest_s = (time.perf_counter() - t0) / 10
        users = await pool.fetchval("SELECT count(*) FROM adms_device_users")
    finally:
        await pool.close()
    return {"users": users, "commands": commands, "rounds": rounds,
            "compare_ms_total": round(compare_s * 1000), "polls": polls,
            "poll_and_ack_ms": round(drain_s / max(polls, 1) * 1000, 1),
            "drain_s": round(drain_s, 2), "compare_at_rest_ms": round(at_rest_s * 1000)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--admin-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--accounts", type=int, default=5_000)
    parser.add_argument("--json", help="write the result here too")
    args = parser.parse_args()
    result = asyncio.run(_run(args.admin_dsn, args.accounts))
    print(json.dumps(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
