"""Change events: what the admin side changed, as the switch decodes and applies it.

An event is one row of `change_outbox` (migrations/sql/0002_change_feed.sql): a `kind` from a
closed set and a `payload`, a JSON object holding the new state (ids and fields). Each kind has
one msgspec Struct; decoding is strict (no "1" for 1) and checks every range, so a bad payload is
refused whole with the path of the bad field. Unknown fields are ignored, so a newer writer may
append a field (with a default) before every switch knows it.

Applying is idempotent: the same event twice, or an event whose change the start-up snapshot
already holds, changes nothing. A change the balance cache cannot take (a card already bound to
another account, an id beyond `accounts_max`, an account opened with money in it) raises
ChangeEventError naming the reason; the feed logs it, counts it and goes on.

Stream entries (the relay's copy of a row in Redis) carry an HMAC keyed from the site master
secret, so whoever can write to Redis cannot unfreeze a lost card: an entry that does not verify
is ignored and the switch reads PostgreSQL instead.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING, Annotated

import msgspec
from msgspec import Meta

from ledger_ext import AMOUNT_FEN_MAX, LedgerError
from switch._errors import SwitchError
from switch._masterdata import TerminalInfo

if TYPE_CHECKING:
    from ledger_ext import Ledger
    from switch._masterdata import MasterData


class ChangeEventError(SwitchError):
    """A change event or stream entry cannot be decoded, verified or applied."""


_Id32 = Annotated[int, Meta(ge=1, le=2**31 - 1)]
_TenantId = Annotated[int, Meta(ge=1, le=4096)]
_ClassId = Annotated[int, Meta(ge=1, le=255)]
_Status = Annotated[int, Meta(ge=0, le=3)]
_CardNo = Annotated[int, Meta(ge=1, le=2**63 - 1)]
_Fen = Annotated[int, Meta(ge=0, le=10**12)]
_Minute = Annotated[int, Meta(ge=0, le=1440)]


class AccountOpened(msgspec.Struct, frozen=True):
    """A new account. Opened while switches run, it holds no money: money comes in through
    the switch (a top-up), so the opening balances must be 0."""

    account_id: _Id32
    tenant_id: _TenantId
    class_id: _ClassId
    status: _Status = 0
    opening_main_fen: int = 0
    opening_subsidy_fen: int = 0


class AccountStatusChanged(msgspec.Struct, frozen=True):
    """Reported lost (2), unfrozen (0), frozen (1), closed (3). A lost account's cards decline
    CARD_LOST."""

    account_id: _Id32
    status: _Status


class CardBound(msgspec.Struct, frozen=True):
    """A new card, or the replacement of a lost one (the old one then gets CardCancelled in the
    same transaction)."""

    card_no: _CardNo
    account_id: _Id32


class CardCancelled(msgspec.Struct, frozen=True):
    """Dead forever: replaced or cancelled."""

    card_no: _CardNo
    account_id: _Id32 | None = None


class TerminalUpserted(msgspec.Struct, frozen=True):
    """A terminal registered, changed, re-keyed (key_version) or disabled. A live session of a
    terminal that is disabled, re-keyed or moved to another merchant is ended."""

    terminal_id: _Id32
    merchant_id: _Id32
    kind: Annotated[int, Meta(ge=1, le=6)]
    key_version: _Id32
    enabled: bool


class MerchantOpened(msgspec.Struct, frozen=True):
    merchant_id: _Id32
    tenant_id: _TenantId
    mode: Annotated[int, Meta(ge=0, le=1)] = 0
    fixed_amount_fen: Annotated[int, Meta(ge=0, le=AMOUNT_FEN_MAX)] = 0
    spend_order: Annotated[int, Meta(ge=0, le=2)] = 0
    opening_balance_fen: int = 0


class ClassConfigured(msgspec.Struct, frozen=True):
    class_id: _ClassId
    overdraft_fen: _Fen = 0
    txn_limit_fen: _Fen = 0
    daily_limit_fen: _Fen = 0
    meal_count_max: Annotated[int, Meta(ge=0, le=1000)] = 0
    meal_amount_max_fen: _Fen = 0


class TenantConfigured(msgspec.Struct, frozen=True):
    tenant_id: _TenantId
    utc_offset_s: Annotated[int, Meta(ge=-50_400, le=50_400)] = 28_800
    meal_windows: Annotated[list[tuple[_Minute, _Minute]], Meta(max_length=8)] = []


class CrossTenantChanged(msgspec.Struct, frozen=True):
    """Both sides' consent combined: may cards of card_tenant_id spend at merchants of
    merchant_tenant_id?"""

    card_tenant_id: _TenantId
    merchant_tenant_id: _TenantId
    allowed: bool


ChangeEvent = (
    AccountOpened | AccountStatusChanged | CardBound | CardCancelled | TerminalUpserted
    | MerchantOpened | ClassConfigured | TenantConfigured | CrossTenantChanged
)

# The closed set of kinds; the CHECK on change_outbox.kind lists the same names.
EVENT_TYPES: dict[str, type[ChangeEvent]] = {
    "account_opened": AccountOpened,
    "account_status_changed": AccountStatusChanged,
    "card_bound": CardBound,
    "card_cancelled": CardCancelled,
    "terminal_upserted": TerminalUpserted,
    "merchant_opened": MerchantOpened,
    "class_configured": ClassConfigured,
    "tenant_configured": TenantConfigured,
    "cross_tenant_changed": CrossTenantChanged,
}
EVENT_KINDS = tuple(EVENT_TYPES)
KIND_OF: dict[type[ChangeEvent], str] = {t: k for k, t in EVENT_TYPES.items()}
_DECODERS = {kind: msgspec.json.Decoder(t) for kind, t in EVENT_TYPES.items()}
_encoder = msgspec.json.Encoder()


def decode_event(kind: str, payload: bytes | str) -> ChangeEvent:
    """The event of an outbox row; ChangeEventError (naming the field) if it is not one."""
    decoder = _DECODERS.get(kind)
    if decoder is None:
        raise ChangeEventError(f"unknown change kind {kind!r}")
    try:
        return decoder.decode(payload)
    except msgspec.DecodeError as exc:  # ValidationError included
        raise ChangeEventError(f"{kind}: {exc}") from None


def encode_event(event: ChangeEvent) -> tuple[str, bytes]:
    """(kind, payload JSON): what a writer passes to outbox_append(kind, payload)."""
    return KIND_OF[type(event)], _encoder.encode(event)


# -- applying ----------------------------------------------------------------------------------


def apply_event(ledger: Ledger, master: MasterData, event: ChangeEvent) -> int:
    """Apply one event to the balance cache and the master data. Returns the id of a terminal
    whose live session must end (disabled, re-keyed or moved), else 0. Idempotent."""
    try:
        return _apply(ledger, master, event)
    except LedgerError as exc:
        raise ChangeEventError(f"{KIND_OF[type(event)]}: {exc}") from None


def _apply(ledger: Ledger, master: MasterData, event: ChangeEvent) -> int:
    match event:
        case AccountStatusChanged(account_id=account_id, status=status):
            ledger.set_account_status(account_id, status)
        case CardBound(card_no=card_no, account_id=account_id):
            bound = ledger.card_account(card_no)
            if bound is None:
                ledger.bind_card(card_no, account_id)
                master.cards += 1
            elif bound[0] != account_id:
                raise ChangeEventError(
                    f"card_bound: card {card_no} is bound to account {bound[0]}, not {account_id}"
                )
        case CardCancelled(card_no=card_no):
            if ledger.card_account(card_no) is None:
                raise ChangeEventError(f"card_cancelled: card {card_no} was never bound")
            ledger.cancel_card(card_no)
        case AccountOpened():
            if event.opening_main_fen or event.opening_subsidy_fen:
                raise ChangeEventError(
                    f"account_opened: account {event.account_id} opened with money in it; "
                    "money comes in through the switch (a top-up), so every balance stays a "
                    "transfer"
                )
            try:
                have = ledger.account(event.account_id)
            except LedgerError:
                ledger.open_account(event.account_id, event.tenant_id, event.class_id,
                                    event.status, 0, 0)
                master.accounts += 1
            else:
                if (have.tenant_id, have.class_id) != (event.tenant_id, event.class_id):
                    raise ChangeEventError(
                        f"account_opened: account {event.account_id} is already open with "
                        f"tenant {have.tenant_id} and class {have.class_id}"
                    ) from None
        case TerminalUpserted():
            info = TerminalInfo(event.terminal_id, event.merchant_id, event.kind,
                                event.key_version, event.enabled)
            old = master.terminals.get(event.terminal_id)
            master.terminals[event.terminal_id] = info
            if old is not None and (
                not info.enabled
                or old.key_version != info.key_version
                or old.merchant_id != info.merchant_id
            ):
                return event.terminal_id
        case MerchantOpened():
            if event.opening_balance_fen:
                raise ChangeEventError(
                    f"merchant_opened: merchant {event.merchant_id} opened with a balance; a "
                    "merchant opened while switches run starts at 0"
                )
            if all(m != event.merchant_id for m, _ in ledger.merchant_balances()):
                ledger.open_merchant(event.merchant_id, event.tenant_id, event.mode,
                                     event.fixed_amount_fen, event.spend_order, 0)
                master.merchants += 1
        case ClassConfigured():
            ledger.configure_class(event.class_id, event.overdraft_fen, event.txn_limit_fen,
                                   event.daily_limit_fen, event.meal_count_max,
                                   event.meal_amount_max_fen)
        case TenantConfigured():
            ledger.configure_tenant(event.tenant_id, event.utc_offset_s, event.meal_windows)
        case CrossTenantChanged():
            ledger.allow_cross_tenant(event.card_tenant_id, event.merchant_tenant_id,
                                      event.allowed)
    return 0


# -- stream entries ----------------------------------------------------------------------------


class FeedEntry(msgspec.Struct, frozen=True):
    """One outbox row as the relay publishes it: stream entry id `<outbox_id>-0`."""

    outbox_id: int
    # The outbox id the relay published before this one (0: none). A consumer that has applied
    # exactly `prev` may apply this entry; any other position means entries are missing.
    prev: int
    kind: str
    payload: bytes
    # change_outbox.created_at, microseconds since the epoch (PostgreSQL's clock).
    created_us: int


def feed_mac_key(master_secret: bytes) -> bytes:
    """The key of the entries' MAC, derived from the site master secret (never the secret)."""
    return hmac.new(master_secret, b"onecard change feed v1", hashlib.sha256).digest()


