"""Messages to bytes and back: pyiso8583 with our SPEC, the field checks, the MAC, framing.

A frame is a 2-byte big-endian length (the bytes after it) and one message: the MTI in 4 ASCII
digits, the primary bitmap (8 bytes, binary), the secondary bitmap when any field 65-128 is
present, then the fields in order. The decoder raises only Iso8583RemoteError subclasses.
"""

from __future__ import annotations

import datetime as dt
import re
import struct
from typing import Any, Final

import iso8583
import msgspec

from protocols.iso8583 import limits
from protocols.iso8583._errors import (
    BadMac,
    Iso8583LocalError,
    MalformedMessage,
    UnknownMti,
)
from protocols.iso8583._mac import MacKeys
from protocols.iso8583._messages import (
    CURRENCY_CNY,
    MAC_MTIS,
    MESSAGE_FIELDS,
    MTI_OF,
    PROCESSING_CODE_TOPUP,
    Message,
    NetworkCode,
    NetworkRequest,
    NetworkResponse,
    ReversalAdvice,
    ReversalResponse,
    TopupRequest,
    TopupResponse,
)
from protocols.iso8583._spec import FIELD_BY_NUMBER, SPEC

LENGTH: Final = struct.Struct(">H")
assert LENGTH.size == limits.LENGTH_FIELD_BYTES
_MAC_PLACEHOLDER: Final = "00" * limits.MAC_BYTES
"""pyiso8583 takes and gives binary fields as hex strings."""


# -- values <-> field strings ---------------------------------------------------------------

def _n(value: int, width: int) -> str:
    text = f"{value:0{width}d}"
    if value < 0 or len(text) != width:
        raise Iso8583LocalError(f"{value} does not fit n{width}")
    return text


def _yymmdd(date: dt.date) -> str:
    if not 2000 <= date.year <= 2099:
        raise Iso8583LocalError(f"{date} is outside 2000..2099")
    return f"{date.year - 2000:02d}{date.month:02d}{date.day:02d}"


def _yymmddhhmmss(value: dt.datetime) -> str:
    return _yymmdd(value) + f"{value.hour:02d}{value.minute:02d}{value.second:02d}"


def transmission_time(now: dt.datetime) -> str:
    """Field 7: MMDDhhmmss of `now` in UTC (a naive `now` is taken as UTC)."""
    if now.tzinfo is not None:
        now = now.astimezone(dt.UTC)
    return f"{now.month:02d}{now.day:02d}{now.hour:02d}{now.minute:02d}{now.second:02d}"


def original_data(mti: str, stan: int, local_datetime: dt.datetime) -> str:
    """Field 90: original MTI (4), STAN (6), local date and time (12), 20 zeros."""
    return mti + _n(stan, 6) + _yymmddhhmmss(local_datetime) + "0" * 20


def _fields_of(msg: Message) -> tuple[str, dict[str, Any]]:
    """The MTI and the fields of `msg` (not 7, 53, 128: the link fills those)."""
    f: dict[str, Any]
    if type(msg) is NetworkRequest:
        f = {"11": _n(msg.stan, 6), "70": _n(msg.code, 3)}
        if msg.code is NetworkCode.KEY_EXCHANGE:
            f["53"], f["120"] = _n(msg.key_generation, 16), msg.wrapped_key.hex()
        if msg.code is NetworkCode.CUTOVER:
            if msg.business_date is None:
                raise Iso8583LocalError("a cutover names its business date")
            f["73"] = _yymmdd(msg.business_date)
        return "0800", f
    if type(msg) is NetworkResponse:
        f = {"11": _n(msg.stan, 6), "39": msg.field39, "70": _n(msg.code, 3)}
        if msg.code is NetworkCode.KEY_EXCHANGE:
            f["53"] = _n(msg.key_generation, 16)
        if msg.code is NetworkCode.CUTOVER and msg.business_date is not None:
            f["73"] = _yymmdd(msg.business_date)
        if msg.reason:
            f["44"] = msg.reason
        return "0810", f
    if type(msg) is TopupRequest or type(msg) is ReversalAdvice:
        f = {
            "3": PROCESSING_CODE_TOPUP, "4": _n(msg.amount_fen, 12), "11": _n(msg.stan, 6),
            "12": _yymmddhhmmss(msg.local_datetime), "37": msg.rrn,
            "41": _n(msg.terminal_id, 8), "42": _n(msg.tenant_id, 15), "49": CURRENCY_CNY,
            "102": msg.card_token, "103": msg.account_ref,
        }
        if isinstance(msg, TopupRequest):
            return "0200", f
        f["90"] = original_data("0200", msg.stan, msg.local_datetime)
        return ("0421" if msg.repeat else "0420"), f
    if type(msg) is TopupResponse:
        f = {"3": PROCESSING_CODE_TOPUP, "4": _n(msg.amount_fen, 12), "11": _n(msg.stan, 6),
             "37": msg.rrn, "39": msg.field39, "41": _n(msg.terminal_id, 8)}
        if msg.auth_code:
            f["38"] = msg.auth_code
        if msg.reason:
            f["44"] = msg.reason
        return "0210", f
    if type(msg) is ReversalResponse:
        f = {"3": PROCESSING_CODE_TOPUP, "11": _n(msg.stan, 6), "37": msg.rrn,
             "39": msg.field39, "41": _n(msg.terminal_id, 8)}
        if msg.reason:
            f["44"] = msg.reason
        return "0430", f
    raise Iso8583LocalError(f"not a bank-link message: {type(msg).__name__}")


