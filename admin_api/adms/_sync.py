"""What a device should hold, and the commands that get it there (docs/adms.md "User and
template sync").

A device holds users (PIN = person id) and their biometric templates. Which people: for a
device that guards a door, the people of its node's subtree who may open that door (the
grants, read here the way the switch reads them, time zones aside); for an attendance
device, every person of its subtree. Either way only people with an active account and a
credential the device can use (an active card, or a template). What the device was told
before is in adms_device_users / adms_device_templates; `reconcile` queues the difference in
the order a device must apply it: users added or changed, templates deleted, templates added
or changed, users deleted (a device deletes a user's templates with the user).

The queue is a FIFO per device (`hand_out`): a batch is handed out, acknowledged command by
command on /iclock/devicecmd (Return=0 done; another code retried, `failed` after
COMMAND_ATTEMPTS_MAX hand-outs), and the next batch waits until the device acknowledged
the previous one or `resend_seconds` passed; a device that re-registers (it rebooted) gets
its unacknowledged commands again, in order. A device that was offline is reconciled when it
polls again: it receives the difference, not the history.

Template bytes are never logged: log lines carry counts and the serial number only, and an
acknowledged command keeps only its summary (the command without the template).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

import asyncpg

from protocols import adms

USERS_PER_DEVICE_MAX: Final = 50_000
COMMANDS_PER_RECONCILE_MAX: Final = 5_000
"""Commands one comparison queues; also: no comparison while this many are not yet done
(the device is behind: it catches up first, the queue stays bounded)."""
TEMPLATE_CHARS_PER_RECONCILE_MAX: Final = 8 * 1024 * 1024
"""Template command characters one comparison queues (the rest in the next rounds)."""

def _level_decides(grants: list[asyncpg.Record] | None, elevator: bool) -> bool | None:
    """True: this level lets the person through at some time; False: it refuses always;
    None: it does not decide (no grant here, or only time-zoned or floor denials)."""
    if not grants:
        return None
    if any(g["effect"] == "deny" and g["time_zone_id"] is None
           and (g["floors"] is None or not elevator) for g in grants):
        return False
    if any(g["effect"] == "allow" for g in grants):
        return True
    return None


async def _door_grants(conn: asyncpg.Connection, door_id: int, tenant_id: int
                       ) -> tuple[dict[tuple[str, int], list[asyncpg.Record]], bool]:
    """The grants on the door valid now, by (subject, subject id); and whether it is an
    elevator (a floor-limited deny then refuses floors, not the car)."""
    elevator = await conn.fetchval("SELECT kind = 'elevator' FROM doors WHERE id = $1"
                                   " AND tenant_id = $2", door_id, tenant_id)
    by: dict[tuple[str, int], list[asyncpg.Record]] = {}
    for g in await conn.fetch(
            "SELECT g.subject, coalesce(g.person_id, g.node_id, g.class_id) AS subject_id,"
            " g.effect, g.time_zone_id, g.floors FROM access_grants g"
            " JOIN access_door_group_doors m ON m.door_group_id = g.door_group_id"
            " WHERE m.door_id = $1 AND g.tenant_id = $2"
            " AND (g.valid_from IS NULL OR g.valid_from <= now())"
            " AND (g.valid_until IS NULL OR g.valid_until > now())", door_id, tenant_id):
        by.setdefault((g["subject"], g["subject_id"]), []).append(g)
    return by, bool(elevator)


def may_open(by: dict[tuple[str, int], list[asyncpg.Record]], elevator: bool, person_id: int,
             path: Iterable[int], class_id: int) -> bool:
    """The switch's precedence (docs/access.md): person, then departments deepest first, then
    the identity class; the first level that decides wins, a deny beating an allow there."""
    levels = [("person", person_id), *(("department", n) for n in reversed(list(path))),
              ("class", class_id)]
    for key in levels:
        decided = _level_decides(by.get(key), elevator)
        if decided is not None:
            return decided
    return False


async def wanted_users(conn: asyncpg.Connection, device: asyncpg.Record
                       ) -> dict[str, tuple[str, int | None]]:
    """PIN -> (name, card number or None) of the people the device should hold."""
    rows = await conn.fetch(
        "SELECT p.id, p.name, n.path, a.class_id, min(c.card_no) AS card_no FROM people p"
        " JOIN org_nodes n ON n.id = p.node_id JOIN accounts a ON a.id = p.account_id"
        " LEFT JOIN cards c ON c.account_id = p.account_id AND c.status = 0"
        " WHERE $1 = ANY(n.path) AND a.status = 0 AND p.tenant_id = $2"
        " GROUP BY p.id, p.name, n.path, a.class_id"
        " HAVING min(c.card_no) IS NOT NULL"
        " OR EXISTS (SELECT 1 FROM biometric_templates t WHERE t.person_id = p.id)"
        " ORDER BY p.id LIMIT $3", device["node_id"], device["tenant_id"],
        USERS_PER_DEVICE_MAX)
    if device["door_id"] is not None:
        by, elevator = await _door_grants(conn, device["door_id"], device["tenant_id"])
        rows = [r for r in rows if may_open(by, elevator, r["id"], r["path"], r["class_id"])]
    return {str(r["id"]): (r["name"], r["card_no"]) for r in rows}


Slot = tuple[str, int, int, int]
"""(PIN, ADMS bio type, finger number, index)."""


async def reconcile(pool: asyncpg.Pool, serial_no: str, *, full: bool = False) -> int:
    """Queue the commands that make the device hold exactly the people and templates it
    should; how many. `full` forgets what the device was told (a replaced or wiped device):
    everything is sent again."""
    async with pool.acquire() as conn, conn.transaction():
        device = await conn.fetchrow(
            "SELECT serial_no, tenant_id, node_id, door_id, bio_dialect FROM adms_devices"
            " WHERE serial_no = $1 FOR UPDATE", serial_no)
        if device is None:
            return 0
        if full:
            await conn.execute("DELETE FROM adms_device_users WHERE serial_no = $1", serial_no)
            await conn.execute("DELETE FROM adms_device_templates WHERE serial_no = $1",
                               serial_no)
        behind = await conn.fetchval(
            "SELECT count(*) FROM adms_commands WHERE serial_no = $1"
            " AND status IN ('pending', 'sent')", serial_no)
        if behind >= COMMANDS_PER_RECONCILE_MAX:
            return 0
        dialect = device["bio_dialect"]
        wanted = await wanted_users(conn, device)
        held = {r["pin"]: (r["name"], r["card_no"]) for r in await conn.fetch(
            "SELECT pin, name, card_no FROM adms_device_users WHERE serial_no = $1", serial_no)}
        budget = COMMANDS_PER_RECONCILE_MAX - behind
        user_updates = [pin for pin, v in wanted.items() if held.get(pin) != v][:budget]
        user_deletes = sorted(held.keys() - wanted.keys())[:budget - len(user_updates)]
        will_hold = (held.keys() & wanted.keys()) | set(user_updates)

        templates = await conn.fetch(
            "SELECT id, person_id, bio_type, no, idx, major_ver, minor_ver, format"
            " FROM biometric_templates WHERE person_id = ANY($1::integer[])",
            [int(pin) for pin in will_hold if pin.isdigit()])
        wanted_tpl: dict[Slot, asyncpg.Record] = {
            (str(t["person_id"]), t["bio_type"], t["no"], t["idx"]): t for t in templates
            if dialect == "biodata" or t["bio_type"] in (1, 2)}
        held_tpl: dict[Slot, int] = {
            (r["pin"], r["bio_type"], r["no"], r["idx"]): r["template_id"]
            for r in await conn.fetch("SELECT pin, bio_type, no, idx, template_id FROM"
                                      " adms_device_templates WHERE serial_no = $1", serial_no)}
        gone_users = set(user_deletes)
        tpl_deletes = [s for s in held_tpl if s[0] not in gone_users and s not in wanted_tpl]
        if dialect == "legacy":
            # The FACE table deletes a user's faces all at once: the faces still wanted are
            # sent again after the delete.
            faces_cleared = {s[0] for s in tpl_deletes if s[1] == 2}
            tpl_deletes = [s for s in tpl_deletes if s[1] != 2] + [
                (pin, 2, 0, 0) for pin in sorted(faces_cleared)]
            for s in [s for s in held_tpl if s[0] in faces_cleared and s[1] == 2]:
                del held_tpl[s]
        tpl_deletes = tpl_deletes[:max(0, budget - len(user_updates) - len(user_deletes))]
        room = max(0, budget - len(user_updates) - len(tpl_deletes) - len(user_deletes))
        tpl_updates = [s for s, t in wanted_tpl.items() if held_tpl.get(s) != t["id"]][:room]

        commands: list[str] = [
            adms.user_update(pin=pin, name=wanted[pin][0], card_no=wanted[pin][1])
            for pin in user_updates]
        for pin, bio_type, no, idx in tpl_deletes:
            text = adms.template_delete(pin=pin, bio_type=bio_type, no=no, idx=idx,
                                        dialect=dialect)
            if text is not None:
                commands.append(text)
        sent_tpl: list[tuple[Slot, int]] = []
        chars = 0
        for chunk_start in range(0, len(tpl_updates), 100):
            chunk = tpl_updates[chunk_start:chunk_start + 100]
            data = {r["id"]: r["data"] for r in await conn.fetch(
                "SELECT id, data FROM biometric_templates WHERE id = ANY($1::bigint[])",
                [wanted_tpl[s]["id"] for s in chunk])}
            for s in chunk:
                t = wanted_tpl[s]
                if t["id"] not in data:
                    continue  # deleted meanwhile: the next comparison sees it gone
                text = adms.template_update(adms.Template(
                    s[0], t["bio_type"], t["no"], t["idx"], t["major_ver"], t["minor_ver"],
                    t["format"], data[t["id"]]), dialect=dialect)
                if text is None:
                    continue
                commands.append(text)
                sent_tpl.append((s, t["id"]))
                chars += len(text)
                if chars >= TEMPLATE_CHARS_PER_RECONCILE_MAX:
                    break
            if chars >= TEMPLATE_CHARS_PER_RECONCILE_MAX:
                break
        commands.extend(adms.user_delete(pin=pin) for pin in user_deletes)

        if user_updates:
            await conn.executemany(
                "INSERT INTO adms_device_users (serial_no, pin, card_no, name)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT (serial_no, pin)"
                " DO UPDATE SET card_no = EXCLUDED.card_no, name = EXCLUDED.name",
                [(serial_no, pin, wanted[pin][1], wanted[pin][0]) for pin in user_updates])
        if user_deletes:
            await conn.execute("DELETE FROM adms_device_users WHERE serial_no = $1"
                               " AND pin = ANY($2::text[])", serial_no, user_deletes)
            await conn.execute("DELETE FROM adms_device_templates WHERE serial_no = $1"
                               " AND pin = ANY($2::text[])", serial_no, user_deletes)
        if tpl_deletes:
            await conn.executemany(
                "DELETE FROM adms_device_templates WHERE serial_no = $1 AND pin = $2"
                " AND bio_type = $3 AND (no = $4 AND idx = $5 OR $6)",
                [(serial_no, s[0], s[1], s[2], s[3], dialect == "legacy" and s[1] == 2)
                 for s in tpl_deletes])
        if sent_tpl:
            await conn.executemany(
                "INSERT INTO adms_device_templates (serial_no, pin, bio_type, no, idx,"
                " template_id) VALUES ($1, $2, $3, $4, $5, $6)"
                " ON CONFLICT (serial_no, pin, bio_type, no, idx)"
                " DO UPDATE SET template_id = EXCLUDED.template_id",
                [(serial_no, *s, tid) for s, tid in sent_tpl])
        if commands:
            await conn.executemany(
                "INSERT INTO adms_commands (serial_no, command, summary) VALUES ($1, $2, $3)",
                [(serial_no, c, adms.command_summary(c)) for c in commands])
        await conn.execute("UPDATE adms_devices SET synced_at = now() WHERE serial_no = $1",
                           serial_no)
        return len(commands)


async def hand_out(pool: asyncpg.Pool, serial_no: str, resend_seconds: float
                   ) -> list[tuple[int, str]]:
    """The next batch for the device, oldest first, or nothing while the previous batch is
    neither acknowledged nor due again."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT 1 FROM adms_devices WHERE serial_no = $1 FOR UPDATE",
                           serial_no)
        # Handed out COMMAND_ATTEMPTS_MAX times and never acknowledged: failed.
        await conn.execute(
            "UPDATE adms_commands SET status = 'failed', command = summary, done_at = now()"
            " WHERE serial_no = $1 AND status = 'sent' AND attempts >= $2"
            " AND sent_at < now() - make_interval(secs => $3)",
            serial_no, adms.COMMAND_ATTEMPTS_MAX, resend_seconds)
        rows = await conn.fetch(
            "SELECT id, status, sent_at < now() - make_interval(secs => $3) AS due,"
            " length(command) AS chars FROM adms_commands WHERE serial_no = $1"
            " AND status IN ('pending', 'sent') ORDER BY id LIMIT $2",
            serial_no, adms.COMMANDS_PER_POLL_MAX, resend_seconds)
        chosen: list[int] = []
        chars = 0
        for r in rows:
            if r["status"] == "sent" and not r["due"]:
                break  # in flight: the order holds until it is acknowledged or due
            if chosen and chars + r["chars"] > adms.POLL_CHARS_MAX:
                break
            chosen.append(r["id"])
            chars += r["chars"] + 16
        if not chosen:
            return []
        handed = await conn.fetch(
            "UPDATE adms_commands SET status = 'sent', sent_at = now(), attempts = attempts + 1"
            " WHERE id = ANY($1::bigint[]) RETURNING id, command", chosen)
    return sorted((r["id"], r["command"]) for r in handed)


