"""Separation of duties (issue 9 item 9): one tenant admin cannot approve its own money.

It drafted a +5,000,000 fen adjustment, made two finance log-ins and approved both levels
with them; it could also lower its tenant's approval levels to 1. Now a log-in made by a
participant of the round (directly or through log-ins it made) does not approve, a log-in
approves only once it is older than the cooling-off period, and only an admin above the
tenant lowers its approval levels.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.admin_site import PASSWORD, AdminSite, Api


@pytest.fixture
def duty_site(db_dsn: str) -> Iterator[AdminSite]:
    s = AdminSite(db_dsn)
    s.start_admin(ONECARD_ADMIN_APPROVER_COOLING_OFF_SECONDS="3600")
    try:
        yield s
    finally:
        s.close()


def _user(site: AdminSite, maker: Api, name: str, role: str, *, aged: bool = True) -> Api:
    maker.ok("POST", "/users", {"username": name, "password": PASSWORD, "role": role,
                                "node_id": site.tenant_node(1)}, 201)
    if aged:  # as if made two days ago: past the cooling-off period
        site.fetch("UPDATE admin_users SET created_at = now() - interval '2 days'"
                   " WHERE username = $1", name)
    return site.api(name)


def _approve(api: Api, doc: dict[str, Any]) -> Any:
    return api.post(f"/documents/{doc['id']}/approve", {})


def test_log_ins_made_by_the_drafter_or_too_new_do_not_approve(duty_site: AdminSite) -> None:
    root = duty_site.api()
    boss = _user(duty_site, root, "boss", "tenant_admin")
    person = duty_site.fetch("SELECT id FROM people WHERE tenant_id = 1 ORDER BY id LIMIT 1")[0]
    doc = boss.ok("POST", "/documents", {"doc_type": "adjustment", "title": "bonus",
                                         "lines": [{"person_id": person["id"],
                                                    "amount_fen": 5_000_000}]})
    boss.ok("POST", f"/documents/{doc['id']}/submit", {})
    # The walk-around of the issue: two finance log-ins of the drafter's own making, and one
    # made through a deputy it made.
    puppets = [_user(duty_site, boss, name, "finance") for name in ("fin.x", "fin.y")]
    deputy = _user(duty_site, boss, "deputy", "tenant_admin")
    puppets.append(_user(duty_site, deputy, "fin.z", "finance"))
    for puppet in [*puppets, deputy]:
        r = _approve(puppet, doc)
        assert r.status_code == 403 and "made by boss" in r.json()["detail"], r.text
    # A log-in the drafter did not make, but made a minute ago: it waits out the period.
    fresh = _user(duty_site, root, "fin.new", "finance", aged=False)
    r = _approve(fresh, doc)
    assert r.status_code == 403 and "cooling-off" in r.json()["detail"], r.text
    assert boss.ok("GET", f"/documents/{doc['id']}")["approved_levels"] == 0
    # An independent, established approver approves the first level ...
    chief = _user(duty_site, root, "chief", "tenant_admin")
    assert _approve(chief, doc).json()["approved_levels"] == 1
    # ... and a log-in that approver made does not approve the second.
    aide = _user(duty_site, chief, "fin.aide", "finance")
    r = _approve(aide, doc)
    assert r.status_code == 403 and "made by chief" in r.json()["detail"], r.text
    after = boss.ok("GET", f"/documents/{doc['id']}")
    assert (after["status"], after["approved_levels"]) == ("submitted", 1)
    assert [s["decision"] for s in after["steps"]] == ["submit", "approve"]
    made = duty_site.fetch("SELECT u.username, m.username AS maker FROM admin_users u"
                           " LEFT JOIN admin_users m ON m.id = u.created_by ORDER BY u.id")
    assert {r["username"]: r["maker"] for r in made}["fin.z"] == "deputy"


def test_only_an_admin_above_the_tenant_lowers_its_approval_levels(duty_site: AdminSite
                                                                   ) -> None:
    root = duty_site.api()
    boss = _user(duty_site, root, "boss", "tenant_admin")
    node = duty_site.tenant_node(1)

    def policy(api: Api, levels: int) -> Any:
        return api.post("/approval-policies", {"node_id": node, "doc_type": "adjustment",
                                               "levels": levels})

    r = policy(boss, 1)
    assert r.status_code == 403 and "above the tenant" in r.json()["detail"], r.text
    assert policy(boss, 3).status_code == 200, "a tenant's admin adds levels"
    assert policy(boss, 3).status_code == 200
    assert policy(boss, 2).status_code == 403
    assert policy(root, 1).json() == {"tenant_id": 1, "doc_type": "adjustment", "levels": 1}
    trail = duty_site.fetch("SELECT username, before::text, after::text FROM audit_log"
                            " WHERE action = 'policy.set' ORDER BY id")
    assert [(t["username"], t["after"]) for t in trail] == [
        ("boss", '{"levels": 3}'), ("boss", '{"levels": 3}'), ("root", '{"levels": 1}')]
