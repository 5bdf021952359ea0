"""Reports: a merchant's and a terminal's transactions, daily and monthly summaries, declined and
exception transactions; as JSON pages and as CSV or XLSX downloads (`?format=csv|xlsx`).

Everything is read from the journal, the one record of what the switch decided. A row's time is
its commit time (`committed_at`, when it became durable: the time a statement shows) in the
local time of the merchant's tenant (`tenants.utc_offset_s`); its meal is the tenant's meal
window (`tenant_meal_windows`, as configured now) that holds that local minute. Day ranges are
local days, both ends included, at most DAYS_MAX of them: a report reads the journal by commit
time through the BRIN index of migrations/sql/0003_admin.sql, and by terminal through
`journal_request_once`; no index was added for reports (each would slow the switch's COPY).

Money is integer fen everywhere; downloads add a yuan column formatted from the integers.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Annotated, Any, Final, Literal

import asyncpg
import msgspec
from litestar import Response, get
from litestar.datastructures import State
from litestar.params import Parameter

from admin_api._auth import Actor
from admin_api._downloads import DownloadOperation, Format, download
from admin_api._problems import FieldError, Problem
from admin_api._routes_merchants import (
    MealWindow,
    meal_windows_of,
    merchant_in_scope,
    tenant_in_scope,
    terminal_in_scope,
)
from admin_api._routes_queries import CODE_NAMES, KIND_NAMES
from admin_api._types import INT32_MAX, After, Id, Limit, OptionalId
from protocols import ocp

Period = Literal["day", "month"]
DAYS_MAX = 400
"""Longest day range of one report (a year and a month)."""
EXPORT_ROWS_MAX = 100_000
"""Most rows of one download; a longer one asks for a narrower range."""

_RC = ocp.ResponseCode
CATEGORIES: dict[str, frozenset[int]] = {
    "illegal_card": frozenset({_RC.UNKNOWN_CARD, _RC.CARD_LOST, _RC.CARD_CANCELLED,
                               _RC.ACCOUNT_CLOSED, _RC.ACCOUNT_FROZEN,
                               _RC.CROSS_TENANT_NOT_ALLOWED}),
    "insufficient_funds": frozenset({_RC.INSUFFICIENT_FUNDS}),
    "limit_exceeded": frozenset({_RC.TXN_LIMIT_EXCEEDED, _RC.DAILY_LIMIT_EXCEEDED,
                                 _RC.MEAL_AMOUNT_LIMIT_EXCEEDED, _RC.MEAL_COUNT_LIMIT_EXCEEDED,
                                 _RC.BALANCE_LIMIT_EXCEEDED, _RC.HOLDS_LIMIT_EXCEEDED}),
}
DECLINED: frozenset[int] = frozenset(
    int(c) for c, info in ocp.CODE_INFO.items() if info.kind == ocp.CodeKind.DECLINE)
"""Every code the switch journals as a decline."""
CATEGORIES["other"] = DECLINED - frozenset().union(*CATEGORIES.values())
_CATEGORY_OF = {int(code): name for name, codes in CATEGORIES.items() for code in codes}
_KIND_IDS = {name: kind for kind, name in KIND_NAMES.items()}
_CODE_IDS = {code.name: int(code) for code in ocp.ResponseCode}


def category(code: int) -> str:
    """approved, illegal_card, insufficient_funds, limit_exceeded or other."""
    return "approved" if code == 0 else _CATEGORY_OF.get(code, "other")


class Txn(msgspec.Struct):
    """One journal row in a report. Amounts in fen; merchant_delta_fen is the merchant's
    change (a purchase's amount, minus for a reversal, 0 for a decline)."""

    lsn: int
    at: dt.datetime
    local_day: dt.date
    local_time: str
    meal: str | None
    """The meal window of the local time; null outside every window."""
    kind: str
    result: str
    category: str
    terminal_id: int
    txn_seq: int
    card_no: int
    account_id: int
    merchant_id: int
    amount_fen: int
    merchant_delta_fen: int
    main_delta_fen: int
    subsidy_delta_fen: int


class TxnPage(msgspec.Struct):
    tenant_id: int
    utc_offset_s: int
    from_day: dt.date
    to_day: dt.date
    items: list[Txn]
    next_after_lsn: int | None
    """Pass as `after_lsn` for the next page; null on the last page."""


class SummaryRow(msgspec.Struct):
    period: str
    """The local day (2024-05-01) or month (2024-05)."""
    meal: str | None
    """With by_meal: the meal window (null outside every window)."""
    merchant_id: int | None
    """The merchant (per-merchant summaries, and per-tenant ones with by_merchant)."""
    kind: str
    result: str
    category: str
    count: int
    amount_fen: int
    merchant_delta_fen: int


class Summary(msgspec.Struct):
    tenant_id: int
    utc_offset_s: int
    period: Period
    from_day: dt.date
    to_day: dt.date
    items: list[SummaryRow]
    next_after: int | None
    """Rows so far: pass as `after` for the next page; null on the last page."""


# -- filters ---------------------------------------------------------------------------------------


def _bad(field: str, message: str) -> Problem:
    return Problem(400, "invalid-request", "the request does not match its schema",
                   errors=[FieldError(field=field, message=message)])


def _codes(result: str | None) -> list[int] | None:
    """`result`: comma-separated approved, declined, a category, or a code name."""
    if result is None or result == "all":
        return None
    codes: set[int] = set()
    for word in result.split(","):
        w = word.strip()
        if w.lower() == "approved":
            codes.add(0)
        elif w.lower() == "declined":
            codes |= DECLINED
        elif w.lower() in CATEGORIES:
            codes |= CATEGORIES[w.lower()]
        elif _CODE_IDS.get(w.upper(), -1) in DECLINED:
            codes.add(_CODE_IDS[w.upper()])
        else:
            raise _bad("result", f"{w!r} is not approved, declined, one of "
                       f"{', '.join(CATEGORIES)} or a journaled response code name")
    return sorted(codes)


def _kinds(kind: str | None, inquiries: bool) -> list[int] | None:
    if kind is None:
        return None if inquiries else sorted(k for k in KIND_NAMES if k != 3)
    kinds = set()
    for word in kind.split(","):
        if word.strip().lower() not in _KIND_IDS:
            raise _bad("kind", f"{word!r} is not one of {', '.join(_KIND_IDS)}")
        kinds.add(_KIND_IDS[word.strip().lower()])
    return sorted(kinds)


class _Range(msgspec.Struct, frozen=True):
    from_day: dt.date
    to_day: dt.date
    start: dt.datetime
    """UTC instant of from_day's local midnight."""
    end: dt.datetime
    """UTC instant of the local midnight after to_day."""


def day_range(utc_offset_s: int, from_day: dt.date | None, to_day: dt.date | None,
              period: Period = "day") -> _Range:
    """Local days, both ends included; today (this month, for months) by default."""
    offset = dt.timedelta(seconds=utc_offset_s)
    last = to_day or (dt.datetime.now(dt.UTC) + offset).date()
    first = from_day or (last.replace(day=1) if period == "month" else last)
    if first.year < 1970 or last.year > 9998:
        raise Problem(422, "unprocessable", "days from 1970 to 9998 only")
    if first > last:
        raise Problem(422, "unprocessable", "from_day is after to_day")
    if (last - first).days >= DAYS_MAX:
        raise Problem(422, "unprocessable", f"at most {DAYS_MAX} days in one report")
    start = dt.datetime.combine(first, dt.time(), dt.UTC) - offset
    end = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), dt.UTC) - offset
    return _Range(first, last, start, end)


