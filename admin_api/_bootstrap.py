"""The first steps on a site: the platform node, its first admin, and adopting what exists.

`bootstrap` is idempotent. It creates the platform (root) node if there is none, the tenant it
is given if no tenant has that name (with its time zone and meal windows), a tenant node for
every tenant the switch knows that has none, a person for every account that has none
(named after the account's holder, in its tenant's node), each tenant's system accounts (cash
desk, subsidy fund, adjustments; an existing system merchant of that name is adopted), the
site's admin terminal (kind admin: the API's way to move money through the switch), and the
first platform admin if that user name is free. Everything it creates is in the audit log as
done by "bootstrap". A site without any tenant is refused (nothing is written): the admin
terminal belongs to a tenant's cash desk.
"""

from __future__ import annotations

import asyncpg
import msgspec

from admin_api._auth import hash_password
from admin_api._money import ensure_admin_terminal, ensure_system_accounts
from admin_api._problems import Problem
from admin_api._routes_merchants import MealWindow, checked_meal_windows, insert_meal_windows
from admin_api._routes_org import TENANTS_MAX
from admin_api._store import next_id
from protocols.changes import ChangeEvent, TenantConfigured, encode_event


class TenantPlan(msgspec.Struct, frozen=True):
    """A tenant for `bootstrap` to create (a campus, a park, a community)."""

    name: str
    utc_offset_s: int = 28_800
    meal_windows: tuple[MealWindow, ...] = ()


class BootstrapReport(msgspec.Struct, frozen=True):
    platform_node_id: int
    tenant_nodes_created: int
    people_created: int
    admin_created: bool
    system_accounts_created: int = 0
    admin_terminal_id: int = 0
    tenant_created: int | None = None
    """The id of the tenant created from the TenantPlan (None: there was one of that name)."""


async def bootstrap(conn: asyncpg.Connection, *, platform_name: str, username: str,
                    password: str, tenant: TenantPlan | None = None) -> BootstrapReport:
    digest = await hash_password(password)
    windows = checked_meal_windows(list(tenant.meal_windows)) if tenant else []
    events: list[ChangeEvent] = []
    async with conn.transaction():
        await conn.execute("LOCK TABLE org_nodes IN SHARE ROW EXCLUSIVE MODE")
        root = await conn.fetchval("SELECT id FROM org_nodes WHERE parent_id IS NULL")
        if root is None:
            root = await conn.fetchval("SELECT nextval('org_nodes_id_seq')")
            await conn.execute(
                "INSERT INTO org_nodes (id, parent_id, kind, name, path, depth)"
                " VALUES ($1, NULL, 'platform', $2, ARRAY[$1]::integer[], 0)", root, platform_name)
            await _audit(conn, "org.create_node", "org_node", root, [root])
        new_tenant = None
        if tenant is not None and not await conn.fetchval(
                "SELECT true FROM tenants WHERE name = $1", tenant.name):
            new_tenant = await next_id(conn, "tenants", TENANTS_MAX)
            await conn.execute("INSERT INTO tenants (id, name, utc_offset_s) VALUES ($1, $2, $3)",
                               new_tenant, tenant.name, tenant.utc_offset_s)
            await insert_meal_windows(conn, new_tenant, windows)
            events.append(TenantConfigured(new_tenant, tenant.utc_offset_s,
                                           [(w.start_minute, w.end_minute) for w in windows]))
        tenants = await conn.fetch(
            "SELECT t.id, t.name FROM tenants t WHERE NOT EXISTS"
            " (SELECT 1 FROM org_nodes n WHERE n.kind = 'tenant' AND n.tenant_id = t.id)"
            " ORDER BY t.id")
        for t in tenants:
            node = await conn.fetchval("SELECT nextval('org_nodes_id_seq')")
            await conn.execute(
                "INSERT INTO org_nodes (id, parent_id, kind, name, tenant_id, path, depth)"
                " VALUES ($1, $2, 'tenant', $3, $4, ARRAY[$2, $1]::integer[], 1)",
                node, root, t["name"], t["id"])
            action = "org.create_node" if t["id"] == new_tenant else "org.adopt_tenant"
            await _audit(conn, action, "org_node", node, [root, node])
        people = await conn.execute(
            "INSERT INTO people (node_id, tenant_id, name, class_id, account_id)"
            " SELECT n.id, a.tenant_id,"
            "  CASE WHEN a.holder_name = '' THEN 'Cardholder ' || a.id ELSE a.holder_name END,"
            "  a.class_id, a.id"
            " FROM accounts a JOIN org_nodes n ON n.kind = 'tenant' AND n.tenant_id = a.tenant_id"
            " WHERE NOT EXISTS (SELECT 1 FROM people p WHERE p.account_id = a.id)")
        adopted = int(people.split()[-1])
        if adopted:
            await _audit(conn, "person.adopt_accounts", "person", f"{adopted} accounts", [root])
        tenant_nodes = await conn.fetch("SELECT n.tenant_id, n.id FROM org_nodes n"
                                        " WHERE n.kind = 'tenant' ORDER BY n.tenant_id")
        if not tenant_nodes:
            raise Problem(409, "no-tenant", "the site has no tenant yet: give the first one's "
                          "name (onecard admin-init --tenant NAME); nothing was written")
        made = 0
        for t in tenant_nodes:
            made += len(await ensure_system_accounts(conn, t["tenant_id"], t["id"],
                                                     events.append))
        terminal = await ensure_admin_terminal(conn, events.append)
        for event in events:
            kind, payload = encode_event(event)
            await conn.execute("SELECT outbox_append($1, $2::jsonb)", kind, payload.decode())
        created = await conn.fetchval(
            "INSERT INTO admin_users (username, node_id, role, password_hash)"
            " VALUES ($1, $2, 'platform_admin', $3) ON CONFLICT (username) DO NOTHING"
            " RETURNING id", username, root, digest)
        if created is not None:
            await _audit(conn, "user.create", "user", created, [root])
    return BootstrapReport(platform_node_id=root, tenant_nodes_created=len(tenants),
                           people_created=adopted, admin_created=created is not None,
                           system_accounts_created=made, admin_terminal_id=terminal,
                           tenant_created=new_tenant)


async def _audit(conn: asyncpg.Connection, action: str, entity: str, entity_id: object,
                 path: list[int]) -> None:
    await conn.execute(
        "INSERT INTO audit_log (username, role, action, entity, entity_id, node_path)"
        " VALUES ('bootstrap', 'system', $1, $2, $3, $4)", action, entity, str(entity_id), path)
