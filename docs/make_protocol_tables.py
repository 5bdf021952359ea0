#!/usr/bin/env python3
"""Render the tables the OCP code runs on into docs/protocol.md.

Each table sits between `<!-- BEGIN GENERATED: name -->` and `<!-- END GENERATED: name -->`;
everything outside the markers is hand-written. Tables: limits, messages (tags and fields, from
the msgspec constraints), reserved tag ranges, response codes, purchase check precedence, and the
state transitions with a diagram per role.

    python docs/make_protocol_tables.py          # rewrite docs/protocol.md
    python docs/make_protocol_tables.py --check  # exit 1 if it is out of date (tests run this)
    python docs/make_protocol_tables.py --print-vectors  # print fresh test vectors (to review)
"""

from __future__ import annotations

import argparse
import base64
import hmac
import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import msgspec  # noqa: E402
import msgspec.inspect as mi  # noqa: E402

from protocols import limits, ocp  # noqa: E402

DOC = ROOT / "docs" / "protocol.md"
_REGION = re.compile(
    r"(<!-- BEGIN GENERATED: (?P<name>[\w-]+) -->\n)(?P<body>.*?)"
    r"(<!-- END GENERATED: (?P=name) -->)",
    re.S,
)


def _limit_name(value: int) -> str:
    names = {
        limits.AMOUNT_FEN_MAX: "10000000 (`AMOUNT_FEN_MAX`)",
        2**32 - 1: "4294967295 (2**32-1)",
        limits.TERMINAL_ID_MAX: "2147483647 (2**31-1)",
        limits.MERCHANT_ID_MAX: "32768 (`MERCHANT_ID_MAX`)",
        2**63 - 1: "2**63-1",
        -(2**63): "-2**63",
    }
    return names.get(value, str(value))


def _type_text(t: mi.Type) -> str:
    if isinstance(t, mi.IntType):
        lo_text = _limit_name(t.ge) if t.ge is not None else "…"
        hi_text = _limit_name(t.le) if t.le is not None else "…"
        return f"int, {lo_text} .. {hi_text}"
    if isinstance(t, mi.BytesType):
        if t.min_length == t.max_length and t.min_length is not None:
            return f"bin, exactly {t.min_length} bytes"
        return f"bin, at most {t.max_length} bytes"
    if isinstance(t, mi.StrType):
        pattern = f", matching `{t.pattern}`" if t.pattern else ""
        return f"str (UTF-8), at most {t.max_length} code points{pattern}"
    if isinstance(t, mi.BoolType):
        return "bool (MessagePack true / false)"
    if isinstance(t, mi.ListType):
        least = f"at least {t.min_length}, " if t.min_length else ""
        return f"array ({least}at most {t.max_length}) of {_type_text(t.item_type)}"
    if isinstance(t, mi.StructType):
        return "[" + "; ".join(f"{f.name}: {_type_text(f.type)}" for f in t.fields) + "]"
    raise AssertionError(t)


def _default_text(f: mi.Field) -> str:
    if f.required:
        return "required"
    return f"default `{f.default!r}`".replace("'", '"')


def render_limits() -> str:
    rows = ["| name | value | meaning |", "| --- | --- | --- |"]
    for name in (
        "FRAME_BYTES_MAX", "FRAME_LENGTH_MIN", "FRAME_LENGTH_MAX", "NONCE_BYTES", "MAC_BYTES",
        "KEY_BYTES", "AMOUNT_FEN_MAX", "TXN_SEQ_MAX", "SEQUENCE_MAX", "TERMINAL_ID_MAX",
        "MERCHANT_ID_MAX", "CARD_NO_MAX", "DETAIL_CHARS_MAX", "FIRMWARE_CHARS_MAX", "TIME_MS_MAX",
        "HEARTBEAT_INTERVAL_SECONDS_MAX", "TXN_SEQ_WINDOW", "QR_CHARS_MAX", "QR_NONCE_BYTES",
        "QR_MAC_BYTES", "QR_LIFETIME_SECONDS_MAX", "QR_CLOCK_SKEW_SECONDS",
    ):
        value = getattr(limits, name)
        doc = _attr_doc(name)
        shown = f"{value:,}".replace(",", "_") if value > 9999 else str(value)
        rows.append(f"| `{name}` | {shown} | {doc} |")
    return "\n".join(rows) + "\n"


def _attr_doc(name: str) -> str:
    source = Path(limits.__file__).read_text()
    m = re.search(rf"^{name}: Final = [^\n]*\n\"\"\"(.*?)\"\"\"", source, re.M | re.S)
    return " ".join(m.group(1).split()) if m else ""


def _senders(cls: type[ocp.Message]) -> str:
    """Which terminal kinds may send `cls` (ocp.TERMINAL_KIND_MESSAGES)."""
    if cls.direction is ocp.Direction.S2T:
        return "switch"
    kinds = [k for k, sent in ocp.TERMINAL_KIND_MESSAGES.items() if cls in sent]
    if len(kinds) == len(ocp.TerminalKind):
        return "every kind" + (", and the switch" if cls.direction is ocp.Direction.BOTH else "")
    return ", ".join(f"{k.label} ({k.value})" for k in kinds)


def render_messages() -> str:
    out = ["| tag | message | direction | sent by (terminal kinds) | body (after the tag) |",
           "| --- | --- | --- | --- | --- |"]
    for cls in ocp.MESSAGE_TYPES:
        fields = ", ".join(cls.__struct_fields__) or "(none)"
        tag = cls.__struct_config__.tag
        out.append(f"| {tag} | `{cls.__name__}` | {cls.direction} | {_senders(cls)} | {fields} |")
    out.append("")
    for cls in ocp.MESSAGE_TYPES:
        info = mi.type_info(cls)
        assert isinstance(info, mi.StructType)
        out.append(f"**{cls.__struct_config__.tag} `{cls.__name__}`** ({cls.direction}). "
                   f"{' '.join((cls.__doc__ or '').split())}".rstrip() + "\n")
        if not info.fields:
            out.append(f"Body: `[{cls.__struct_config__.tag}]`.\n")
            continue
        out.append("| index | field | type and limits | |")
        out.append("| --- | --- | --- | --- |")
        out.append(f"| 0 | tag | int = {cls.__struct_config__.tag} | required |")
        for i, f in enumerate(info.fields, start=1):
            out.append(f"| {i} | `{f.name}` | {_type_text(f.type)} | {_default_text(f)} |")
        out.append("")
    return "\n".join(out)