_REPORT_TURNS: dict[int, asyncio.Semaphore] = {}
REPORT_QUERIES_MAX_DEFAULT: Final = 1


def report_queries_max(pool: Any, n: int) -> None:
    """Set how many report summaries run at once against `pool` (setting
    report_queries_max); called once at the admin API's start."""
    _REPORT_TURNS[id(pool)] = asyncio.Semaphore(n)


def _report_turn(pool: Any) -> asyncio.Semaphore:
    turn = _REPORT_TURNS.get(id(pool))
    if turn is None:
        turn = _REPORT_TURNS[id(pool)] = asyncio.Semaphore(REPORT_QUERIES_MAX_DEFAULT)
    return turn


class _Sql:
    """Numbered parameters, in order."""

    def __init__(self) -> None:
        self.args: list[Any] = []

    def __call__(self, value: Any) -> str:
        self.args.append(value)
        return f"${len(self.args)}"


def _from(q: _Sql, utc_offset_s: int, windows: list[MealWindow]) -> str:
    """journal j with its local day (l.day, days since 1970-01-01), local minute (l.minute)
    and meal (w.meal: the index of its window in `windows`, NULL outside every window).
    Integer arithmetic on the epoch: a summary evaluates these for every row of its range."""
    cases = " ".join(
        f"WHEN l.minute >= {q(w.start_minute)}::int AND l.minute < {q(w.end_minute)}::int"
        f" THEN {n}" for n, w in enumerate(windows))
    meal = f"CASE {cases} END" if windows else "NULL::int"
    return (
        " FROM journal j CROSS JOIN LATERAL (SELECT (s.local_s / 86400)::int AS day,"
        " (s.local_s % 86400 / 60)::int AS minute FROM (SELECT floor(date_part('epoch',"
        f" j.committed_at))::bigint + {q(utc_offset_s)}::bigint AS local_s) s) l"
        f" CROSS JOIN LATERAL (SELECT {meal} AS meal) w"
    )


