"""Counter money: cash top-ups and transfers between a person's wallets, through the switch.

Every money request carries an `Idempotency-Key` header (1-128 characters, unique per log-in).
The first request with a key is carried out once; every repeat of it (same key, same body)
gets the first answer, even after a timeout, a crash of the admin API or of the switch; the
same key with another body is refused (422). The key's txn_seq is stored before the switch is
asked, so "was it done?" always has one answer: the switch's journal.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, post
from litestar.datastructures import State
from litestar.params import HeaderParameter
from msgspec import Meta

from admin_api._auth import Actor
from admin_api._money import Money, Outcome, card_of, system_account
from admin_api._problems import MEDIA_TYPE, Problem, ProblemBody
from admin_api._routes_people import person_in_scope
from admin_api._store import change
from admin_api._types import Id

AMOUNT_FEN_MAX = 10_000_000
"""One movement at the counter: at most 100,000 yuan (the OCP amount limit)."""
Amount = Annotated[int, Meta(ge=1, le=AMOUNT_FEN_MAX, description="fen (1 yuan = 100 fen)")]
IdempotencyKey = Annotated[str, HeaderParameter(name="Idempotency-Key", min_length=1,
                                                max_length=128,
                                          description="unique per log-in; a repeat gets the "
                                          "first answer")]
WALLETS = {"main": 0, "subsidy": 1}


class TopUpIn(msgspec.Struct, forbid_unknown_fields=True):
    amount_fen: Amount
    note: Annotated[str, Meta(max_length=200)] = ""


class TransferIn(msgspec.Struct, forbid_unknown_fields=True):
    from_wallet: Literal["main", "subsidy"]
    amount_fen: Amount
    note: Annotated[str, Meta(max_length=200)] = ""


class MovementOut(msgspec.Struct):
    """What the switch decided and journaled."""

    person_id: int
    card_no: int
    kind: Literal["credit", "transfer"]
    """The journal row's kind, as statements and reports name it (a top-up is a credit)."""
    result: str
    amount_fen: int
    """What moved (0 when declined)."""
    main_fen: int
    subsidy_fen: int
    balance_fen: int
    terminal_id: int
    txn_seq: int


def _sha(body: bytes, path: str) -> bytes:
    return hashlib.sha256(path.encode() + b"\0" + body).digest()


async def _idempotent(request: Request[Any, Any, Any], state: State, actor: Actor, key: str,
                      run: Any) -> Response[Any]:
    """Run `run(movement) -> (status, body, audit)` once per (log-in, key). `movement` knows
    the stored (terminal, txn_seq) and can renew the txn_seq (compare-and-set, stored before
    it is used). Repeats of the key wait for the one in progress in this process and get its
    answer; the answer and its one audit row are stored by whichever request stores first."""
    if actor.user_id <= 0:
        raise Problem(403, "forbidden", "money requests need a log-in, not an API key")
    money: Money = state.money
    digest = _sha(await request.body(), request.url.path)
    async with money.lock((actor.user_id, key)):
        return await _once(state, actor, key, digest, run)


def _replay(row: Any) -> Response[Any]:
    return Response(msgspec.json.decode(row["response"]), status_code=row["status_code"],
                    media_type=MEDIA_TYPE if row["status_code"] >= 400 else None,
                    headers={"Idempotent-Replay": "true"})


async def _once(state: State, actor: Actor, key: str, digest: bytes, run: Any
                ) -> Response[Any]:
    money: Money = state.money
    async with state.pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "SELECT request_sha256, status_code, response::text, terminal_id, txn_seq"
            " FROM idempotency_keys WHERE user_id = $1 AND key = $2 FOR UPDATE",
            actor.user_id, key)
        if row is not None:
            if row["request_sha256"] != digest:
                raise Problem(422, "idempotency-key-reused", "this Idempotency-Key was used for "
                              "another request; use a new key for a new request")
            if row["response"] is not None:
                return _replay(row)
            terminal, txn_seq = row["terminal_id"], row["txn_seq"]
        else:
            terminal, txn_seq = money.terminal_id, await money.next_txn_seq(conn)
            await conn.execute(
                "INSERT INTO idempotency_keys (user_id, key, request_sha256, terminal_id, txn_seq)"
                " VALUES ($1, $2, $3, $4, $5)", actor.user_id, key, digest, money.terminal_id,
                txn_seq)

    async def renew(old: int, fresh: int) -> bool:
        return bool(await state.pool.fetchval(
            "UPDATE idempotency_keys SET txn_seq = $5 WHERE user_id = $1 AND key = $2"
            " AND terminal_id = $3 AND txn_seq = $4 AND response IS NULL RETURNING true",
            actor.user_id, key, money.terminal_id, old, fresh))

    status, body, audit = await run(Movement(terminal, txn_seq, renew))
    async with change(state.pool, actor) as tx:
        stored = await tx.conn.fetchval(
            "UPDATE idempotency_keys SET status_code = $3, response = $4::jsonb"
            " WHERE user_id = $1 AND key = $2 AND response IS NULL RETURNING true",
            actor.user_id, key, status, msgspec.json.encode(body).decode())
        if stored:
            tx.audit(*audit[:4], after=audit[4])
    if not stored:  # another process answered this key from the journal first
        return _replay(await state.pool.fetchrow(
            "SELECT status_code, response::text FROM idempotency_keys WHERE user_id = $1"
            " AND key = $2", actor.user_id, key))
    return Response(body, status_code=status, media_type=MEDIA_TYPE if status >= 400 else None)


