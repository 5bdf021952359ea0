"""The serving demo's doors (onecard/demo_access_seed.py), without starting anything: what the
security desk's e-map reads is there, in the campus's subtree, and the other park has none."""

from __future__ import annotations

import asyncio
import hashlib

import asyncpg

from admin_api._bootstrap import bootstrap
from admin_api.access._maps import PLAN_BYTES_MAX, sniff
from onecard.demo_access_seed import CAMPUS, HEIGHT, WIDTH, DemoAccess, floor_plan, seed_demo_access
from onecard.seed import SeedPlan, seed_site


def test_every_plan_is_a_png_the_api_takes_with_every_door_of_its_floor_on_it() -> None:
    for floor in CAMPUS:
        image, places = floor_plan(floor)
        assert sniff(image) == "image/png" and len(image) <= PLAN_BYTES_MAX
        assert image[16:24] == WIDTH.to_bytes(4, "big") + HEIGHT.to_bytes(4, "big")
        doors = {r.door for r in (*floor.top, *floor.bottom) if r.door} | {
            d for d in (floor.west, floor.east) if d}
        assert set(places) == doors
        assert all(0 <= x <= 10_000 and 0 <= y <= 10_000 for x, y in places.values())


def test_the_campus_gets_areas_doors_controllers_grants_and_plans_the_east_park_none(
        db_dsn: str) -> None:
    async def run() -> tuple[DemoAccess, dict[str, object]]:
        conn = await asyncpg.connect(db_dsn)
        try:
            await seed_site(conn, SeedPlan(accounts=50, terminals=4))
            await bootstrap(conn, platform_name="t", username="admin", password="x" * 12)
            access = await seed_demo_access(conn)
            facts = {
                "unplaced": await conn.fetchval(
                    "SELECT count(*) FROM doors WHERE map_x IS NULL"),
                "outside_campus": await conn.fetchval(
                    "SELECT count(*) FROM doors d JOIN org_nodes n ON n.id = d.node_id"
                    " WHERE n.kind <> 'tenant' OR n.tenant_id <> 1"),
                "plans": await conn.fetch(
                    "SELECT area_id, image, sha256 FROM access_area_plans"),
                "readers": await conn.fetchval("SELECT count(*) FROM access_readers"),
                "controllers": await conn.fetchval(
                    "SELECT count(*) FROM terminals WHERE kind = 3"),
                "states": await conn.fetchval("SELECT count(*) FROM access_door_states"),
                "staff_only": await conn.fetch(
                    "SELECT g.class_id FROM access_grants g JOIN access_door_groups dg"
                    " ON dg.id = g.door_group_id WHERE dg.name = 'Server room'"),
                "east": await conn.fetchval(
                    "SELECT (SELECT count(*) FROM doors WHERE tenant_id = 2)"
                    " + (SELECT count(*) FROM access_areas WHERE tenant_id = 2)"),
                "first_floor_parent": await conn.fetchval(
                    "SELECT p.name FROM access_areas a JOIN access_areas p ON p.id = a.parent_id"
                    " WHERE a.name = 'First floor'"),
            }
            return access, facts
        finally:
            await conn.close()

    access, facts = asyncio.run(run())
    n = len(access.doors)
    assert 6 <= n <= 12 and set(access.areas) == {"Main building", "First floor", "Library"}
    assert facts["unplaced"] == 0 and facts["outside_campus"] == 0
    assert facts["readers"] == 2 * n and facts["controllers"] == n and facts["states"] == n
    assert len({d.terminal_id for d in access.doors}) == n
    assert [r["class_id"] for r in facts["staff_only"]] == [2]  # type: ignore[attr-defined]
    plans = facts["plans"]
    assert {r["area_id"] for r in plans} == set(access.areas.values())  # type: ignore[attr-defined]
    for r in plans:  # type: ignore[attr-defined]
        assert hashlib.sha256(r["image"]).hexdigest() == r["sha256"]
    assert facts["east"] == 0
    assert facts["first_floor_parent"] == "Main building"