def _where(q: _Sql, scope: str, r: _Range, windows: list[MealWindow], meal: str | None,
           kinds: list[int] | None, codes: list[int] | None) -> str:
    sql = (f" WHERE {scope} AND j.committed_at >= {q(r.start)} AND j.committed_at < {q(r.end)}")
    if kinds is not None:
        sql += f" AND j.kind = ANY({q(kinds)}::smallint[])"
    if codes is not None:
        sql += f" AND j.code = ANY({q(codes)}::smallint[])"
    if meal is not None:
        window = next((w for w in windows if w.name == meal), None)
        if window is not None:
            sql += (f" AND l.minute >= {q(window.start_minute)}::int"
                    f" AND l.minute < {q(window.end_minute)}::int")
        elif meal == "none":
            sql += " AND w.meal IS NULL"
        else:
            raise Problem(422, "unprocessable", f"no meal window {meal!r}: the tenant has "
                          f"{', '.join(w.name for w in windows) or 'none'}")
    return sql


# -- downloads -------------------------------------------------------------------------------------


def txn(r: asyncpg.Record, utc_offset_s: int, windows: list[MealWindow]) -> Txn:
    at: dt.datetime = r["committed_at"]
    local = at.astimezone(dt.UTC).replace(tzinfo=None) + dt.timedelta(seconds=utc_offset_s)
    meal = r["meal"]
    return Txn(lsn=r["lsn"], at=at, local_day=local.date(),
               local_time=local.strftime("%H:%M:%S"),
               meal=None if meal is None else windows[meal].name,
               kind=KIND_NAMES.get(r["kind"], str(r["kind"])),
               result=CODE_NAMES.get(r["code"], str(r["code"])), category=category(r["code"]),
               terminal_id=r["terminal_id"], txn_seq=r["txn_seq"], card_no=r["card_no"],
               account_id=r["account_id"], merchant_id=r["merchant_id"],
               amount_fen=r["amount_fen"], merchant_delta_fen=r["merchant_delta_fen"],
               main_delta_fen=r["main_delta_fen"], subsidy_delta_fen=r["subsidy_delta_fen"])


class _TxnQuery(msgspec.Struct, frozen=True):
    """What the three transaction lists share."""

    from_day: dt.date | None
    to_day: dt.date | None
    meal: str | None
    result: str | None
    kind: str | None
    inquiries: bool
    after_lsn: int
    limit: int
    format: Format


