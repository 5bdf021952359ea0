"""Confirming a settlement (a document of type 'settlement') and paying merchants out.

Requested by one log-in (`request_confirmation`: the figures are computed and stored as
pending, the document is submitted), approved by another through the documents' approval
(`POST /documents/{id}/approve`, admin_api/_routes_documents.py). At the last level
`on_approved` runs in the approving transaction: the day is recomputed and must equal the
stored figures, the settlement becomes confirmed (frozen: a trigger refuses any change), and
the payout movements are drawn with their txn_seqs. Then `execute_payouts` asks the switch for
each movement, once, in order; an execution cut short (the switch away) carries on under
`POST /documents/{id}/execute` with the same txn_seqs.

A payout of a merchant moves what is due (its confirmed days' nets with due_on on or before
the confirmed day, not yet paid) from the merchant account to the bank clearing account, and
the fees to the tenant's fee account. The switch moves money only between a card and a
merchant account, so each chunk (at most AMOUNT_FEN_MAX) is two requests of the admin
terminal through the tenant's transit card: credit the card from the merchant, then debit it to
the target. A merchant whose due nets are 0 or less in all is carried forward.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

import asyncpg
from litestar.datastructures import State

from admin_api._auth import Actor
from admin_api._money import Money, Outcome, system_account
from admin_api._problems import Problem
from admin_api._store import Change, change, next_id
from admin_api.settlement._compute import Settlement, compute_settlement, encode, sha256
from protocols.changes import AccountOpened, CardBound, MerchantOpened
from protocols.limits import AMOUNT_FEN_MAX

TRANSIT_CARD_BASE: Final = 990_000_000_000_000_000
"""The transit card of tenant T is TRANSIT_CARD_BASE + T (no person holds it)."""
ACCOUNTS_MAX: Final = 1 << 21
_NOT_YET_KNOWN: Final = frozenset({12, 14})
"""INVALID_MERCHANT, UNKNOWN_CARD: the switch has not learned a new account from the feed."""
_NOT_YET_KNOWN_TRIES: Final = 25
_NOT_YET_KNOWN_WAIT_SECONDS: Final = 0.2
MERCHANTS_MAX: Final = 32_768


async def ensure_accounts(tx: Change, tenant_id: int, node_id: int) -> int:
    """The tenant's bank clearing account, fee account and transit card, made if missing (on
    the change feed in this transaction, so the switch knows them long before a payout).
    Returns the transit card."""
    conn = tx.conn
    if not await conn.fetchval("SELECT true FROM system_accounts WHERE tenant_id = $1"
                               " AND purpose = 'bank_clearing'", tenant_id):
        merchant = await next_id(conn, "merchants", MERCHANTS_MAX)
        await conn.execute("INSERT INTO merchants (id, tenant_id, name, kind, node_id) VALUES"
                           " ($1, $2, 'bank clearing', 'system', $3)", merchant, tenant_id,
                           node_id)
        await conn.execute("INSERT INTO system_accounts VALUES ($1, 'bank_clearing', $2)",
                           tenant_id, merchant)
        tx.event(MerchantOpened(merchant, tenant_id))
    row = await conn.fetchrow("SELECT transit_card_no FROM settlement_accounts"
                              " WHERE tenant_id = $1", tenant_id)
    if row is not None:
        return int(row["transit_card_no"])
    fee = await next_id(conn, "merchants", MERCHANTS_MAX)
    await conn.execute("INSERT INTO merchants (id, tenant_id, name, kind, node_id) VALUES"
                       " ($1, $2, 'settlement fees', 'system', $3)", fee, tenant_id, node_id)
    tx.event(MerchantOpened(fee, tenant_id))
    account = await next_id(conn, "accounts", ACCOUNTS_MAX)
    class_id = await conn.fetchval("SELECT min(id) FROM identity_classes")
    await conn.execute("INSERT INTO accounts (id, tenant_id, class_id, holder_name) VALUES"
                       " ($1, $2, $3, 'settlement transit')", account, tenant_id, class_id)
    tx.event(AccountOpened(account, tenant_id, class_id))
    card = TRANSIT_CARD_BASE + tenant_id
    await conn.execute("INSERT INTO cards (card_no, account_id, printed_no) VALUES ($1, $2,"
                       " 'settlement transit')", card, account)
    tx.event(CardBound(card, account))
    await conn.execute("INSERT INTO settlement_accounts VALUES ($1, $2, $3, $4)", tenant_id,
                       account, card, fee)
    return card


async def store_pending(conn: Any, s: Settlement, document_id: int) -> None:
    """The computed figures as the pending settlement of the document."""
    await conn.execute(
        "INSERT INTO settlements (tenant_id, business_day, start_at, end_at, status,"
        " document_id, figures, figures_sha256) VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7)",
        s.tenant_id, s.business_day, s.start_at, s.end_at, document_id, encode(s).decode(),
        sha256(s))
    await conn.executemany(
        "INSERT INTO settlement_merchants (tenant_id, business_day, merchant_id, count,"
        " gross_fen, reversal_count, reversals_fen, fee_rate_bp, fee_fen, net_fen,"
        " settlement_cycle, due_on) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        [(s.tenant_id, s.business_day, m.merchant_id, m.count, m.gross_fen, m.reversal_count,
          m.reversals_fen, m.fee_rate_bp, m.fee_fen, m.net_fen, m.settlement_cycle, m.due_on)
         for m in s.merchants])
    rows = []
    for c in s.clearing:
        if c.our_cards_there_count or c.our_cards_there_fen:
            rows.append((s.tenant_id, s.business_day, s.tenant_id, c.other_tenant_id,
                         c.our_cards_there_count, c.our_cards_there_fen))
        if c.their_cards_here_count or c.their_cards_here_fen:
            rows.append((s.tenant_id, s.business_day, c.other_tenant_id, s.tenant_id,
                         c.their_cards_here_count, c.their_cards_here_fen))
    await conn.executemany("INSERT INTO settlement_clearing VALUES ($1, $2, $3, $4, $5, $6)",
                           rows)


def _chunks(amount: int) -> list[int]:
    out = []
    while amount > 0:
        out.append(min(amount, AMOUNT_FEN_MAX))
        amount -= out[-1]
    return out


async def on_approved(tx: Change, money: Money, doc: asyncpg.Record) -> None:
    """The last approval of a settlement document (in its transaction): freeze the day and
    draw the payouts. 409 (nothing changes) if the journal no longer gives the figures."""
    conn = tx.conn
    row = await conn.fetchrow("SELECT tenant_id, business_day, figures, status FROM settlements"
                              " WHERE document_id = $1 FOR UPDATE", doc["id"])
    if row is None or row["status"] != "pending":
        raise Problem(409, "conflict", f"document {doc['id']} holds no pending settlement")
    tenant, day = row["tenant_id"], row["business_day"]
    again = encode(await compute_settlement(conn, tenant, day)).decode()
    if again != row["figures"]:
        raise Problem(409, "figures-changed", f"the settlement of tenant {tenant} for {day} no "
                      "longer equals the journal (recomputed now); reject this document and "
                      "request the confirmation again")
    await conn.execute("UPDATE settlements SET status = 'confirmed', confirmed_at = now()"
                       " WHERE tenant_id = $1 AND business_day = $2", tenant, day)
    due = await conn.fetch(
        "SELECT sm.merchant_id, sum(sm.net_fen)::bigint AS net, sum(sm.fee_fen)::bigint AS fee"
        " FROM settlement_merchants sm JOIN settlements s USING (tenant_id, business_day)"
        " WHERE sm.tenant_id = $1 AND sm.paid_by IS NULL AND sm.due_on <= $2"
        " AND s.status = 'confirmed' GROUP BY sm.merchant_id ORDER BY sm.merchant_id",
        tenant, day)
    bank = await system_account(conn, tenant, "bank_clearing")
    fee_account = await conn.fetchval("SELECT fee_merchant_id FROM settlement_accounts"
                                      " WHERE tenant_id = $1", tenant)
    lines: list[tuple[Any, ...]] = []
    paid = []
    for d in due:
        net, fee = int(d["net"]), int(d["fee"])
        if net < 0 or fee < 0 or net + fee <= 0:
            continue  # carried forward
        paid.append(d["merchant_id"])
        for target, account, amount in (("bank_clearing", bank, net),
                                        ("fee", fee_account, fee)):
            for chunk in _chunks(amount):
                for leg, counter in ((1, d["merchant_id"]), (2, account)):
                    lines.append((doc["id"], len(lines) + 1, d["merchant_id"], leg, target,
                                  counter, chunk, money.terminal_id,
                                  await money.next_txn_seq(conn)))
    await conn.executemany(
        "INSERT INTO settlement_payouts (document_id, line_no, merchant_id, leg, target,"
        " counter_merchant_id, amount_fen, terminal_id, txn_seq) VALUES"
        " ($1, $2, $3, $4, $5, $6, $7, $8, $9)", lines)
    await conn.execute(
        "UPDATE settlement_merchants sm SET paid_by = $3 FROM settlements s"
        " WHERE s.tenant_id = sm.tenant_id AND s.business_day = sm.business_day"
        " AND sm.tenant_id = $1 AND sm.paid_by IS NULL AND sm.due_on <= $2"
        " AND s.status = 'confirmed' AND sm.merchant_id = ANY($4::int[])", tenant, day,
        doc["id"], paid)
    tx.audit("settlement.confirm", "settlement", f"{tenant}/{day}", list(doc["node_path"]),
             before={"status": "pending"},
             after={"status": "confirmed", "payout_movements": len(lines),
                    "merchants_paid": paid})


async def execute_payouts(state: State, actor: Actor, doc_id: int) -> str:
    """Every payout movement not yet answered, in order, once. "" when all are approved, else
    why the document failed (a declined movement; the ones after it are not asked). Raises
    Problem 409/502/503 when the switch cannot decide now (the document stays approved)."""
    money: Money = state.money
    pool = state.pool
    card = await pool.fetchval(
        "SELECT a.transit_card_no FROM settlement_accounts a JOIN settlements s"
        " ON s.tenant_id = a.tenant_id WHERE s.document_id = $1", doc_id)
    select = "SELECT * FROM settlement_payouts WHERE document_id = $1 ORDER BY line_no"
    for line in await pool.fetch(select, doc_id):
        if line["result_code"] is None:
            known = await money.journaled(line["txn_seq"], line["terminal_id"])
            if known is not None:
                await _record(state, actor, doc_id, line["line_no"], known)
    for line in await pool.fetch(select, doc_id):
        if line["result_code"] is not None:
            if line["result_code"] != 0:
                return _declined(line)
            continue
        line_no = line["line_no"]

        async def renew(old: int, fresh: int, line_no: int = line_no) -> bool:
            return bool(await pool.fetchval(
                "UPDATE settlement_payouts SET txn_seq = $5 WHERE document_id = $1"
                " AND line_no = $2 AND terminal_id = $3 AND txn_seq = $4"
                " AND result_code IS NULL RETURNING true", doc_id, line_no, money.terminal_id,
                old, fresh))

        seq = line["txn_seq"]
        for _ in range(_NOT_YET_KNOWN_TRIES):
            try:
                out = await money.ask("credit" if line["leg"] == 1 else "debit", seq, card, 0,
                                      line["amount_fen"], line["counter_merchant_id"],
                                      terminal_id=line["terminal_id"], renew=renew)
            except Problem as exc:
                raise Problem(exc.status, exc.slug, f"settlement document {doc_id} is approved "
                              f"and its payouts will be made once: "
                              f"{exc.detail.split(';')[0]}; POST /documents/{doc_id}/execute "
                              "again later") from None
            if out.code not in _NOT_YET_KNOWN:
                break
            # The switch has not applied the change feed's new transit card or account yet
            # (made when the confirmation was requested). A decline moved nothing: ask again
            # under a fresh txn_seq, stored compare-and-set like a renewal.
            fresh = await money.next_txn_seq(pool)
            if not await renew(out.txn_seq, fresh):
                raise Problem(409, "in-progress", f"another request carries settlement "
                              f"document {doc_id}'s payouts: look again in a moment")
            seq = fresh
            await asyncio.sleep(_NOT_YET_KNOWN_WAIT_SECONDS)
        await _record(state, actor, doc_id, line_no, out)
        if not out.approved:
            return _declined(line, out.result)
    return ""


def _declined(line: asyncpg.Record, result: str | None = None) -> str:
    why = result or str(line["result_code"])
    return (f"payout movement {line['line_no']} (merchant {line['merchant_id']}, leg "
            f"{line['leg']}, {line['amount_fen']} fen) was declined by the switch: {why}; the "
            "movements after it were not asked")


async def _record(state: State, actor: Actor, doc_id: int, line_no: int, out: Outcome) -> None:
    async with change(state.pool, actor) as tx:
        await tx.conn.execute(
            "UPDATE settlement_payouts SET result_code = $3, txn_seq = $4"
            " WHERE document_id = $1 AND line_no = $2", doc_id, line_no, out.code, out.txn_seq)
