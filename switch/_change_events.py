"""Change events as the switch decodes and applies them.

The events themselves (one msgspec Struct per kind, strict decoding) are the writers' and the
switch's shared contract and live in `protocols.changes`; they are re-exported here.

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
from typing import TYPE_CHECKING

import msgspec

from ledger_ext import LedgerError
from protocols import changes
from protocols.changes import (
    EVENT_KINDS,
    EVENT_TYPES,
    KIND_OF,
    AccessChanged,
    AccountClassChanged,
    AccountOpened,
    AccountStatusChanged,
    BankCardChanged,
    BankSettingsChanged,
    CardBound,
    CardCancelled,
    ChangeEvent,
    ClassConfigured,
    CrossTenantChanged,
    MerchantConfigured,
    MerchantOpened,
    PinChanged,
    TenantConfigured,
    TerminalUpserted,
    encode_event,
)
from switch._errors import SwitchError
from switch._masterdata import TerminalInfo

if TYPE_CHECKING:
    from ledger_ext import Ledger
    from switch._masterdata import MasterData


__all__ = [
    "EVENT_KINDS",
    "EVENT_TYPES",
    "KIND_OF",
    "AccessChanged",
    "AccountClassChanged",
    "AccountOpened",
    "AccountStatusChanged",
    "CardBound",
    "CardCancelled",
    "ChangeEvent",
    "ChangeEventError",
    "ClassConfigured",
    "CrossTenantChanged",
    "FeedEntry",
    "MerchantConfigured",
    "MerchantOpened",
    "TenantConfigured",
    "TerminalUpserted",
    "apply_event",
    "decode_event",
    "encode_event",
    "entry_fields",
    "feed_mac_key",
    "parse_entry",
]


class ChangeEventError(SwitchError):
    """A change event or stream entry cannot be decoded, verified or applied."""


def decode_event(kind: str, payload: bytes | str) -> ChangeEvent:
    """The event of an outbox row; ChangeEventError (naming the field) if it is not one."""
    try:
        return changes.decode_event(kind, payload)
    except changes.ChangeDecodeError as exc:
        raise ChangeEventError(str(exc)) from None


# -- applying ----------------------------------------------------------------------------------


def apply_event(ledger: Ledger, master: MasterData, event: ChangeEvent) -> int:
    """Apply one event to the balance cache and the master data. Returns the id of a terminal
    whose live session must end (disabled, re-keyed or moved), else 0. Idempotent."""
    try:
        return _apply(ledger, master, event)
    except LedgerError as exc:
        raise ChangeEventError(f"{KIND_OF[type(event)]}: {exc}") from None


def _apply(ledger: Ledger, master: MasterData, event: ChangeEvent) -> int:
    if isinstance(event, _TOPUP_EVENTS):  # what the kiosk top-ups hold in memory
        for listener in master.topup_listeners:
            listener(event)
    match event:
        case AccountStatusChanged(account_id=account_id, status=status):
            ledger.set_account_status(account_id, status)
        case AccountClassChanged(account_id=account_id, class_id=class_id):
            ledger.set_account_class(account_id, class_id)
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
                # The class is not compared: a later AccountClassChanged (or the start-up
                # snapshot holding one) may have moved the account since; its class stays.
                if have.tenant_id != event.tenant_id:
                    raise ChangeEventError(
                        f"account_opened: account {event.account_id} is already open with "
                        f"tenant {have.tenant_id}"
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
                or old.kind != info.kind
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
        case MerchantConfigured():
            ledger.configure_merchant(event.merchant_id, event.mode, event.fixed_amount_fen,
                                      event.spend_order)
        case ClassConfigured():
            ledger.configure_class(event.class_id, event.overdraft_fen, event.txn_limit_fen,
                                   event.daily_limit_fen, event.meal_count_max,
                                   event.meal_amount_max_fen)
        case TenantConfigured():
            ledger.configure_tenant(event.tenant_id, event.utc_offset_s, event.meal_windows)
        case CrossTenantChanged():
            ledger.allow_cross_tenant(event.card_tenant_id, event.merchant_tenant_id,
                                      event.allowed)
        case BankCardChanged():  # automatic top-up (自动圈存) on or off: switch/_topup.py
            if event.bound and event.auto_amount_fen and event.auto_threshold_fen:
                master.auto_topups[event.account_id] = (event.auto_threshold_fen,
                                                        event.auto_amount_fen)
            else:
                master.auto_topups.pop(event.account_id, None)
    return 0


_TOPUP_EVENTS = (BankCardChanged, BankSettingsChanged, PinChanged, AccountStatusChanged,
                 TenantConfigured)
"""Events that change a top-up's context (switch/_topup.py TopupContexts)."""


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