def encode_message(msg: Message, *, now: dt.datetime, keys: MacKeys | None = None) -> bytes:
    """The packed message (no length header). Financial messages are MAC'd under the current
    key of `keys`, and field 53 names its generation."""
    mti, fields = _fields_of(msg)
    fields["t"] = mti
    fields["7"] = transmission_time(now)
    mac = mti in MAC_MTIS
    if mac:
        if keys is None or keys.current is None:
            raise Iso8583LocalError(f"{mti} is MAC'd: install a MAC key first")
        fields["53"] = _n(keys.current, 16)
        fields["128"] = _MAC_PLACEHOLDER
    try:
        packed, _ = iso8583.encode(fields, SPEC)
    except (iso8583.EncodeError, UnicodeError) as exc:
        raise Iso8583LocalError(f"{mti}: {exc}") from None
    if mac:
        assert keys is not None
        _gen, tag = keys.sign(packed[: -limits.MAC_BYTES])
        packed[-limits.MAC_BYTES :] = tag
    if len(packed) > limits.MESSAGE_BYTES_MAX:
        raise Iso8583LocalError(f"{mti} needs {len(packed)} bytes > MESSAGE_BYTES_MAX")
    return bytes(packed)


def frame(message: bytes) -> bytes:
    """The length header and the message."""
    return LENGTH.pack(len(message)) + message


def encode_frame(msg: Message, *, now: dt.datetime, keys: MacKeys | None = None) -> bytes:
    return frame(encode_message(msg, now=now, keys=keys))


# -- bytes -> message -----------------------------------------------------------------------

_NOT_ANS = re.compile(r"[^\x20-\x7e]")
_NOT_AN = re.compile(r"[^0-9A-Za-z]")
_NOT_N = re.compile(r"[^0-9]")
_NOT = {"n": _NOT_N, "an": _NOT_AN, "ans": _NOT_ANS}
_FORMAT_CHECKS: Final = {
    str(f.number): (f.number, _NOT[f.format], f.max_len if f.length == "fixed" else -1,
                    f.format)
    for f in FIELD_BY_NUMBER.values() if f.format != "b"
}
"""Field key -> (number, a regex finding a character the format refuses, the fixed length or
-1, the format), for the fields that are text."""


def _check_formats(doc: dict[str, Any], mti: str) -> None:
    for key, value in doc.items():
        check = _FORMAT_CHECKS.get(key)
        if check is None:
            continue
        number, refused, length, fmt = check
        if length >= 0 and len(value) != length:
            raise MalformedMessage(f"{mti} field {number}: {len(value)} characters, not "
                                   f"{length}", mti=mti)
        if refused.search(value) is not None:
            raise MalformedMessage(f"{mti} field {number}: not {fmt}", mti=mti)


def _date(value: str, mti: str, number: int) -> dt.date:
    try:
        return dt.date(2000 + int(value[0:2]), int(value[2:4]), int(value[4:6]))
    except ValueError:
        raise MalformedMessage(f"{mti} field {number}: no such date", mti=mti) from None


def _datetime(value: str, mti: str, number: int) -> dt.datetime:
    try:
        return dt.datetime(2000 + int(value[0:2]), int(value[2:4]), int(value[4:6]),
                           int(value[6:8]), int(value[8:10]), int(value[10:12]))
    except ValueError:
        raise MalformedMessage(f"{mti} field {number}: no such date and time", mti=mti) from None


def _check_transmission_time(value: str, mti: str) -> None:
    try:
        dt.datetime(2000, int(value[0:2]), int(value[2:4]), int(value[4:6]), int(value[6:8]),
                    int(value[8:10]))
    except ValueError:
        raise MalformedMessage(f"{mti} field 7: no such date and time", mti=mti) from None


