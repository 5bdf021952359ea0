"""Change events: the admin side's changes of master data, as outbox rows carry them.

An event is one row of `change_outbox` (migrations/sql/0002_change_feed.sql): a `kind` from a
closed set and a `payload`, a JSON object holding the new state (ids and fields). Each kind has
one msgspec Struct; decoding is strict (no "1" for 1) and checks every range, so a bad payload is
refused whole with the path of the bad field. Unknown fields are ignored, so a newer writer may
append a field (with a default) before every switch knows it.

This is the contract between the writers (`admin_api`) and the readers (`switch`), so it lives
here, with no I/O: writers `encode_event` and pass the result to `outbox_append(kind, payload)`
in the transaction of their change; the switch decodes and applies (switch/_change_events.py).
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from protocols.limits import AMOUNT_FEN_MAX


class ChangeDecodeError(ValueError):
    """An outbox row that is not a change event: unknown kind, or a payload that does not fit."""


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


class AccountClassChanged(msgspec.Struct, frozen=True):
    """The account's identity class (student, staff, visitor: overdraft and spending limits)
    from now on. Its spending so far today still counts against the new class's limits."""

    account_id: _Id32
    class_id: _ClassId


class MerchantOpened(msgspec.Struct, frozen=True):
    merchant_id: _Id32
    tenant_id: _TenantId
    mode: Annotated[int, Meta(ge=0, le=1)] = 0
    fixed_amount_fen: Annotated[int, Meta(ge=0, le=AMOUNT_FEN_MAX)] = 0
    spend_order: Annotated[int, Meta(ge=0, le=2)] = 0
    opening_balance_fen: int = 0


class MerchantConfigured(msgspec.Struct, frozen=True):
    """An opened merchant's new mode (0 free, 1 fixed), fixed price (1..AMOUNT_FEN_MAX when
    fixed, 0 when free) and spend order; its tenant and balance stay. A purchase decided before
    keeps its price (a reversal gives back what it took)."""

    merchant_id: _Id32
    mode: Annotated[int, Meta(ge=0, le=1)]
    fixed_amount_fen: Annotated[int, Meta(ge=0, le=AMOUNT_FEN_MAX)]
    spend_order: Annotated[int, Meta(ge=0, le=2)]


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


class AccessChanged(msgspec.Struct, frozen=True):
    """An access rule of the tenant changed (doors, readers, areas, door groups, time zones,
    holidays, grants, modes, interlocks, lockdowns, override holders: docs/access.md). Every
    switch reloads the tenant's rules; `people` names persons whose PINs changed."""

    tenant_id: _TenantId
    people: Annotated[list[_Id32], Meta(max_length=1000)] = []
class BankCardChanged(msgspec.Struct, frozen=True):
    """An account's bound bank card (快速圈存) was bound, changed or unbound. Only the masked
    number travels. auto_threshold_fen / auto_amount_fen: automatic top-up (0: off)."""

    account_id: _Id32
    bound: bool
    pan_masked: Annotated[str, Meta(max_length=19)] = ""
    auto_threshold_fen: _Fen = 0
    auto_amount_fen: _Fen = 0


class BankSettingsChanged(msgspec.Struct, frozen=True):
    """A tenant's bank top-up switched on or off, or its caps changed (0: no cap)."""

    tenant_id: _TenantId
    enabled: bool
    single_max_fen: _Fen = 0
    daily_card_max_fen: _Fen = 0
    daily_account_max_fen: _Fen = 0


class PinChanged(msgspec.Struct, frozen=True):
    """A cardholder's query/spending PIN was set or reset (and unlocked): switches drop what
    they hold of it (switch/_topup.py keeps PIN hashes in memory)."""

    account_id: _Id32


DOOR_COMMAND_ACTIONS = ("open_once", "hold_open", "hold_locked", "normal")
"""door_commands.action, in the order of DoorCommandAction 1..4 (docs/protocol.md 4.5)."""


class DoorCommandRequested(msgspec.Struct, frozen=True):
    """An operator's command for a door (door_commands row command_id): the switch holding a
    session of one of the door's terminals sends it once, at most (docs/access-admin.md,
    "Door commands"); the others ignore it. open_ms counts for open_once only."""

    command_id: Annotated[int, Meta(ge=1, le=2**32 - 1)]
    tenant_id: _TenantId
    door_id: _Id32
    action: Annotated[str, Meta(pattern="^(open_once|hold_open|hold_locked|normal)$")]
    open_ms: Annotated[int, Meta(ge=0, le=60_000)] = 0


ChangeEvent = (
    AccountOpened | AccountStatusChanged | CardBound | CardCancelled | TerminalUpserted
    | MerchantOpened | ClassConfigured | TenantConfigured | CrossTenantChanged
    | AccountClassChanged | MerchantConfigured | AccessChanged | BankCardChanged
    | BankSettingsChanged | PinChanged | DoorCommandRequested
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
    # Added by migrations/sql/0007_change_kinds.sql.
    "account_class_changed": AccountClassChanged,
    "merchant_configured": MerchantConfigured,
    # Added by migrations/sql/0015_access.sql.
    "access_changed": AccessChanged,
    # Added by migrations/sql/0012_topup.sql.
    "bank_card_changed": BankCardChanged,
    "bank_settings_changed": BankSettingsChanged,
    # Added by migrations/sql/0017_topup_fast.sql.
    "pin_changed": PinChanged,
    # Added by migrations/sql/0022_door_commands.sql.
    "door_command": DoorCommandRequested,
}
EVENT_KINDS = tuple(EVENT_TYPES)
KIND_OF: dict[type[ChangeEvent], str] = {t: k for k, t in EVENT_TYPES.items()}
_DECODERS = {kind: msgspec.json.Decoder(t) for kind, t in EVENT_TYPES.items()}
_encoder = msgspec.json.Encoder()


def decode_event(kind: str, payload: bytes | str) -> ChangeEvent:
    """The event of an outbox row; ChangeDecodeError (naming the field) if it is not one."""
    decoder = _DECODERS.get(kind)
    if decoder is None:
        raise ChangeDecodeError(f"unknown change kind {kind!r}")
    try:
        return decoder.decode(payload)
    except msgspec.DecodeError as exc:  # ValidationError included
        raise ChangeDecodeError(f"{kind}: {exc}") from None


def encode_event(event: ChangeEvent) -> tuple[str, bytes]:
    """(kind, payload JSON): what a writer passes to outbox_append(kind, payload)."""
    return KIND_OF[type(event)], _encoder.encode(event)
