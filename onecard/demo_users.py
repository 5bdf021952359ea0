"""The demo's log-ins, one or more for every role: `onecard demo --serve` prints them, and
`onecard demo` and `onecard bench` log in with them to walk and load the console
(onecard/console_probe.py)."""

from __future__ import annotations

from typing import Final

import asyncpg

from admin_api._bootstrap import bootstrap

# (user name, role, node: "platform" | "campus" | "east"); cardholder and parent get people.
DEMO_USERS: Final = (
    ("admin", "platform_admin", "platform"),
    ("campus.admin", "tenant_admin", "campus"),
    ("card.office", "card_office", "campus"),
    ("cashier", "cashier", "campus"),
    ("finance.a", "finance", "campus"),
    ("finance.b", "finance", "campus"),
    ("auditor", "auditor", "campus"),
    ("canteen.viewer", "merchant_viewer", "campus"),
    ("security.desk", "security_desk", "campus"),
    ("east.admin", "tenant_admin", "east"),
    ("east.office", "card_office", "east"),
    ("student", "cardholder", "campus"),
    ("parent", "parent", "campus"),
)


async def create_demo_users(dsn: str, password: str) -> list[tuple[str, str]]:
    """Bootstrap the admin API's data on a seeded database (platform node, tenants, people,
    the platform admin) and add the other demo log-ins, all with `password`; the cardholder is
    the first active person of the campus and the parent is theirs. Returns (user, role)."""
    from admin_api import hash_password

    conn = await asyncpg.connect(dsn)
    try:
        report = await bootstrap(conn, platform_name="OneCard demo HQ", username="admin",
                                 password=password)
        nodes = {"platform": report.platform_node_id}
        for name, tenant in (("campus", 1), ("east", 2)):
            nodes[name] = await conn.fetchval(
                "SELECT id FROM org_nodes WHERE kind = 'tenant' AND tenant_id = $1", tenant)
        student = await conn.fetchval(
            "SELECT p.id FROM people p JOIN accounts a ON a.id = p.account_id"
            " WHERE a.tenant_id = 1 AND a.status = 0 ORDER BY p.id LIMIT 1")
        digest = await hash_password(password)
        out = []
        for username, role, node in DEMO_USERS:
            if username != "admin":
                uid = await conn.fetchval(
                    "INSERT INTO admin_users (username, node_id, role, password_hash, person_id)"
                    " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (username) DO NOTHING RETURNING id",
                    username, nodes[node], role, digest,
                    student if role == "cardholder" else None)
                if role == "parent" and uid is not None:
                    await conn.execute("INSERT INTO parent_links VALUES ($1, $2)", uid, student)
            out.append((username, role))
        return out
    finally:
        await conn.close()


__all__ = ["DEMO_USERS", "create_demo_users"]