def render_reserved() -> str:
    out = ["| tags | reserved for |", "| --- | --- |"]
    for lo, hi, what in ocp.RESERVED_TAG_RANGES:
        out.append(f"| {lo}-{hi} | {what} |")
    return "\n".join(out) + "\n"


def render_codes() -> str:
    out = [
        "| code | name | kind | sent by, in | closes connection | journaled | Python class "
        "| meaning | terminal should |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    classes = {cls.response_code: cls.__name__ for cls in _remote_error_classes()}
    for code, info in ocp.CODE_INFO.items():
        yes_no = ("yes" if info.closes_connection else "no", "yes" if info.journaled else "no")
        out.append(
            f"| {code.value} | `{code.name}` | {info.kind} | {info.sender}, {info.carried_in} "
            f"| {yes_no[0]} | {yes_no[1]} | {f'`{classes[code]}`' if code in classes else '-'} "
            f"| {info.meaning} | {info.terminal_action} |"
        )
    return "\n".join(out) + "\n"


def _remote_error_classes() -> list[type[ocp.OcpRemoteError]]:
    return [
        getattr(ocp, name)
        for name in ocp.__all__
        if isinstance(getattr(ocp, name), type)
        and issubclass(getattr(ocp, name), ocp.OcpRemoteError)
        and getattr(ocp, name) is not ocp.OcpRemoteError
    ]


def render_precedence() -> str:
    out = ["0. a repeat of a journaled (terminal_id, txn_seq): the original answer, unchanged"]
    for i, code in enumerate(ocp.PURCHASE_CHECK_PRECEDENCE, start=1):
        out.append(f"{i}. `{code.name}` ({code.value})")
    out.append(f"{len(ocp.PURCHASE_CHECK_PRECEDENCE) + 1}. otherwise `APPROVED` (0)")
    return "\n".join(out) + "\n"


def render_transitions() -> str:
    out: list[str] = []
    for role in ocp.Role:
        out.append(f"**{role.value.capitalize()}** (`Role.{role.name}`):\n")
        out.append("```mermaid\nstateDiagram-v2")
        out.append("    [*] --> IDLE")
        edges: dict[tuple[str, str], list[str]] = {}
        for (r, state, way, event), nxt in ocp.TRANSITIONS.items():
            if r is role and event != "EOF":
                arrow = "send" if way is ocp.Way.SEND else "recv"
                edges.setdefault((state.value, nxt.value), []).append(f"{arrow} {event}")
        for (a, b), labels in edges.items():
            out.append(f"    {a} --> {b}: {', '.join(labels)}")
        out.append("    CLOSED --> [*]")
        out.append("```\n")
        out.append("| state | way | event | next state |")
        out.append("| --- | --- | --- | --- |")
        for (r, state, way, event), nxt in ocp.TRANSITIONS.items():
            if r is role and event != "EOF":
                out.append(f"| {state.value} | {way.value} | `{event}` | {nxt.value} |")
        eof = sorted(s.value for (r, s, _w, e) in ocp.TRANSITIONS if r is role and e == "EOF")
        out.append(f"| {', '.join(eof)} | receive | `EOF` | CLOSED |")
        out.append("")
    return "\n".join(out)


# --- Test vectors ------------------------------------------------------------------------------
# Printed by --print-vectors for a human to review and paste into the appendix; never rewritten
# automatically, so the appendix stays a frozen reference that the tests hold the code to.

VECTOR_MASTER_SECRET = bytes(range(32))
VECTOR_TERMINAL_ID = 1001
VECTOR_KEY_VERSION = 1
VECTOR_TERMINAL_NONCE = bytes(range(0xA0, 0xB0))
VECTOR_SWITCH_NONCE = bytes(range(0xB0, 0xC0))
VECTOR_CARD = 6222000000001234
VECTOR_ADMIN_TERMINAL_ID = 9001
VECTOR_ADMIN_TERMINAL_NONCE = bytes(range(0xC0, 0xD0))
VECTOR_ADMIN_SWITCH_NONCE = bytes(range(0xD0, 0xE0))


def _message_json(msg: ocp.Message) -> str:
    fields = {"type": type(msg).__name__}
    for name in msg.__struct_fields__:
        value = getattr(msg, name)
        fields[name] = value.hex() if isinstance(value, bytes) else value
    return msgspec.json.encode(fields).decode()


def _block(lines: list[tuple[str, object]], data: bytes | None = None) -> str:
    out = ["```ocp-vector"] + [f"{k}: {v}" for k, v in lines]
    if data is not None:
        hexed = data.hex()
        out += [f"hex: {hexed[i : i + 64]}" for i in range(0, len(hexed), 64)]
    return "\n".join([*out, "```"])


def _drive_session(terminal_id: int, terminal_nonce: bytes, switch_nonce: bytes,
                   steps: list[tuple[str, str, ocp.Message]],
                   ) -> list[tuple[str, str, ocp.Message, bytes]]:
    """(name, direction, message, frame) of a sign-on and then steps (name, "t2s" or "s2t",
    message), driven through a terminal's and a switch's Connection."""
    key = ocp.derive_terminal_key(VECTOR_MASTER_SECRET, terminal_id, VECTOR_KEY_VERSION)
    t, s = ocp.Connection(ocp.Role.TERMINAL), ocp.Connection(ocp.Role.SWITCH)
    frames: list[tuple[str, str, ocp.Message, bytes]] = []

    def hand(name: str, data: bytes, to: ocp.Connection) -> None:
        to.receive_data(data)
        ev = to.next_event()
        assert isinstance(ev, ocp.Message), ev
        frames.append((name, "t2s" if to is s else "s2t", ev, data))

    hand("sign-on", t.start_sign_on(terminal_id, key, terminal_nonce), s)
    hand("sign-on-challenge", s.accept_sign_on(key, switch_nonce), t)
    for name, direction, msg in steps:
        if direction == "t2s":
            hand(name, t.send(msg), s)
        else:
            hand(name, s.send(msg), t)
    return frames


def vector_session() -> list[tuple[str, str, ocp.Message, bytes]]:
    """(name, direction, message, frame) of the reference session, driven through Connections."""
    return _drive_session(VECTOR_TERMINAL_ID, VECTOR_TERMINAL_NONCE, VECTOR_SWITCH_NONCE, [
        ("sign-on-confirm", "t2s", ocp.SignOnConfirm(41, ocp.TerminalKind.POS, "pos-2.3.1")),
        ("sign-on-result", "s2t", ocp.SignOnResult(0, 1_700_000_000_000, 41, 30)),
        ("purchase", "t2s", ocp.Purchase(42, VECTOR_CARD, 1250, 1_700_000_001_000)),
        ("reversal", "t2s", ocp.Reversal(43, 42, VECTOR_CARD, 0)),
        ("purchase-result", "s2t", ocp.PurchaseResult(42, 0, 1250, 8750, 8000, 750)),
        ("reversal-result", "s2t", ocp.ReversalResult(43, 0, 1250, 10000)),
        ("balance-inquiry", "t2s", ocp.BalanceInquiry(44, VECTOR_CARD)),
        ("balance-result", "s2t", ocp.BalanceResult(44, 0, 10000, 9000, 1000)),
        ("heartbeat", "t2s", ocp.Heartbeat(1_700_000_030_000)),
        ("heartbeat-ack", "s2t", ocp.HeartbeatAck(1_700_000_030_005)),
        ("purchase-2", "t2s", ocp.Purchase(45, VECTOR_CARD, 20000, 1_700_000_031_000)),
        ("error-busy", "s2t", ocp.Error(ocp.ResponseCode.BUSY, 45, "retry later")),
        ("error-from-terminal", "t2s",
         ocp.Error(ocp.ResponseCode.UNKNOWN_MESSAGE, 0, "tag 40")),
        ("sign-off", "t2s", ocp.SignOff()),
    ])


def vector_admin_session() -> list[tuple[str, str, ocp.Message, bytes]]:
    """(name, direction, message, frame) of the reference admin terminal session (A.4)."""
    rc = ocp.ResponseCode
    steps: list[tuple[str, str, ocp.Message]] = [
        ("sign-on-confirm", "t2s",
         ocp.SignOnConfirm(7, ocp.TerminalKind.ADMIN, "admin-api-1.0")),
        ("sign-on-result", "s2t", ocp.SignOnResult(0, 1_700_000_100_000, 7, 30)),
        ("credit", "t2s", ocp.Credit(8, VECTOR_CARD, 0, 5000, 2)),
        ("credit-result", "s2t", ocp.CreditResult(8, 0, 5000, 15000, 14000, 1000)),
        ("debit", "t2s", ocp.Debit(9, VECTOR_CARD, 1, 400, 7)),
        ("debit-result", "s2t", ocp.DebitResult(9, 0, 400, 14600, 14000, 600)),
        ("transfer", "t2s", ocp.Transfer(10, VECTOR_CARD, 0, 2000)),
        ("transfer-result", "s2t", ocp.TransferResult(10, 0, 2000, 14600, 12000, 2600)),
        ("debit-declined", "t2s", ocp.Debit(11, VECTOR_CARD, 1, 5000, 7)),
        ("debit-result-declined", "s2t",
         ocp.DebitResult(11, rc.INSUFFICIENT_FUNDS, 0, 14600, 12000, 2600)),
        ("reversal-of-credit", "t2s", ocp.Reversal(12, 8, VECTOR_CARD, 0)),
        ("reversal-not-permitted", "s2t",
         ocp.Error(rc.NOT_PERMITTED, 12, "Reversal is accepted from POS terminals (kind 1) only")),
    ]
    return _drive_session(VECTOR_ADMIN_TERMINAL_ID, VECTOR_ADMIN_TERMINAL_NONCE,
                          VECTOR_ADMIN_SWITCH_NONCE, steps)


def _session_blocks(prefix: str, key_prefix: str,
                    frames: list[tuple[str, str, ocp.Message, bytes]]) -> list[str]:
    """One vector block per frame of a whole session: named <prefix>/<nn>-<name>, keyed
    <key_prefix><direction> when MAC'd."""
    out = []
    for i, (name, direction, msg, data) in enumerate(frames, start=1):
        mac = data[5] & ocp.FLAG_MAC
        out.append(_block([
            ("name", f"{prefix}/{i:02d}-{name}"),
            ("direction", direction),
            ("key", (key_prefix + direction) if mac else "none"),
            ("sequence", int.from_bytes(data[6:10], "big")),
            ("message", _message_json(msg)),
        ], data))
    return out


def _frame_block(name: str, direction: str, msg: ocp.Message, sequence: int,
                 mac_key: bytes) -> str:
    """The vector block of one MAC'd frame, encoded here with the session key k_<direction>."""
    return _block([
        ("name", name),
        ("direction", direction),
        ("key", "k_" + direction),
        ("sequence", sequence),
        ("message", _message_json(msg)),
    ], ocp.encode_frame(msg, sequence=sequence, mac_key=mac_key))


def _invalid_blocks(prefix: str,
                    invalid: list[tuple[str, str, bytes, str, str | None]]) -> list[str]:
    """One vector block per invalid frame: (name, context, data, error class, field path).
    A context ending in "+eof" is that context with the stream ending after the bytes."""
    out = []
    for name, context, data, error, path in invalid:
        cls = getattr(ocp, error)
        context, eof, _ = context.partition("+eof")
        lines: list[tuple[str, object]] = [
            ("name", prefix + name),
            ("context", context),
            ("error", error),
            ("code", f"{cls.response_code.value} {cls.response_code.name}"),
        ]
        if path:
            lines.append(("path", path))
        if eof:
            lines.append(("then", "eof"))
        out.append(_block(lines, data))
    return out


def render_admin_vectors() -> str:
    """Appendix A.4: an admin terminal's key, session and frames, and refusals."""
    key = ocp.derive_terminal_key(VECTOR_MASTER_SECRET, VECTOR_ADMIN_TERMINAL_ID,
                                  VECTOR_KEY_VERSION)
    k_t2s, k_s2t = ocp.derive_session_keys(key, VECTOR_ADMIN_TERMINAL_NONCE,
                                           VECTOR_ADMIN_SWITCH_NONCE)
    out = [_block([
        ("name", "kdf/admin-session-keys"),
        ("master_secret", VECTOR_MASTER_SECRET.hex()),
        ("terminal_id", VECTOR_ADMIN_TERMINAL_ID),
        ("key_version", VECTOR_KEY_VERSION),
        ("terminal_key", key.hex()),
        ("terminal_nonce", VECTOR_ADMIN_TERMINAL_NONCE.hex()),
        ("switch_nonce", VECTOR_ADMIN_SWITCH_NONCE.hex()),
        ("k_t2s", k_t2s.hex()),
        ("k_s2t", k_s2t.hex()),
    ])]
    out += _session_blocks("admin-session", "admin_k_", vector_admin_session())
    pos_key = ocp.derive_terminal_key(VECTOR_MASTER_SECRET, VECTOR_TERMINAL_ID,
                                      VECTOR_KEY_VERSION)
    pos_t2s, pos_s2t = ocp.derive_session_keys(pos_key, VECTOR_TERMINAL_NONCE,
                                               VECTOR_SWITCH_NONCE)
    credit = ocp.Credit(46, VECTOR_CARD, 0, 5000, 2)
    refusal = ocp.Error(ocp.ResponseCode.NOT_PERMITTED, 46,
                        "Credit is accepted from admin terminals (kind 6) only")
    for name, direction, msg, sequence, mac_key in (
        ("admin-refused/01-credit-from-pos", "t2s", credit, 8, pos_t2s),
        ("admin-refused/02-not-permitted", "s2t", refusal, 7, pos_s2t),
    ):
        out.append(_frame_block(name, direction, msg, sequence, mac_key))
    invalid = [
        ("admin-invalid/credit-wallet", "session",
         ocp.encode_frame(ocp.Credit(46, VECTOR_CARD, 2, 5000, 2), sequence=2, mac_key=pos_t2s),
         "InvalidField", "$.wallet"),
        ("admin-invalid/credit-before-sign-on", "fresh",
         ocp.encode_frame(credit, sequence=0), "NotSignedOn", None),
    ]
    out += _invalid_blocks("", invalid)
    return "\n\n".join(out)


def render_vectors() -> str:
    key = ocp.derive_terminal_key(VECTOR_MASTER_SECRET, VECTOR_TERMINAL_ID, VECTOR_KEY_VERSION)
    k_t2s, k_s2t = ocp.derive_session_keys(key, VECTOR_TERMINAL_NONCE, VECTOR_SWITCH_NONCE)
    out = [
        _block([
            ("name", "kdf/terminal-key"),
            ("master_secret", VECTOR_MASTER_SECRET.hex()),
            ("terminal_id", VECTOR_TERMINAL_ID),
            ("key_version", VECTOR_KEY_VERSION),
            ("terminal_key", key.hex()),
        ]),
        _block([
            ("name", "kdf/session-keys"),
            ("terminal_key", key.hex()),
            ("terminal_nonce", VECTOR_TERMINAL_NONCE.hex()),
            ("switch_nonce", VECTOR_SWITCH_NONCE.hex()),
            ("k_t2s", k_t2s.hex()),
            ("k_s2t", k_s2t.hex()),
        ]),
    ]
    out += _session_blocks("session", "k_", vector_session())
    unknown_terminal = ocp.Error(ocp.ResponseCode.UNKNOWN_TERMINAL, 0, "unknown")
    refused = ocp.encode_frame(unknown_terminal, sequence=0)
    out.append(_block([
        ("name", "refused/unknown-terminal"),
        ("direction", "s2t"),
        ("key", "none"),
        ("sequence", 0),
        ("message", _message_json(ocp.decode_frame(refused)[1])),
    ], refused))
    purchase = ocp.Purchase(46, VECTOR_CARD, 500)
    good = ocp.encode_frame(purchase, sequence=2, mac_key=k_t2s)
    flipped = good[:-1] + bytes([good[-1] ^ 1])
    confirm = ocp.encode_frame(ocp.SignOnConfirm(41, 1, "pos-2.3.1"), sequence=1, mac_key=k_t2s)
    unknown = bytes([1, 1, 0, 0, 0, 2, 0x92, 0x28, 0x2F])
    unknown += ocp.MacKey(k_t2s).mac(unknown)
    invalid = [
        ("bad-mac", "session", flipped, "BadMac", None),
        ("replayed-sequence", "session", confirm, "SequenceError", None),
        ("skipped-sequence", "session", ocp.encode_frame(purchase, sequence=3, mac_key=k_t2s),
         "SequenceError", None),
        ("plain-in-session", "session", ocp.encode_frame(purchase, sequence=2), "BadMac", None),
        ("too-large", "session", bytes.fromhex("00004000") + bytes([1, 1]), "FrameTooLarge", None),
        ("too-short", "session", bytes.fromhex("0000000501000000 00".replace(" ", "")),
         "MalformedFrame", None),
        ("bad-version", "session", good[:4] + b"\x02" + good[5:], "UnsupportedVersion", None),
        ("bad-flags", "session", good[:5] + b"\x03" + good[6:], "MalformedFrame", None),
        ("invalid-amount", "session", ocp.encode_frame(
            ocp.Purchase(46, VECTOR_CARD, limits.AMOUNT_FEN_MAX + 1), sequence=2, mac_key=k_t2s),
         "InvalidField", "$.amount_fen"),
        ("unknown-tag", "session", len(unknown).to_bytes(4, "big") + unknown, "UnknownMessage",
         None),
        ("wrong-direction", "session", ocp.encode_frame(
            ocp.PurchaseResult(46, 0, 500, 0, 0, 0), sequence=2, mac_key=k_t2s),
         "UnexpectedMessage", None),
        ("purchase-before-sign-on", "fresh", ocp.encode_frame(purchase, sequence=0),
         "NotSignedOn", None),
        ("missing-field", "session", _mac_raw([16, 46, VECTOR_CARD], 2, k_t2s), "InvalidField",
         "$.amount_fen"),
        ("invalid-utf8", "session", _mac_raw([31, 82, 0, _NOT_UTF8], 2, k_t2s),
         "MalformedFrame", None),
        ("heartbeat-before-sign-on", "fresh", ocp.encode_frame(ocp.Heartbeat(0), sequence=0),
         "NotSignedOn", None),
        ("plain-confirm", "awaiting-confirm", ocp.encode_frame(
            ocp.SignOnConfirm(41, 1, "pos-2.3.1"), sequence=1), "BadMac", None),
        ("plain-purchase-awaiting-confirm", "awaiting-confirm",
         ocp.encode_frame(purchase, sequence=1), "BadMac", None),
        ("eof-inside-frame", "session+eof", good[:12], "MalformedFrame", None),
    ]
    out += _invalid_blocks("invalid/", invalid)
    return "\n\n".join(out)


_NOT_UTF8 = msgspec.Raw(b"\xa2\xff\xfe")
"""A MessagePack str of two bytes that are not UTF-8 (msgspec will not encode one)."""


def _mac_raw(body: list[object], sequence: int, mac_key: bytes) -> bytes:
    """A MAC'd frame of a raw body (fields the message classes cannot hold)."""
    covered = bytes([ocp.VERSION, ocp.FLAG_MAC]) + sequence.to_bytes(4, "big")
    covered += msgspec.msgpack.encode(body)
    covered += ocp.MacKey(mac_key).mac(covered)
    return len(covered).to_bytes(4, "big") + covered


def render_corner_vectors() -> str:
    """Appendix A.6: the POS terminal of A.2 (keys of A.1), each frame in place of its sign-off:
    refused for its kind, reusing an inquiry's txn_seq, and the Errors that end a session."""
    key = ocp.derive_terminal_key(VECTOR_MASTER_SECRET, VECTOR_TERMINAL_ID, VECTOR_KEY_VERSION)
    k_t2s, k_s2t = ocp.derive_session_keys(key, VECTOR_TERMINAL_NONCE, VECTOR_SWITCH_NONCE)
    rc = ocp.ResponseCode
    frames: list[tuple[str, str, ocp.Message]] = [
        ("kind-refused/01-purchase-from-a-door", "t2s", ocp.Purchase(46, VECTOR_CARD, 500)),
        ("kind-refused/02-not-permitted", "s2t", ocp.Error(
            rc.NOT_PERMITTED, 46, "Purchase is accepted from POS terminals (kind 1) only")),
        ("reuse/01-purchase-reusing-an-inquiry", "t2s", ocp.Purchase(44, VECTOR_CARD, 500)),
        ("reuse/02-the-inquirys-answer", "s2t", ocp.BalanceResult(44, 0, 10000, 9000, 1000)),
        ("closing/01-session-replaced", "s2t", ocp.Error(
            rc.SESSION_REPLACED, 0, "terminal signed on again on another connection")),
        ("closing/02-idle-timeout", "s2t", ocp.Error(
            rc.IDLE_TIMEOUT, 0, "nothing received for 3 heartbeat intervals")),
        ("closing/03-shutting-down", "s2t", ocp.Error(
            rc.SHUTTING_DOWN, 0, "switch is shutting down")),
    ]
    out = [_frame_block(name, direction, msg, 8 if direction == "t2s" else 7,
                        k_t2s if direction == "t2s" else k_s2t)
           for name, direction, msg in frames]
    plain = ocp.encode_frame(ocp.Error(rc.IDLE_TIMEOUT, 0,
                                       "nothing received for 3 heartbeat intervals"), sequence=0)
    out.append(_block([
        ("name", "closing/04-idle-timeout-before-sign-on"),
        ("direction", "s2t"),
        ("key", "none"),
        ("sequence", 0),
        ("message", _message_json(ocp.decode_frame(plain)[1])),
    ], plain))
    return "\n\n".join(out)


def render_access_vectors() -> str:
    """Appendix A.7: door access. The terminal of A.2 (keys of A.1) registered as a door
    controller (kind 3), each frame in place of its sign-off: an AccessRequest by card opened,
    one by face template with a PIN denied, an elevator request, a DoorEvent and its ack; and
    the till's AccessRequest refused NOT_PERMITTED."""
    key = ocp.derive_terminal_key(VECTOR_MASTER_SECRET, VECTOR_TERMINAL_ID, VECTOR_KEY_VERSION)
    k_t2s, k_s2t = ocp.derive_session_keys(key, VECTOR_TERMINAL_NONCE, VECTOR_SWITCH_NONCE)
    rc = ocp.ResponseCode
    frames: list[tuple[str, str, ocp.Message]] = [
        ("access/01-card-at-reader-1", "t2s",
         ocp.AccessRequest(50, 1, 0, int(ocp.CredentialKindCode.CARD), VECTOR_CARD,
                           terminal_time_ms=1700000200000)),
        ("access/02-open", "s2t", ocp.AccessResult(50, rc.APPROVED, 3000, 0)),
        ("access/03-face-and-pin-at-reader-2", "t2s",
         ocp.AccessRequest(51, 2, 1, int(ocp.CredentialKindCode.FACE), 0, "face-000042",
                           "1234")),
        ("access/04-denied-outside-time-zone", "s2t",
         ocp.AccessResult(51, rc.OUTSIDE_TIME_ZONE, 0, 0)),
        ("access/05-elevator-floor-5", "t2s",
         ocp.AccessRequest(52, 3, 0, int(ocp.CredentialKindCode.CARD), VECTOR_CARD, floor=5)),
        ("access/06-floors-1-to-5", "s2t", ocp.AccessResult(52, rc.APPROVED, 5000, 0b111110)),
        ("access/07-door-forced-open", "t2s",
         ocp.DoorEvent(53, 1, int(ocp.DoorEventCode.FORCED_OPEN), 1700000260000)),
        ("access/08-event-journaled", "s2t", ocp.DoorEventAck(53, 0)),
        ("access/09-access-request-from-a-till", "t2s",
         ocp.AccessRequest(54, 1, 0, int(ocp.CredentialKindCode.CARD), VECTOR_CARD)),
        ("access/10-not-permitted", "s2t", ocp.Error(
            rc.NOT_PERMITTED, 54, "AccessRequest is accepted from door terminals (kind 3) only")),
        ("access/11-unknown-reader", "s2t", ocp.Error(
            rc.UNKNOWN_READER, 50, "terminal 1001 has no reader 1")),
        ("access/12-card-at-a-card-and-face-door", "t2s",
         ocp.AccessRequest(55, 1, 0, int(ocp.CredentialKindCode.CARD), VECTOR_CARD)),
        ("access/13-second-factor-required", "s2t",
         ocp.AccessResult(55, rc.SECOND_FACTOR_REQUIRED, 0, 0)),
        ("access/14-the-same-persons-face-at-reader-2", "t2s",
         ocp.AccessRequest(56, 2, 0, int(ocp.CredentialKindCode.FACE), 0, "face-000042")),
        ("access/15-open", "s2t", ocp.AccessResult(56, rc.APPROVED, 3000, 0)),
        ("access/16-card-and-face-in-one-request", "t2s",
         ocp.AccessRequest(57, 2, 0, int(ocp.CredentialKindCode.FACE), VECTOR_CARD,
                           "face-000042")),
        ("access/17-open", "s2t", ocp.AccessResult(57, rc.APPROVED, 3000, 0)),
        ("access/18-a-qr-code-shown-again", "t2s",
         ocp.AccessRequest(58, 1, 0, int(ocp.CredentialKindCode.QR), 0, _vector_qr_text())),
        ("access/19-qr-used", "s2t", ocp.AccessResult(58, rc.QR_USED, 0, 0)),
        ("access/20-command-open-reader-1-once", "s2t",
         ocp.DoorCommand(7, 1, int(ocp.DoorCommandAction.OPEN_ONCE), 5000)),
        ("access/21-command-done", "t2s",
         ocp.DoorCommandAck(7, int(ocp.DoorCommandCode.DONE), 1700000300000)),
        ("access/22-command-hold-reader-2-locked", "s2t",
         ocp.DoorCommand(8, 2, int(ocp.DoorCommandAction.HOLD_LOCKED), 0)),
        ("access/23-command-lock-fault", "t2s",
         ocp.DoorCommandAck(8, int(ocp.DoorCommandCode.LOCK_FAULT), 1700000301000)),
        ("access/24-command-unknown-to-an-older-door", "t2s",
         ocp.Error(rc.UNKNOWN_MESSAGE, 9, "unknown message tag 36")),
    ]
    return "\n\n".join(_frame_block(name, direction, msg, 8 if direction == "t2s" else 7,
                                    k_t2s if direction == "t2s" else k_s2t)
                       for name, direction, msg in frames)


def render_offline_vectors() -> str:
    """Appendix A.8: offline operation. The door controller of A.7, each frame in place of its
    sign-off: a whole list asked for and sent, a delta from its version, an upload of two
    records and its answer, the replay's answer, a stale version refused, and a till's upload
    refused NOT_PERMITTED."""
    key = ocp.derive_terminal_key(VECTOR_MASTER_SECRET, VECTOR_TERMINAL_ID, VECTOR_KEY_VERSION)
    k_t2s, k_s2t = ocp.derive_session_keys(key, VECTOR_TERMINAL_NONCE, VECTOR_SWITCH_NONCE)
    rc = ocp.ResponseCode
    version = 1_700_000_300_000
    workdays = ocp.OfflineTimeZone(1, [ocp.TimeZoneInterval(d, 420, 1200) for d in range(5)]
                                   + [ocp.TimeZoneInterval(7, 540, 720)])
    records = [ocp.OfflineRecord(1, 1_700_000_400_000, 1, 0, VECTOR_CARD, rc.APPROVED),
               ocp.OfflineRecord(2, 1_700_000_460_000, 1, 0, VECTOR_CARD + 1, rc.NO_PERMISSION)]
    frames: list[tuple[str, str, ocp.Message]] = [
        ("offline/01-list-request", "t2s", ocp.AccessListRequest(60, 0)),
        ("offline/02-snapshot", "s2t", ocp.AccessListSnapshot(
            version, 0, 1, [ocp.AccessEntry(VECTOR_CARD, 1),
                            ocp.AccessEntry(VECTOR_CARD + 2, 0, 1_700_000_000, 1_700_086_400)],
            28_800, 0, [19_723], [workdays])),
        ("offline/03-delta-request", "t2s", ocp.AccessListRequest(61, version)),
        ("offline/04-delta", "s2t", ocp.AccessListDelta(
            version, version + 1, [ocp.AccessEntry(VECTOR_CARD + 3)], [VECTOR_CARD + 2])),
        ("offline/05-upload", "t2s", ocp.OfflineUpload(62, version + 1, records)),
        ("offline/06-journaled", "s2t", ocp.OfflineUploadResult(62, rc.APPROVED, 2, 0, 2)),
        ("offline/07-replayed-upload-answer", "s2t",
         ocp.OfflineUploadResult(63, rc.APPROVED, 0, 2, 2)),
        ("offline/08-stale-version", "s2t", ocp.Error(
            rc.SNAPSHOT_STALE, 64,
            "cannot send deltas from that version: ask with have_version 0")),
        ("offline/09-upload-from-a-till", "s2t", ocp.Error(
            rc.NOT_PERMITTED, 65, "OfflineUpload is accepted from door terminals (kind 3) only")),
    ]
    return "\n\n".join(_frame_block(name, direction, msg, 8 if direction == "t2s" else 7,
                                    k_t2s if direction == "t2s" else k_s2t)
                       for name, direction, msg in frames)
VECTOR_PIN_NONCE = bytes(range(0x70, 0x7C))
VECTOR_PIN = "123456"


def render_kiosk_vectors() -> str:
    """Appendix A.9: the keys of A.1 as a kiosk's session (same terminal key and nonces): its
    PIN key, a sealed PIN block, a Topup and each kind of TopupResult, and the refusal of a
    Topup from the POS terminal of A.2."""
    key = ocp.derive_terminal_key(VECTOR_MASTER_SECRET, VECTOR_TERMINAL_ID, VECTOR_KEY_VERSION)
    k_t2s, k_s2t = ocp.derive_session_keys(key, VECTOR_TERMINAL_NONCE, VECTOR_SWITCH_NONCE)
    k_pin = ocp.derive_pin_key(key, VECTOR_TERMINAL_NONCE, VECTOR_SWITCH_NONCE)
    block = ocp.seal_pin(k_pin, VECTOR_PIN, terminal_id=VECTOR_TERMINAL_ID, txn_seq=50,
                         card_no=VECTOR_CARD, amount_fen=20_000, nonce=VECTOR_PIN_NONCE)
    rc, out_ = ocp.ResponseCode, ocp.TopupOutcome
    out = [
        _block([("name", "kdf/pin-key"), ("terminal_key", key.hex()),
                ("terminal_nonce", VECTOR_TERMINAL_NONCE.hex()),
                ("switch_nonce", VECTOR_SWITCH_NONCE.hex()), ("k_pin", k_pin.hex())]),
        _block([("name", "pin/block"), ("k_pin", k_pin.hex()),
                ("terminal_id", VECTOR_TERMINAL_ID), ("txn_seq", 50),
                ("card_no", VECTOR_CARD), ("amount_fen", 20_000), ("pin", VECTOR_PIN),
                ("nonce", VECTOR_PIN_NONCE.hex()),
                ("aad", (VECTOR_TERMINAL_ID.to_bytes(4, "big") + (50).to_bytes(4, "big")
                         + VECTOR_CARD.to_bytes(8, "big") + (20_000).to_bytes(8, "big")).hex()),
                ("pin_block", block.hex())]),
    ]
    frames: list[tuple[str, str, ocp.Message]] = [
        ("kiosk/01-topup", "t2s", ocp.Topup(50, VECTOR_CARD, 20_000, block,
                                            1_700_000_005_000)),
        ("kiosk/02-approved", "s2t", ocp.TopupResult(50, 0, out_.APPROVED, 20_000, 30_000,
                                                     29_000, 1_000, "00")),
        ("kiosk/03-declined-by-the-bank", "s2t", ocp.TopupResult(
            50, rc.BANK_INSUFFICIENT_FUNDS, out_.DECLINED, 0, 0, 0, 0, "51")),
        ("kiosk/04-wrong-pin", "s2t", ocp.TopupResult(50, rc.PIN_INCORRECT, out_.DECLINED,
                                                      0, 0, 0, 0)),
        ("kiosk/05-unknown-not-credited", "s2t", ocp.TopupResult(
            50, rc.BANK_NO_ANSWER, out_.UNKNOWN, 0, 0, 0, 0)),
        ("kiosk/06-topup-from-a-pos", "t2s", ocp.Topup(51, VECTOR_CARD, 20_000, block)),
        ("kiosk/07-not-permitted", "s2t", ocp.Error(
            rc.NOT_PERMITTED, 51, "Topup is accepted from kiosk terminals (kind 2) only")),
    ]
    out += [_frame_block(name, direction, msg, 8 if direction == "t2s" else 7,
                         k_t2s if direction == "t2s" else k_s2t)
            for name, direction, msg in frames]
    return "\n\n".join(out)


VECTOR_QR_NONCE = bytes(range(0xE0, 0xE8))
VECTOR_QR_ISSUED_S = 1_700_000_000
VECTOR_QR_EXPIRES_S = 1_700_000_060


def _vector_qr_text() -> str:
    """The QR code of appendix A.5."""
    from protocols import qr

    return qr.issue(qr.derive_qr_key(VECTOR_MASTER_SECRET), VECTOR_CARD, VECTOR_QR_EXPIRES_S,
                    VECTOR_QR_NONCE, issued_s=VECTOR_QR_ISSUED_S)


def render_qr_vectors() -> str:
    """Appendix A.5: the QR key, a token, how a verifier judges tokens, and QrPurchase frames."""
    from protocols import qr

    qr_key = qr.derive_qr_key(VECTOR_MASTER_SECRET)
    text = qr.issue(qr_key, VECTOR_CARD, VECTOR_QR_EXPIRES_S, VECTOR_QR_NONCE,
                    issued_s=VECTOR_QR_ISSUED_S)
    raw = base64.b32decode(text[len(qr.PREFIX):])
    out = [
        _block([("name", "qr/key"), ("master_secret", VECTOR_MASTER_SECRET.hex()),
                ("qr_key", qr_key.hex())]),
        _block([("name", "qr/token"), ("qr_key", qr_key.hex()), ("card_no", VECTOR_CARD),
                ("issued_s", VECTOR_QR_ISSUED_S), ("expires_s", VECTOR_QR_EXPIRES_S),
                ("nonce", VECTOR_QR_NONCE.hex()), ("text", text)], raw),
    ]

    def signed(body: bytes) -> str:
        mac = hmac.digest(qr_key, body, "sha256")[: limits.QR_MAC_BYTES]
        return qr.PREFIX + base64.b32encode(body + mac).decode()

    body = raw[: qr.BODY_BYTES]
    flipped = raw[:-1] + bytes([raw[-1] ^ 1])
    forged = qr.PREFIX + base64.b32encode(flipped).decode()
    skew = limits.QR_CLOCK_SKEW_SECONDS
    long_lived = body[:13] + (VECTOR_QR_ISSUED_S + limits.QR_LIFETIME_SECONDS_MAX + 1
                              ).to_bytes(4, "big") + body[17:]
    checks: list[tuple[str, str, int, str]] = [
        ("valid", text, VECTOR_QR_ISSUED_S + 30, "none"),
        ("valid-within-skew-after-expiry", text, VECTOR_QR_EXPIRES_S + skew, "none"),
        ("valid-within-skew-before-issue", text, VECTOR_QR_ISSUED_S - skew, "none"),
        ("expired", text, VECTOR_QR_EXPIRES_S + skew + 1, "QrExpired"),
        ("not-yet-valid", text, VECTOR_QR_ISSUED_S - skew - 1, "QrExpired"),
        ("bad-mac", forged, VECTOR_QR_ISSUED_S, "QrBadMac"),
        ("lower-case", text.lower(), VECTOR_QR_ISSUED_S, "QrMalformed"),
        ("no-prefix", text[len(qr.PREFIX):], VECTOR_QR_ISSUED_S, "QrMalformed"),
        ("version-2", signed(b"\x02" + body[1:]), VECTOR_QR_ISSUED_S, "QrMalformed"),
        ("lifetime-too-long", signed(long_lived), VECTOR_QR_ISSUED_S, "QrMalformed"),
    ]
    for name, check_text, now_s, error in checks:
        lines: list[tuple[str, object]] = [("name", f"qr-check/{name}"), ("text", check_text),
                                           ("now_s", now_s), ("error", error)]
        if error == "none":
            lines.append(("card_no", VECTOR_CARD))
        out.append(_block(lines))
    key = ocp.derive_terminal_key(VECTOR_MASTER_SECRET, VECTOR_TERMINAL_ID, VECTOR_KEY_VERSION)
    k_t2s, k_s2t = ocp.derive_session_keys(key, VECTOR_TERMINAL_NONCE, VECTOR_SWITCH_NONCE)
    frames: list[tuple[str, str, ocp.Message, int, bytes]] = [
        ("qr-purchase", "t2s", ocp.QrPurchase(46, text, 1250, 1_700_000_040_000), 8, k_t2s),
        ("purchase-result", "s2t", ocp.PurchaseResult(46, 0, 1250, 8750, 7750, 1000), 7,
         k_s2t),
        ("qr-purchase-again", "t2s", ocp.QrPurchase(47, text, 1250, 1_700_000_041_000), 9,
         k_t2s),
        ("error-qr-used", "s2t", ocp.Error(ocp.ResponseCode.QR_USED, 47,
                                           "the QR code has already paid: refresh it"), 8, k_s2t),
        ("qr-purchase-forged", "t2s", ocp.QrPurchase(48, forged, 1250, 1_700_000_042_000), 10,
         k_t2s),
        ("error-qr-invalid", "s2t", ocp.Error(ocp.ResponseCode.QR_INVALID, 48,
                                              "QR code refused: the QR code's MAC does not "
                                              "verify"), 9, k_s2t),
    ]
    for i, (name, direction, msg, sequence, mac_key) in enumerate(frames, start=1):
        out.append(_frame_block(f"qr-session/{i:02d}-{name}", direction, msg, sequence, mac_key))
    return "\n\n".join(out)


RENDERERS: dict[str, Callable[[], str]] = {
    "limits": render_limits,
    "messages": render_messages,
    "reserved-tags": render_reserved,
    "codes": render_codes,
    "precedence": render_precedence,
    "transitions": render_transitions,
}


def render(text: str) -> str:
    seen: set[str] = set()

    def repl(m: re.Match[str]) -> str:
        name = m.group("name")
        if name not in RENDERERS:
            return m.group(0)
        seen.add(name)
        return m.group(1) + RENDERERS[name]() + m.group(4)

    new = _REGION.sub(repl, text)
    missing = set(RENDERERS) - seen
    if missing:
        raise SystemExit(f"docs/protocol.md lacks GENERATED regions: {sorted(missing)}")
    return new


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if protocol.md is stale")
    parser.add_argument("--print-vectors", action="store_true", help="print fresh test vectors")
    args = parser.parse_args(argv)
    if args.print_vectors:
        print(render_vectors())
        print("\n<!-- A.4 -->\n")
        print(render_admin_vectors())
        print("\n<!-- A.5 -->\n")
        print(render_qr_vectors())
        print("\n<!-- A.6 -->\n")
        print(render_corner_vectors())
        print("\n<!-- A.7 -->\n")
        print(render_access_vectors())
        print("\n<!-- A.8 -->\n")
        print(render_offline_vectors())
        print("\n<!-- A.9 -->\n")
        print(render_kiosk_vectors())
        return 0
    text = DOC.read_text(encoding="utf-8")
    new = render(text)
    if args.check:
        if new != text:
            print("docs/protocol.md is out of date: run python docs/make_protocol_tables.py")
            return 1
        return 0
    if new != text:
        DOC.write_text(new, encoding="utf-8")
        print("docs/protocol.md updated")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