def decode_message(data: bytes, keys: MacKeys | None = None) -> Message:
    """The message in `data` (one packed message, no length header), every field checked and
    the MAC of a financial message verified under `keys`. Raises Iso8583RemoteError only."""
    data = bytes(data)
    if len(data) < limits.MESSAGE_BYTES_MIN:
        raise MalformedMessage(f"{len(data)} bytes is shorter than an MTI and a bitmap")
    head = data[:4]
    mti = head.decode("ascii") if head.isdigit() else ""
    if mti not in MESSAGE_FIELDS:
        raise UnknownMti(f"unknown MTI {head!r}")
    if data[4] & 0x80 and len(data) > 12 and data[12] & 0x80:
        raise MalformedMessage(f"{mti}: a tertiary bitmap (bit 65) is not used", mti=mti)
    if data[4] & 0x80 and len(data) >= 20 and not any(data[12:20]):
        raise MalformedMessage(f"{mti}: an empty secondary bitmap", mti=mti)
    try:
        doc, _ = iso8583.decode(data, SPEC)
    except iso8583.DecodeError as exc:
        raise MalformedMessage(f"{mti}: {exc}", mti=mti) from None
    except KeyError as exc:
        raise MalformedMessage(f"{mti}: field {exc.args[0]} is not in the spec", mti=mti
                               ) from None
    except (UnicodeError, ValueError, TypeError, IndexError) as exc:
        raise MalformedMessage(f"{mti}: {type(exc).__name__}: {exc}", mti=mti) from None
    present = {int(k) for k in doc if k.isdigit() and k != "1"}
    required, optional = MESSAGE_FIELDS[mti]
    if missing := required - present:
        raise MalformedMessage(f"{mti}: fields {sorted(missing)} missing", mti=mti)
    if extra := present - required - optional:
        raise MalformedMessage(f"{mti}: fields {sorted(extra)} not allowed", mti=mti)
    _check_formats(doc, mti)
    _check_transmission_time(doc["7"], mti)
    if mti in MAC_MTIS:
        generation = int(doc["53"])
        if keys is None or generation not in keys:
            raise BadMac(f"{mti}: MAC key generation {generation} is unknown", mti=mti)
        if not keys.verify(generation, data[: -limits.MAC_BYTES], data[-limits.MAC_BYTES :]):
            raise BadMac(f"{mti}: MAC does not verify", mti=mti)
    return _build(mti, doc)


def _build(mti: str, d: dict[str, Any]) -> Message:
    raw: dict[str, Any]
    if mti in ("0800", "0810"):
        try:
            code = NetworkCode(int(d["70"]))
        except ValueError:
            raise MalformedMessage(f"{mti}: network code {d['70']} is not in the spec",
                                   mti=mti) from None
        raw = {"code": code, "stan": int(d["11"])}
        if "53" in d:
            raw["key_generation"] = int(d["53"])
        if "73" in d:
            raw["business_date"] = _date(d["73"], mti, 73)
        if mti == "0800":
            if code is NetworkCode.KEY_EXCHANGE and not ("53" in d and "120" in d):
                raise MalformedMessage("0800 key exchange: fields 53 and 120 required", mti=mti)
            if code is NetworkCode.CUTOVER and "73" not in d:
                raise MalformedMessage("0800 cutover: field 73 required", mti=mti)
            if "120" in d:
                raw["wrapped_key"] = bytes.fromhex(d["120"])
            cls: type[Message] = NetworkRequest
        else:
            raw["field39"] = d["39"]
            if "44" in d:
                raw["reason"] = d["44"]
            cls = NetworkResponse
    else:
        if d["3"] != PROCESSING_CODE_TOPUP:
            raise MalformedMessage(f"{mti}: processing code {d['3']}", mti=mti)
        raw = {"terminal_id": int(d["41"]), "stan": int(d["11"]), "rrn": d["37"]}
        if mti in ("0200", "0420", "0421"):
            if d["49"] != CURRENCY_CNY:
                raise MalformedMessage(f"{mti}: currency {d['49']}", mti=mti)
            local = _datetime(d["12"], mti, 12)
            raw.update(amount_fen=int(d["4"]), card_token=d["102"], account_ref=d["103"],
                       local_datetime=local, tenant_id=int(d["42"]))
            if mti == "0200":
                cls = TopupRequest
            else:
                if d["90"] != original_data("0200", raw["stan"], local):
                    raise MalformedMessage(f"{mti}: field 90 does not name this top-up",
                                           mti=mti)
                raw["repeat"] = mti == "0421"
                cls = ReversalAdvice
        elif mti == "0210":
            raw.update(amount_fen=int(d["4"]), field39=d["39"], auth_code=d.get("38", ""),
                       reason=d.get("44", ""))
            cls = TopupResponse
        else:
            raw.update(field39=d["39"], reason=d.get("44", ""))
            cls = ReversalResponse
    try:
        return msgspec.convert(raw, cls)
    except msgspec.ValidationError as exc:
        raise MalformedMessage(f"{mti}: {exc}", mti=mti) from None


def mti_of(msg: Message) -> str:
    if type(msg) is ReversalAdvice and msg.repeat:
        return "0421"
    return MTI_OF[type(msg)]