async def _transactions(pool: asyncpg.Pool, name: str, tenant: Any,
                        scope: str, scope_args: list[Any], f: _TxnQuery,
                        default_result: str | None = None) -> Response[Any]:
    offset = tenant["utc_offset_s"]
    r = day_range(offset, f.from_day, f.to_day)
    windows = await meal_windows_of(pool, tenant["id"])
    q = _Sql()
    for value in scope_args:
        q(value)
    sql = (
        "SELECT j.lsn, j.committed_at, j.kind, j.code, j.terminal_id, j.txn_seq, j.card_no,"
        " j.account_id, j.merchant_id, j.amount_fen, j.merchant_delta_fen, j.main_delta_fen,"
        " j.subsidy_delta_fen, w.meal"
        + _from(q, offset, windows)
        + _where(q, scope, r, windows, f.meal, _kinds(f.kind, f.inquiries),
                 _codes(f.result or default_result))
        # "+ 0": not in lsn index order. From the primary key, PostgreSQL would walk the
        # journal from after_lsn until it reached the day range; the range comes first.
        + f" AND j.lsn > {q(f.after_lsn)} ORDER BY j.lsn + 0"
    )
    export = f.format != "json"
    limit = EXPORT_ROWS_MAX if export else f.limit
    rows = await pool.fetch(sql + f" LIMIT {q(limit + 1)}", *q.args)
    if export:
        if len(rows) > EXPORT_ROWS_MAX:
            raise Problem(422, "unprocessable", f"more than {EXPORT_ROWS_MAX} rows: narrow the "
                          "day range, or page through the JSON")
        return await download(f.format, f"{name}-{r.from_day}_{r.to_day}",
                              [txn(row, offset, windows) for row in rows],
                              Txn.__struct_fields__)
    items = [txn(row, offset, windows) for row in rows[:limit]]
    return Response(TxnPage(tenant_id=tenant["id"], utc_offset_s=offset, from_day=r.from_day,
                            to_day=r.to_day, items=items,
                            next_after_lsn=items[-1].lsn if len(rows) > limit else None))


def _tenant_of(row: Any) -> dict[str, Any]:
    """The tenant fields the reports read (`id`, `utc_offset_s`), from a merchant's or a
    terminal's row."""
    return {"id": row["tenant_id"], "utc_offset_s": row["utc_offset_s"]}


_DAY = Annotated[dt.date | None, Parameter(description="First local day (default: today)")]
_TO_DAY = Annotated[dt.date | None, Parameter(description="Last local day, included "
                                              "(default: today)")]
_MEAL = Annotated[str | None, Parameter(max_length=40, description=(
    "A meal window's name, or `none` for times outside every window"))]
_RESULT = Annotated[str | None, Parameter(max_length=200, description=(
    "Comma-separated: `approved`, `declined`, a category (`illegal_card`, "
    "`insufficient_funds`, `limit_exceeded`, `other`) or a response code name "
    "(`CARD_LOST`); `all` for every row"))]
_KIND = Annotated[str | None, Parameter(max_length=200, description=(
    "Comma-separated journal kinds: " + ", ".join(KIND_NAMES.values())))]
_FORMAT = Annotated[Format, Parameter(description=(
    "json (a page), or csv / xlsx: a download of every row from after_lsn (at most "
    f"{EXPORT_ROWS_MAX})"))]


@get("/merchants/{merchant_id:int}/transactions", opt={"permission": "reports.read"},
     tags=["reports"], operation_class=DownloadOperation,
     summary="A merchant's transactions by day, meal and result (JSON, CSV, "
     "XLSX)")
async def merchant_transactions(
        merchant_id: Id, actor: Actor, state: State, from_day: _DAY = None,
        to_day: _TO_DAY = None, meal: _MEAL = None, result: _RESULT = None, kind: _KIND = None,
        inquiries: bool = False, after_lsn: After = 0, limit: Limit = 200,
        format: _FORMAT = "json") -> Response[TxnPage]:
    merchant = await merchant_in_scope(state.pool, actor, merchant_id)
    tenant = _tenant_of(merchant)
    f = _TxnQuery(from_day, to_day, meal, result, kind, inquiries, after_lsn, limit, format)
    return await _transactions(state.pool, f"merchant-{merchant_id}-transactions",
                               tenant, "j.merchant_id = $1", [merchant_id], f)