async def acknowledge(pool: asyncpg.Pool, serial_no: str,
                      replies: list[adms.CommandReply]) -> None:
    """Return=0: done (only the summary is kept). Another code: handed out again at the next
    poll, or failed after COMMAND_ATTEMPTS_MAX hand-outs. Only commands handed out to this
    device are touched."""
    await pool.executemany(
        "UPDATE adms_commands SET return_code = $3,"
        " status = CASE WHEN $3 = 0 THEN 'done' WHEN attempts >= $4 THEN 'failed'"
        " ELSE 'pending' END,"
        " command = CASE WHEN $3 = 0 OR attempts >= $4 THEN summary ELSE command END,"
        " done_at = CASE WHEN $3 = 0 OR attempts >= $4 THEN now() END"
        " WHERE id = $1 AND serial_no = $2 AND status = 'sent'",
        [(r.command_id, serial_no, r.return_code, adms.COMMAND_ATTEMPTS_MAX) for r in replies])


async def rebooted(conn: asyncpg.Connection | asyncpg.Pool, serial_no: str) -> None:
    """A device that registers again lost whatever it had not acknowledged: resend it."""
    await conn.execute("UPDATE adms_commands SET status = 'pending' WHERE serial_no = $1"
                       " AND status = 'sent'", serial_no)


