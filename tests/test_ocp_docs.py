"""docs/protocol.md agrees with the code: generated tables current, codes/classes/doc agree,
and the public surface of protocols.ocp is pinned."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import protocols
from protocols import limits, ocp

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "protocol.md"


def test_generated_tables_are_current() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "make_protocol_tables.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _doc_code_rows() -> dict[int, tuple[str, str]]:
    """code -> (name, Python class or '-') from the generated code table."""
    text = DOC.read_text(encoding="utf-8")
    region = text.split("<!-- BEGIN GENERATED: codes -->")[1].split("<!-- END GENERATED")[0]
    rows = {}
    for line in region.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0].isdigit():
            rows[int(cells[0])] = (cells[1].strip("`"), cells[6].strip("`"))
    return rows


def _remote_error_classes() -> list[type[ocp.OcpRemoteError]]:
    found = []
    for name in ocp.__all__:
        obj = getattr(ocp, name)
        is_error = isinstance(obj, type) and issubclass(obj, ocp.OcpRemoteError)
        if is_error and obj is not ocp.OcpRemoteError:
            found.append(obj)
    return found


def test_codes_classes_and_doc_agree() -> None:
    rows = _doc_code_rows()
    assert {code: name for code, (name, _) in rows.items()} == {
        c.value: c.name for c in ocp.ResponseCode
    }
    classes = _remote_error_classes()
    by_code: dict[int, type] = {}
    for cls in classes:
        assert cls.response_code not in by_code, f"two classes for {cls.response_code!r}"
        by_code[cls.response_code] = cls
        assert ocp.CODE_INFO[cls.response_code].kind is ocp.CodeKind.PROTOCOL
    for code, (_name, cls_name) in rows.items():
        expected = by_code[code].__name__ if code in by_code else "-"
        assert cls_name == expected, (code, cls_name)
    # Every subclass of OcpRemoteError anywhere is exported (no hidden codes).
    assert set(ocp.OcpRemoteError.__subclasses__()) == set(classes)


def test_code_info_consistency() -> None:
    info = ocp.CODE_INFO
    assert info[ocp.ResponseCode.APPROVED].kind is ocp.CodeKind.APPROVAL
    for code in (ocp.ResponseCode.INVALID_FIELD, ocp.ResponseCode.UNKNOWN_MESSAGE):
        assert not info[code].closes_connection
    for cls in _remote_error_classes():
        if cls not in (ocp.InvalidField, ocp.UnknownMessage):
            assert info[cls.response_code].closes_connection, cls
    assert all(info[c].kind is ocp.CodeKind.DECLINE for c in ocp.PURCHASE_CHECK_PRECEDENCE)


def test_spec_quotes_the_limits() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert "`FRAME_BYTES_MAX` | 16_384 |" in text
    assert f"{limits.FRAME_LENGTH_MAX}" in text


def test_doc_regions_all_present() -> None:
    text = DOC.read_text(encoding="utf-8")
    names = re.findall(r"<!-- BEGIN GENERATED: ([\w-]+) -->", text)
    assert sorted(names) == sorted(
        ["limits", "messages", "reserved-tags", "codes", "precedence", "transitions"]
    )


def test_all_is_pinned() -> None:
    assert sorted(ocp.__all__) == sorted(
        [
            "CLOSED", "CODE_INFO", "FLAG_MAC", "MESSAGE_TYPES", "NEED_DATA",
            "PURCHASE_CHECK_PRECEDENCE", "RESERVED_TAG_RANGES", "SESSION_MESSAGE_TYPES",
            "TERMINAL_KIND_MESSAGES", "TRANSITIONS", "VERSION",
            "AccessRequest", "AccessResult", "CredentialKindCode", "DoorEvent", "DoorEventAck",
            "DoorCommand", "DoorCommandAck", "DoorCommandAction", "DoorCommandCode",
            "DoorEventCode",
            "BadMac", "BalanceInquiry", "BalanceResult", "CodeInfo", "CodeKind", "Connection",
            "Credit", "CreditResult", "Debit", "DebitResult", "Direction", "Error",
            "FrameTooLarge", "Heartbeat", "HeartbeatAck", "InvalidField",
            "MacKey", "MalformedFrame", "Message", "NotSignedOn", "OcpError", "OcpLocalError",
            "OcpRemoteError", "Purchase", "PurchaseResult", "QrPurchase", "ResponseCode",
            "Reversal",
            "ReversalResult", "Role", "SequenceError", "SignOff", "SignOn", "SignOnChallenge",
            "SignOnConfirm", "SignOnResult", "Signal", "State", "Statistics", "TerminalKind",
            "Transfer", "TransferResult",
            "Topup", "TopupOutcome", "TopupResult", "PinBlockInvalid", "derive_pin_key",
            "open_pin", "seal_pin",
            "UnexpectedMessage", "UnknownMessage", "UnsupportedVersion", "Way", "decode_frame",
            "derive_session_keys", "derive_terminal_key", "encode_frame", "hkdf_expand",
            "hkdf_extract",
            # Offline access lists and upload (tags 96-111).
            "AccessEntry", "AccessListDelta", "AccessListRequest", "AccessListSnapshot",
            "OFFLINE_ACCESS_MESSAGE_TYPES", "OfflineRecord", "OfflineTimeZone", "OfflineUpload",
            "OfflineUploadResult", "TimeZoneInterval",
        ]
    )
    for name in ocp.__all__:
        assert hasattr(ocp, name), name
    assert protocols.__all__ == ["ocp"]


def test_response_code_numbers_are_pinned() -> None:
    """The ledger layer uses the same numbers; switch/ asserts they agree at import."""
    assert {c.name: c.value for c in ocp.ResponseCode} == {
        "APPROVED": 0, "INVALID_MERCHANT": 12, "INVALID_AMOUNT": 13, "UNKNOWN_CARD": 14,
        "ORIGINAL_NOT_FOUND": 25, "ALREADY_REVERSED": 26, "REVERSAL_MISMATCH": 27,
        "HOLD_NOT_FOUND": 30, "CAPTURE_EXCEEDS_HOLD": 31, "HOLDS_LIMIT_EXCEEDED": 32,
        "CARD_LOST": 41,
        "CARD_CANCELLED": 43, "ACCOUNT_CLOSED": 46, "ACCOUNT_FROZEN": 47,
        "INSUFFICIENT_FUNDS": 51, "CROSS_TENANT_NOT_ALLOWED": 57, "TXN_LIMIT_EXCEEDED": 61,
        "DAILY_LIMIT_EXCEEDED": 62, "MEAL_AMOUNT_LIMIT_EXCEEDED": 63,
        "MEAL_COUNT_LIMIT_EXCEEDED": 64, "BALANCE_LIMIT_EXCEEDED": 65, "TXN_SEQ_TOO_OLD": 80,
        # Kiosk top-up (section 4.7).
        "BANK_INSUFFICIENT_FUNDS": 52, "PIN_INCORRECT": 55, "NO_BANK_CARD": 56,
        "TOPUP_NOT_AVAILABLE": 58, "BANK_DECLINED": 59, "TOPUP_LIMIT_EXCEEDED": 53,
        "TOPUP_DAILY_LIMIT_EXCEEDED": 54, "BANK_NO_ANSWER": 60, "PIN_TRIES_EXCEEDED": 78,
        "INVALID_FIELD": 81, "UNKNOWN_MESSAGE": 82, "MALFORMED_FRAME": 83,
        "FRAME_TOO_LARGE": 84, "UNSUPPORTED_VERSION": 85, "BAD_MAC": 86, "SEQUENCE_ERROR": 87,
        "NOT_SIGNED_ON": 88, "UNKNOWN_TERMINAL": 89, "TERMINAL_DISABLED": 90,
        "UNEXPECTED_MESSAGE": 91, "NOT_PERMITTED": 92, "QR_INVALID": 93, "QR_EXPIRED": 94,
        "QR_USED": 95, "SYSTEM_ERROR": 96, "BUSY": 97,
        "SHUTTING_DOWN": 98, "SESSION_REPLACED": 99, "IDLE_TIMEOUT": 100,
        # Access deny reasons (docs/access.md) and the unknown reader.
        "CARD_EXPIRED": 66, "NO_PERMISSION": 67, "OUTSIDE_TIME_ZONE": 68, "HOLIDAY": 69,
        "DOOR_LOCKED": 70, "LOCKDOWN": 71, "APB_VIOLATION": 72, "INTERLOCK": 73,
        "PIN_REQUIRED": 74, "PIN_WRONG": 75, "MULTI_CARD_PENDING": 76,
        "FLOOR_NOT_PERMITTED": 77, "UNKNOWN_READER": 101,
        "SECOND_FACTOR_REQUIRED": 79,
        "SNAPSHOT_STALE": 110,
    }


def test_protocols_imports_nothing_of_ours() -> None:
    for path in (ROOT / "protocols").rglob("*.py"):
        for line in path.read_text(encoding="utf-8").splitlines():
            m = re.match(r"\s*(?:from|import)\s+([\w.]+)", line)
            if m and m.group(1).split(".")[0] in {
                "switch", "ledger_ext", "migrations", "onecard", "admin_api", "terminals_sim",
                "loadtest",
            }:
                raise AssertionError(f"{path}: {line}")