@get("/terminals/{terminal_id:int}/transactions", opt={"permission": "reports.read"},
     tags=["reports"], operation_class=DownloadOperation,
     summary="A terminal's transactions by day, meal and result (JSON, CSV, "
     "XLSX)")
async def terminal_transactions(
        terminal_id: Id, actor: Actor, state: State, from_day: _DAY = None,
        to_day: _TO_DAY = None, meal: _MEAL = None, result: _RESULT = None, kind: _KIND = None,
        inquiries: bool = False, after_lsn: After = 0, limit: Limit = 200,
        format: _FORMAT = "json") -> Response[TxnPage]:
    terminal = await terminal_in_scope(state.pool, actor, terminal_id)
    tenant = _tenant_of(terminal)
    f = _TxnQuery(from_day, to_day, meal, result, kind, inquiries, after_lsn, limit, format)
    # The site's admin terminal serves every tenant's cardholders: a tenant sees only the rows
    # of its own system accounts (its cash desk, subsidy fund, adjustments).
    return await _transactions(state.pool, f"terminal-{terminal_id}-transactions",
                               tenant, "j.terminal_id = $1 AND j.merchant_tenant_id = $2",
                               [terminal_id, terminal["tenant_id"]], f)


@get("/tenants/{tenant_id:int}/exceptions", opt={"permission": "reports.read"},
     tags=["reports"], operation_class=DownloadOperation,
     summary="Declined and exception transactions at a tenant's merchants: "
     "illegal card, insufficient funds, limit exceeded, other (JSON, CSV, XLSX)")
async def tenant_exceptions(
        tenant_id: Id, actor: Actor, state: State, from_day: _DAY = None,
        to_day: _TO_DAY = None, meal: _MEAL = None,
        result: Annotated[str | None, Parameter(max_length=200, description=(
            "As for transactions; default `declined` (every decline)"))] = None,
        merchant_id: OptionalId = None, terminal_id: OptionalId = None,
        after_lsn: After = 0, limit: Limit = 200,
        format: _FORMAT = "json") -> Response[TxnPage]:
    tenant = await tenant_in_scope(state.pool, actor, tenant_id)
    codes = _codes(result or "declined")
    if codes is not None and 0 in codes:
        raise _bad("result", "exceptions are declines: `approved` is not one")
    f = _TxnQuery(from_day, to_day, meal, result, None, True, after_lsn, limit, format)
    scope = ("j.merchant_tenant_id = $1 AND ($2::int IS NULL OR j.merchant_id = $2)"
             " AND ($3::int IS NULL OR j.terminal_id = $3)")
    return await _transactions(state.pool, f"tenant-{tenant_id}-exceptions", tenant, scope,
                               [tenant_id, merchant_id, terminal_id], f,
                               default_result="declined")


# -- summaries -------------------------------------------------------------------------------------


