"""Every package's public surface, pinned: a name added to or dropped from an `__all__` fails
here until this list says so too (protocols.ocp's own list is pinned in test_ocp_docs.py).
`onecard` is the application shell and has no `__all__`: its surface is its commands."""

from __future__ import annotations

import argparse
import importlib

import pytest

from onecard.cli import build_parser

SURFACE = {
    "protocols": ["ocp"],
    # The bank link's codec (docs/bank-link.md); imported on its own, not by `protocols`.
    "protocols.iso8583": [
        "ADVICE_ACKNOWLEDGED", "APPROVED", "CLOSED", "CURRENCY_CNY", "FIELD39", "FIELD39_TABLE",
        "FIELDS", "FIELD_BY_NUMBER", "MAC_MTIS", "MESSAGE_FIELDS", "NEED_DATA",
        "PROCESSING_CODE_TOPUP", "REMOTE_ERROR_CLASSES", "REMOTE_ERROR_REASONS", "SPEC",
        "BadKey", "BadMac", "Connection", "Field39Info", "FieldSpec", "FrameTooLarge",
        "Iso8583Error", "Iso8583LocalError", "Iso8583RemoteError", "MacKeys",
        "MalformedMessage", "Message", "NetworkCode", "NetworkRequest", "NetworkResponse",
        "ReversalAdvice", "ReversalResponse", "Signal", "TopupRequest", "TopupResponse",
        "UnknownMti", "cmac", "decode_message", "encode_frame", "encode_message", "frame",
        "limits", "mti_of", "original_data", "transmission_time", "unwrap_key", "wrap_key",
    ],
    "ledger_ext": [
        "ACCOUNTS_MAX", "ACCOUNT_CLOSED", "ACCOUNT_FROZEN", "ACTIVE", "ALREADY_REVERSED",
        "AMOUNT_FEN_MAX", "APPROVED", "BALANCE_FEN_MAX", "BALANCE_LIMIT_EXCEEDED", "CAPTURE",
        "CAPTURE_EXCEEDS_HOLD", "CARDS_PER_ACCOUNT_MAX", "CARD_CANCELLED", "CARD_LOST",
        "CARD_NO_MAX", "CLASSES_MAX", "CLOSED", "CREDIT", "CROSS_TENANT_NOT_ALLOWED",
        "DAILY_LIMIT_EXCEEDED", "DEBIT", "EXPIRY", "FIXED", "FREE", "FROZEN", "HOLD",
        "HOLDS_LIMIT_EXCEEDED", "HOLDS_MAX", "HOLD_NOT_FOUND", "INQUIRY", "INSUFFICIENT_FUNDS",
        "INVALID_AMOUNT", "INVALID_MERCHANT", "JOURNAL_COLUMNS", "JOURNAL_COLUMN_WIDTHS",
        "JOURNAL_COPY_HEADER", "JOURNAL_COPY_TRAILER", "LOST", "MAIN", "MAIN_FIRST",
        "MAIN_ONLY", "MEAL_AMOUNT_LIMIT_EXCEEDED", "MEAL_COUNT_LIMIT_EXCEEDED",
        "MEAL_WINDOWS_MAX", "MERCHANTS_MAX", "MERCHANT_BALANCE_FEN_MAX", "NOW_S_MAX",
        "ORIGINAL_NOT_FOUND", "PURCHASE", "RELEASE", "REVERSAL", "REVERSAL_MISMATCH",
        "SNAPSHOT_VERSION", "SUBSIDY", "SUBSIDY_FIRST", "TENANTS_MAX", "TERMINALS_MAX",
        "TERMINAL_ID_MAX", "TERMINAL_WINDOW_MAX", "TRANSFER", "TXN_LIMIT_EXCEEDED",
        "TXN_SEQ_MAX", "TXN_SEQ_TOO_OLD", "UNKNOWN_CARD", "UTC_OFFSET_S_MAX", "AccountState",
        "AccountStatus", "Code", "Kind", "Ledger", "LedgerArgumentError", "LedgerCapacityError",
        "LedgerError", "LedgerStateError", "LedgerStatistics", "MerchantMode", "MerchantState",
        "Outcome", "ReplayError", "SnapshotError", "SpendOrder", "Wallet",
    ],
    "switch": [
        "ConfigError", "Journal", "JournalError", "RecoveryError", "RecoveryReport", "Runtime",
        "SiteLockLost", "StartupError", "SwitchError", "SwitchSettings", "listen_failure",
        "load_settings", "recover", "redacted_url", "run_switch",
    ],
    "admin_api": [
        "PERMISSIONS", "ROLES", "ROUTES", "VERSION", "Actor", "AdminSettings", "Problem",
        "SettingsError", "create_app", "hash_password", "load_settings",
    ],
    "admin_api.finance": [
        "HEADER", "ROUTES", "BankFile", "BankFileError", "FileResult", "ReconcileConflict",
        "ReconcileRefused", "VoucherLine", "day_vouchers", "ensure_bank_clearing",
        "read_bank_file", "reconcile", "write_bank_file",
    ],
    "terminals_sim": [
        "CARD_STATES", "SIM_CPU_LIMIT_PCT", "SUPPORTED_KINDS", "Amount", "DoorControl",
        "DoorTerminal", "Faults", "FenRange",
        "IdentityClass", "LatencySummary", "MealWindow", "Merchant", "OfflineDoor", "Phase",
        "PhaseSummary",
        "Population", "PosBehaviour", "RunSettings", "Scenario", "ScenarioError", "SimError",
        "Simulation", "Site", "SiteTerminal", "Statistics", "Summary", "TerminalGroup",
        "UnsupportedTerminalKind", "Visit", "check_supported", "decode_scenario",
        "load_scenario", "render_summary", "scenario_names", "with_seconds",
    ],
    "loadtest": ["CardPool", "GeneratorReport", "LoadGenerator", "TerminalSpec"],
    "admin_api.settlement": [
        "ROUTES", "Bank", "ClearingPair", "Flow", "MerchantFigures", "Settlement", "Subsidy",
        "Totals", "WalletFloat", "business_day_of", "compute_settlement", "day_bounds",
        "day_state", "decode", "due_on", "encode", "execute_payouts", "fee_of", "on_approved",
        "sha256",
    ],
}

COMMANDS = ["admin", "admin-init", "adms", "bank-sim", "bench", "demo", "migrate", "openapi",
            "reconcile", "settle", "sim", "status", "switch"]


@pytest.mark.parametrize("package", sorted(SURFACE))
def test_all_is_pinned(package: str) -> None:
    module = importlib.import_module(package)
    assert sorted(module.__all__) == sorted(SURFACE[package])
    assert len(set(module.__all__)) == len(module.__all__), "a name is listed twice"
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert missing == []


def test_onecard_surface_is_its_commands() -> None:
    import onecard

    assert not hasattr(onecard, "__all__")
    (sub,) = (a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert sorted(sub.choices) == COMMANDS