class Movement:
    """A money request's stored (terminal, txn_seq), and how to replace a stale txn_seq."""

    __slots__ = ("renew", "terminal_id", "txn_seq")

    def __init__(self, terminal_id: int, txn_seq: int, renew: Any) -> None:
        self.terminal_id = terminal_id
        self.txn_seq = txn_seq
        self.renew = renew


_JOURNAL_KINDS: dict[str, Literal["credit", "transfer"]] = {"topup": "credit",
                                                             "transfer": "transfer"}


def _result(person_id: int, card_no: int, kind: str, out: Outcome, terminal_id: int
            ) -> tuple[int, Any]:
    moved = MovementOut(person_id=person_id, card_no=card_no, kind=_JOURNAL_KINDS[kind],
                        result=out.result,
                        amount_fen=out.amount_fen, main_fen=out.main_fen,
                        subsidy_fen=out.subsidy_fen, balance_fen=out.main_fen + out.subsidy_fen,
                        terminal_id=terminal_id, txn_seq=out.txn_seq)
    if out.approved:
        return 201, moved
    problem = ProblemBody(type="https://onecard.example/problems/declined", title="Declined",
                          status=422, detail=f"the switch declined: {out.result}; nothing moved")
    return 422, problem


@post("/people/{person_id:int}/topups", opt={"permission": "money.counter", "switch": True},
      tags=["money"], summary="Cash top-up at the counter: the cash desk pays the main wallet")
async def top_up(person_id: Id, data: TopUpIn, idempotency_key: IdempotencyKey, actor: Actor,
                 state: State, request: Request[Any, Any, Any]) -> Response[MovementOut]:
    person = await person_in_scope(state.pool, actor, person_id)
    money: Money = state.money

    async def ask(card_no: int, m: Movement) -> Outcome:
        cash_desk = await system_account(state.pool, person["tenant_id"], "cash_desk")
        return await money.ask("credit", m.txn_seq, card_no, 0, data.amount_fen, cash_desk,
                               terminal_id=m.terminal_id, renew=m.renew)

    async def run(m: Movement) -> tuple[int, Any, tuple[Any, ...]]:
        return await _move(state, person_id, person, m, "topup", ask,
                           {"amount_fen": data.amount_fen, "note": data.note})

    return await _idempotent(request, state, actor, idempotency_key, run)


@post("/people/{person_id:int}/transfers", opt={"permission": "money.counter", "switch": True},
      tags=["money"], summary="Move money between a person's main and subsidy wallets")
async def transfer(person_id: Id, data: TransferIn, idempotency_key: IdempotencyKey,
                   actor: Actor, state: State, request: Request[Any, Any, Any]
                   ) -> Response[MovementOut]:
    person = await person_in_scope(state.pool, actor, person_id)
    money: Money = state.money

    async def ask(card_no: int, m: Movement) -> Outcome:
        return await money.ask("transfer", m.txn_seq, card_no, WALLETS[data.from_wallet],
                               data.amount_fen, terminal_id=m.terminal_id, renew=m.renew)

    async def run(m: Movement) -> tuple[int, Any, tuple[Any, ...]]:
        return await _move(state, person_id, person, m, "transfer", ask,
                           {"from_wallet": data.from_wallet, "amount_fen": data.amount_fen,
                            "note": data.note})

    return await _idempotent(request, state, actor, idempotency_key, run)


async def _move(state: State, person_id: int, person: Any, m: Movement, kind: str,
                ask: Callable[[int, Movement], Awaitable[Outcome]], details: dict[str, Any]
                ) -> tuple[int, Any, tuple[Any, ...]]:
    """One counter movement for `_idempotent`: the journaled outcome of a retry (whatever
    became of the card since), else `ask(card_no, m)`; the response and the audit entry."""
    money: Money = state.money
    out = await money.journaled(m.txn_seq, m.terminal_id)
    card_no = await _card_of_outcome(state, person, m)
    if out is None:
        out = await ask(card_no, m)
    status, body = _result(person_id, card_no, kind, out, m.terminal_id)
    return status, body, (f"money.{kind}", "person", person_id, list(person["path"]),
                          {**details, "result": out.result, "txn_seq": out.txn_seq})


async def _card_of_outcome(state: State, person: Any, m: Movement) -> int:
    """The card a journaled movement used, else the person's card now."""
    card = await state.pool.fetchval(
        "SELECT card_no FROM journal WHERE terminal_id = $1 AND txn_seq = $2", m.terminal_id,
        m.txn_seq)
    return int(card) if card is not None else await card_of(state.pool, person["account_id"])


ROUTES = [top_up, transfer]