async def _summary(pool: asyncpg.Pool, name: str, tenant: Any, scope: str,
                   scope_args: list[Any], period: Period, from_day: dt.date | None,
                   to_day: dt.date | None, by_meal: bool, by_merchant: bool, after: int,
                   limit: int, fmt: Format) -> Response[Any]:
    offset = tenant["utc_offset_s"]
    r = day_range(offset, from_day, to_day, period)
    windows = await meal_windows_of(pool, tenant["id"])
    q = _Sql()
    for value in scope_args:
        q(value)
    meal_sql = "w.meal" if by_meal else "NULL::int"
    merchant_sql = "j.merchant_id" if by_merchant else "NULL::int"
    sql = (
        f"SELECT l.day, {meal_sql} AS meal, {merchant_sql} AS merchant_id, j.kind, j.code,"
        " count(*) AS n, coalesce(sum(j.amount_fen), 0)::bigint AS amount,"
        " coalesce(sum(j.merchant_delta_fen), 0)::bigint AS net"
        + _from(q, offset, windows)
        + _where(q, scope, r, windows, None, None, None)
        + " GROUP BY 1, 2, 3, 4, 5"
    )
    # Days to periods here: the database sums per local day, we add the days of a month.
    epoch = dt.date(1970, 1, 1)
    sums: dict[tuple[str, int, int, int, int], list[int]] = {}
    async with _report_turn(pool):
        rows = await pool.fetch(sql, *q.args)
    for row in rows:
        day = epoch + dt.timedelta(days=row["day"])
        key = (day.isoformat() if period == "day" else day.strftime("%Y-%m"),
               len(windows) if row["meal"] is None else row["meal"],
               row["merchant_id"] or 0, row["kind"], row["code"])
        acc = sums.setdefault(key, [0, 0, 0])
        acc[0] += row["n"]
        acc[1] += row["amount"]
        acc[2] += row["net"]
    items = [SummaryRow(period=p, meal=windows[meal].name if by_meal and meal < len(windows)
                        else None,
                        merchant_id=merchant or None, kind=KIND_NAMES.get(kind, str(kind)),
                        result=CODE_NAMES.get(code, str(code)), category=category(code),
                        count=n, amount_fen=amount, merchant_delta_fen=net)
             for (p, meal, merchant, kind, code), (n, amount, net) in sorted(sums.items())]
    if fmt != "json":
        return await download(fmt, f"{name}-{period}-{r.from_day}_{r.to_day}", items,
                              SummaryRow.__struct_fields__)
    page = items[after:after + limit]
    more = len(items) > after + limit
    return Response(Summary(tenant_id=tenant["id"], utc_offset_s=offset, period=period,
                            from_day=r.from_day, to_day=r.to_day, items=page,
                            next_after=after + limit if more else None))


_PERIOD = Annotated[Period, Parameter(description="day: one row per local day; month: per "
                                      "local month")]
_BY_MEAL = Annotated[bool, Parameter(description="Also by meal window")]
_AFTER_ROWS = Annotated[int, Parameter(ge=0, le=INT32_MAX,
                                        description="Rows already read (`next_after`)")]
_SUMMARY_FORMAT = Annotated[Format, Parameter(description="json (a page), or a csv / xlsx "
                                              "download of every row")]


@get("/merchants/{merchant_id:int}/summary", opt={"permission": "reports.read"},
     tags=["reports"], operation_class=DownloadOperation,
     summary="A merchant's daily or monthly summary: counts and sums by kind "
     "and result (JSON, CSV, XLSX)")
async def merchant_summary(merchant_id: Id, actor: Actor, state: State,
                           period: _PERIOD = "day", from_day: _DAY = None,
                           to_day: _TO_DAY = None, by_meal: _BY_MEAL = False,
                           after: _AFTER_ROWS = 0, limit: Limit = 1000,
                           format: _SUMMARY_FORMAT = "json") -> Response[Summary]:
    merchant = await merchant_in_scope(state.pool, actor, merchant_id)
    tenant = _tenant_of(merchant)
    return await _summary(state.pool, f"merchant-{merchant_id}-summary", tenant,
                          "j.merchant_id = $1", [merchant_id], period, from_day, to_day,
                          by_meal, True, after, limit, format)


@get("/tenants/{tenant_id:int}/summary", opt={"permission": "reports.read"}, tags=["reports"],
     operation_class=DownloadOperation,
     summary="A tenant's daily or monthly summary of its merchants: counts and sums by kind "
     "and result (JSON, CSV, XLSX)")
async def tenant_summary(tenant_id: Id, actor: Actor, state: State, period: _PERIOD = "day",
                         from_day: _DAY = None, to_day: _TO_DAY = None,
                         by_meal: _BY_MEAL = False,
                         by_merchant: Annotated[bool, Parameter(
                             description="Also by merchant")] = False,
                         after: _AFTER_ROWS = 0, limit: Limit = 1000,
                         format: _SUMMARY_FORMAT = "json") -> Response[Summary]:
    tenant = await tenant_in_scope(state.pool, actor, tenant_id)
    return await _summary(state.pool, f"tenant-{tenant_id}-summary", tenant,
                          "j.merchant_tenant_id = $1", [tenant_id], period, from_day, to_day,
                          by_meal, by_merchant, after, limit, format)


ROUTES = [merchant_transactions, terminal_transactions, tenant_exceptions, merchant_summary,
          tenant_summary]