def _mac(key: bytes, outbox_id: bytes, prev: bytes, kind: bytes, created_us: bytes,
         payload: bytes) -> bytes:
    """Over the fields' bytes exactly as they travel: any changed byte fails."""
    message = b"|".join((outbox_id, prev, kind, created_us, payload))
    return hmac.new(key, message, hashlib.sha256).digest()[:16]


def entry_fields(entry: FeedEntry, key: bytes) -> dict[str, bytes]:
    """The Redis stream fields of an entry (the entry id itself is `<outbox_id>-0`)."""
    fields = {
        "prev": str(entry.prev).encode(),
        "kind": entry.kind.encode(),
        "payload": entry.payload,
        "at": str(entry.created_us).encode(),
    }
    fields["mac"] = _mac(key, str(entry.outbox_id).encode(), fields["prev"], fields["kind"],
                         fields["at"], entry.payload)
    return fields


def parse_entry(entry_id: bytes, fields: dict[bytes, bytes], key: bytes) -> FeedEntry:
    """Decode and verify one stream entry; ChangeEventError if malformed or forged."""
    try:
        ms, _, seq = entry_id.partition(b"-")
        prev_raw, kind_raw, at_raw = fields[b"prev"], fields[b"kind"], fields[b"at"]
        payload, mac = fields[b"payload"], fields[b"mac"]
    except KeyError as exc:
        raise ChangeEventError(f"stream entry {entry_id!r} is malformed: no {exc}") from None
    expected = _mac(key, ms, prev_raw, kind_raw, at_raw, payload)
    if seq != b"0" or not hmac.compare_digest(mac, expected):
        raise ChangeEventError(f"stream entry {entry_id!r} does not verify (bad MAC)")
    try:
        outbox_id, prev, created_us = int(ms), int(prev_raw), int(at_raw)
        kind = kind_raw.decode()
    except ValueError as exc:
        raise ChangeEventError(f"stream entry {entry_id!r} is malformed: {exc}") from None
    if not 0 <= prev < outbox_id:
        raise ChangeEventError(f"stream entry {entry_id!r} is malformed: prev {prev}")
    return FeedEntry(outbox_id, prev, kind, payload, created_us)
