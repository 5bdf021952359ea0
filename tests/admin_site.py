"""A seeded site with the admin API (and, when asked, the switch) as real processes."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx

from admin_api._bootstrap import bootstrap
from onecard.harness import AdminProcess
from onecard.seed import SeedPlan
from protocols import ocp
from tests.switch_site import FREE_CANTEEN_TERMINAL, Site

ROOT_USER = "root"
PASSWORD = "correct horse battery"
_card_numbers = itertools.count(9_100_000_000)


def new_card_no() -> int:
    return next(_card_numbers)


def tiny_png(width: int = 4, height: int = 3, rgb: tuple[int, int, int] = (230, 236, 242)
             ) -> bytes:
    """A valid PNG of one colour (a floor plan for the e-map's tests)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    raw = b"".join(b"\0" + bytes(rgb) * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2,
                                                                  0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


class Api:
    """An httpx client logged in as one user; every call returns the response."""

    def __init__(self, url: str, username: str | None = None, password: str = PASSWORD) -> None:
        self.http = httpx.Client(base_url=url, timeout=30)
        self.username = username
        if username is not None:
            r = self.http.post("/auth/login", json={"username": username, "password": password})
            assert r.status_code == 200, r.text
            self.token = r.json()["access_token"]
            self.http.headers["Authorization"] = f"Bearer {self.token}"

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.http.get(path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> httpx.Response:
        return self.http.post(path, json=body, **kw)

    def ok(self, method: str, path: str, body: Any = None, status: int | None = None) -> Any:
        r = self.http.request(method, path, json=body)
        assert r.status_code < 300 and (status is None or r.status_code == status), (
            method, path, r.status_code, r.text)
        return r.json() if r.content else None

    def close(self) -> None:
        self.http.close()


class AdminSite(Site):
    """The demo site (tenants 1 and 2), bootstrapped: platform node, tenant nodes, people."""

    def __init__(self, dsn: str, plan: SeedPlan | None = None) -> None:
        super().__init__(dsn, plan or SeedPlan(accounts=200, terminals=10))

        async def init() -> Any:
            conn = await asyncpg.connect(dsn)
            try:
                return await bootstrap(conn, platform_name="HQ", username=ROOT_USER,
                                       password=PASSWORD)
            finally:
                await conn.close()

        self.boot = asyncio.run(init())
        self.admin: AdminProcess | None = None
        self.apis: list[Api] = []

    def start_admin(self, **env: str) -> AdminProcess:
        # The site's master secret (ONECARD_MASTER_SECRET): the API issues terminal keys, and
        # derives its own admin terminal's key to reach the switch (when one runs).
        # Log-ins made by a test approve at once (tests of the cooling-off period set it).
        env = {"ONECARD_ADMIN_APPROVER_COOLING_OFF_SECONDS": "0", **env}
        if self.switch is not None:
            env = {"ONECARD_ADMIN_SWITCH_PORT": str(self.switch.port), **env}
        self.admin = AdminProcess(self.dsn, self.master.hex(), extra_env=env).start()
        return self.admin

    def api(self, username: str | None = ROOT_USER, password: str = PASSWORD) -> Api:
        assert self.admin is not None
        api = Api(self.admin.url, username, password)
        self.apis.append(api)
        return api

    def tenant_node(self, tenant_id: int) -> int:
        return int(self.fetch("SELECT id FROM org_nodes WHERE kind = 'tenant' AND tenant_id = $1",
                              tenant_id)[0]["id"])

    def close(self) -> None:
        for api in self.apis:
            api.close()
        if self.admin is not None:
            self.admin.stop()
        if self.switch is not None:
            self.switch.stop()


class Till:
    """A signed-on POS (tenant 1's free-amount canteen unless told); `buy` returns the answer."""

    def __init__(self, site: AdminSite, terminal_id: int = FREE_CANTEEN_TERMINAL) -> None:
        self.client = site.client(terminal_id)
        self.seq = self.client.sign_on_result.last_txn_seq

    def buy(self, card_no: int, amount_fen: int = 350) -> Any:
        self.seq += 1
        return self.client.request(ocp.Purchase(self.seq, card_no, amount_fen,
                                                int(time.time() * 1000)))


def site_with_switch(dsn: str) -> Iterator[AdminSite]:
    """A fixture body: the site, its switch on a fixed free port (so a restart keeps the
    address) and the admin API reaching it (a 2 s answer deadline), closed afterwards."""
    from onecard.harness import free_port

    s = AdminSite(dsn)
    s.start(extra_env={"ONECARD_PORT": str(free_port())})
    s.start_admin(ONECARD_ADMIN_SWITCH_TIMEOUT_SECONDS="2")
    try:
        yield s
    finally:
        s.close()