async def store_templates(pool: asyncpg.Pool, device: asyncpg.Record,
                          templates: list[adms.Template], *, biodata: bool) -> tuple[int, int]:
    """Keep the templates a device uploaded (enrolled at it) for people of its subtree; the
    device holds them already (noted, so they are not sent back). (stored or unchanged,
    refused: the PIN names nobody of the device's subtree)."""
    serial_no = device["serial_no"]
    pins = sorted({int(t.pin) for t in templates if t.pin.isdigit() and len(t.pin) <= 9})
    kept = refused = 0
    async with pool.acquire() as conn, conn.transaction():
        people: dict[str, Any] = {str(r["id"]): r["tenant_id"] for r in await conn.fetch(
            "SELECT p.id, p.tenant_id FROM people p JOIN org_nodes n ON n.id = p.node_id"
            " WHERE p.id = ANY($1::integer[]) AND $2 = ANY(n.path) AND p.tenant_id = $3",
            pins, device["node_id"], device["tenant_id"])}
        for t in templates:
            if t.pin not in people:
                refused += 1
                continue
            old = await conn.fetchrow(
                "SELECT id, data = $5 AS same FROM biometric_templates WHERE person_id = $1"
                " AND bio_type = $2 AND no = $3 AND idx = $4 FOR UPDATE",
                int(t.pin), t.bio_type, t.no, t.idx, t.data)
            if old is not None and old["same"]:
                template_id = old["id"]
            else:
                if old is not None:
                    await conn.execute("DELETE FROM biometric_templates WHERE id = $1",
                                       old["id"])
                template_id = await conn.fetchval(
                    "INSERT INTO biometric_templates (tenant_id, person_id, bio_type, no, idx,"
                    " major_ver, minor_ver, format, data, source_serial_no)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
                    people[t.pin], int(t.pin), t.bio_type, t.no, t.idx, t.major_ver,
                    t.minor_ver, t.format, t.data, serial_no)
            await conn.execute(
                "INSERT INTO adms_device_templates (serial_no, pin, bio_type, no, idx,"
                " template_id) VALUES ($1, $2, $3, $4, $5, $6)"
                " ON CONFLICT (serial_no, pin, bio_type, no, idx)"
                " DO UPDATE SET template_id = EXCLUDED.template_id",
                serial_no, t.pin, t.bio_type, t.no, t.idx, template_id)
            # The device holds this user now (it enrolled them): the next comparison names
            # them properly, or takes them off if they should not be there.
            await conn.execute(
                "INSERT INTO adms_device_users (serial_no, pin, card_no, name)"
                " VALUES ($1, $2, NULL, '') ON CONFLICT DO NOTHING", serial_no, t.pin)
            kept += 1
        if biodata:
            await conn.execute("UPDATE adms_devices SET bio_dialect = 'biodata'"
                               " WHERE serial_no = $1", serial_no)
    return kept, refused
