"""A POS terminal for OCP built from docs/protocol.md alone, as a conformance test.

Everything on the wire (framing, HKDF, MAC, sequence numbers, message bodies) is implemented
here from the spec with the standard library; `msgspec.msgpack` is used only as a MessagePack
encoder/decoder of raw lists. The project's own OCP code (`protocols`, `switch`, ...) is not
imported: `tests.switch_site.Site` is used only to seed a site and start the switch process.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import socket
import struct
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.switch_site import FREE_CANTEEN_TERMINAL, Site

SPEC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"

# --- section 2: limits ------------------------------------------------------------------------
FRAME_BYTES_MAX = 16_384
FRAME_LENGTH_MIN = 6
FRAME_LENGTH_MAX = FRAME_BYTES_MAX - 4
NONCE_BYTES = 16
MAC_BYTES = 16
KEY_BYTES = 32
AMOUNT_FEN_MAX = 10_000_000
U32 = 2**32 - 1
I63 = 2**63 - 1
HEADER = struct.Struct(">IBBI")  # length, version, flags, sequence
FLAG_MAC = 0x01

# --- section 9: response codes used here --------------------------------------------------------
APPROVED = 0
UNKNOWN_CARD = 14
INVALID_FIELD = 81
UNKNOWN_MESSAGE = 82
MALFORMED_FRAME = 83
FRAME_TOO_LARGE = 84
UNSUPPORTED_VERSION = 85
BAD_MAC = 86
SEQUENCE_ERROR = 87
NOT_SIGNED_ON = 88
UNKNOWN_TERMINAL = 89
UNEXPECTED_MESSAGE = 91
SESSION_REPLACED = 99


class ProtocolError(Exception):
    def __init__(self, code: int, detail: str = "") -> None:
        super().__init__(f"{code} {detail}")
        self.code = code
        self.detail = detail


# --- section 4.1: message schemas -------------------------------------------------------------
REQUIRED = object()


def _int(lo: int, hi: int) -> tuple[str, int, int]:
    return ("int", lo, hi)


BIN16 = ("bin", NONCE_BYTES, NONCE_BYTES)
TXN = _int(1, U32)
CODE = _int(0, 255)
TIME = _int(0, I63)
CARD = _int(1, I63)
AMOUNT = _int(0, AMOUNT_FEN_MAX)
I64 = _int(-(2**63), I63)

T2S, S2T, BOTH = "t2s", "s2t", "both"
MESSAGES: dict[int, tuple[str, str, list[tuple[str, tuple[str, int, int], Any]]]] = {
    1: ("SignOn", T2S, [("terminal_id", _int(1, 2**31 - 1), REQUIRED), ("nonce", BIN16, REQUIRED),
                        ("protocol_version", _int(1, 255), 1)]),
    2: ("SignOnChallenge", S2T, [("nonce", BIN16, REQUIRED)]),
    3: ("SignOnConfirm", T2S, [("last_txn_seq", _int(0, U32), REQUIRED),
                               ("terminal_kind", _int(1, 255), 1),
                               ("firmware", ("str", 0, 64), "")]),
    4: ("SignOnResult", S2T, [("code", CODE, REQUIRED), ("server_time_ms", TIME, REQUIRED),
                              ("last_txn_seq", _int(0, U32), REQUIRED),
                              ("heartbeat_interval_s", _int(1, 3600), REQUIRED)]),
    5: ("Heartbeat", T2S, [("terminal_time_ms", TIME, 0)]),
    6: ("HeartbeatAck", S2T, [("server_time_ms", TIME, REQUIRED)]),
    7: ("SignOff", T2S, []),
    16: ("Purchase", T2S, [("txn_seq", TXN, REQUIRED), ("card_no", CARD, REQUIRED),
                           ("amount_fen", AMOUNT, REQUIRED), ("terminal_time_ms", TIME, 0)]),
    17: ("PurchaseResult", S2T, [("txn_seq", TXN, REQUIRED), ("code", CODE, REQUIRED),
                                 ("amount_fen", AMOUNT, REQUIRED), ("balance_fen", I64, REQUIRED),
                                 ("main_fen", I64, REQUIRED), ("subsidy_fen", I64, REQUIRED)]),
    18: ("Reversal", T2S, [("txn_seq", TXN, REQUIRED), ("original_txn_seq", TXN, REQUIRED),
                           ("card_no", CARD, REQUIRED), ("amount_fen", AMOUNT, REQUIRED)]),
    19: ("ReversalResult", S2T, [("txn_seq", TXN, REQUIRED), ("code", CODE, REQUIRED),
                                 ("amount_fen", AMOUNT, REQUIRED),
                                 ("balance_fen", I64, REQUIRED)]),
    20: ("BalanceInquiry", T2S, [("txn_seq", TXN, REQUIRED), ("card_no", CARD, REQUIRED)]),
    21: ("BalanceResult", S2T, [("txn_seq", TXN, REQUIRED), ("code", CODE, REQUIRED),
                                ("balance_fen", I64, REQUIRED), ("main_fen", I64, REQUIRED),
                                ("subsidy_fen", I64, REQUIRED)]),
    31: ("Error", BOTH, [("code", CODE, REQUIRED), ("txn_seq", _int(0, U32), 0),
                         ("detail", ("str", 0, 200), "")]),
}
TAGS = {name: tag for tag, (name, _, _) in MESSAGES.items()}
REQUESTS = {"Purchase", "Reversal", "BalanceInquiry", "Heartbeat"}


def encode_body(msg: dict[str, Any]) -> bytes:
    """A message dict {"type": name, field: value, ...} -> MessagePack array body."""
    tag = TAGS[msg["type"]]
    _, _, fields = MESSAGES[tag]
    values: list[Any] = [tag]
    for name, _kind, default in fields:
        value = msg.get(name, default)
        assert value is not REQUIRED, f"missing {name}"
        values.append(value)
    return msgspec.msgpack.encode(values)


def decode_body(body: bytes) -> dict[str, Any]:
    """Section 4: strict decode of one body into a message dict; raises ProtocolError."""
    try:
        value = msgspec.msgpack.decode(body)  # rejects trailing bytes
    except msgspec.DecodeError as exc:
        raise ProtocolError(MALFORMED_FRAME, str(exc)) from None
    if not isinstance(value, list) or not value or type(value[0]) is not int:
        raise ProtocolError(MALFORMED_FRAME, "not an array starting with an integer")
    tag = value[0]
    if tag not in MESSAGES:
        raise ProtocolError(UNKNOWN_MESSAGE, f"tag {tag}")
    name, _direction, fields = MESSAGES[tag]
    msg: dict[str, Any] = {"type": name}
    for i, (fname, (kind, lo, hi), default) in enumerate(fields, start=1):
        if i >= len(value):
            if default is REQUIRED:
                raise ProtocolError(INVALID_FIELD, f"$.{fname}")
            msg[fname] = default
            continue
        v = value[i]
        ok = (
            (kind == "int" and type(v) is int and lo <= v <= hi)
            or (kind == "bin" and type(v) is bytes and lo <= len(v) <= hi)
            or (kind == "str" and type(v) is str and lo <= len(v) <= hi)
        )
        if not ok:
            raise ProtocolError(INVALID_FIELD, f"$.{fname}")
        msg[fname] = v
    # Trailing fields this receiver does not know are ignored (section 4.2 rule 3).
    return msg


def mac_of(key: bytes, covered: bytes) -> bytes:
    return hmac.new(key, covered, hashlib.sha256).digest()[:MAC_BYTES]


def build_frame(msg: dict[str, Any], sequence: int, key: bytes | None) -> bytes:
    """Section 3 + 5: a whole frame, MAC'd when a key is given."""
    body = encode_body(msg)
    flags = FLAG_MAC if key is not None else 0
    covered = struct.pack(">BBI", 1, flags, sequence) + body
    trailer = mac_of(key, covered) if key is not None else b""
    return struct.pack(">I", len(covered) + len(trailer)) + covered + trailer


def check_length(prefix: bytes) -> int:
    (length,) = struct.unpack(">I", prefix)
    if length > FRAME_LENGTH_MAX:
        raise ProtocolError(FRAME_TOO_LARGE)
    if length < FRAME_LENGTH_MIN:
        raise ProtocolError(MALFORMED_FRAME, "length below 6")
    return length


def split_frame(frame: bytes) -> tuple[int, int, int, bytes, bytes | None]:
    """Header checks of section 3 on one whole frame -> (version, flags, sequence, body, mac)."""
    length = check_length(frame[:4])
    if len(frame) != 4 + length:
        raise ProtocolError(MALFORMED_FRAME, "truncated")
    _, version, flags, sequence = HEADER.unpack_from(frame)
    if version != 1:
        raise ProtocolError(UNSUPPORTED_VERSION)
    if flags & ~FLAG_MAC:
        raise ProtocolError(MALFORMED_FRAME, "flags")
    if flags & FLAG_MAC:
        if length < 6 + MAC_BYTES:
            raise ProtocolError(MALFORMED_FRAME, "no room for a MAC")
        return version, flags, sequence, frame[10:-MAC_BYTES], frame[-MAC_BYTES:]
    return version, flags, sequence, frame[10:], None


def verify_mac(frame: bytes, key: bytes) -> None:
    if not hmac.compare_digest(mac_of(key, frame[4:-MAC_BYTES]), frame[-MAC_BYTES:]):
        raise ProtocolError(BAD_MAC)


# --- section 5: keys ----------------------------------------------------------------------------
def hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    return hmac.new(salt, ikm, hashlib.sha256).digest()


def hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def terminal_key(master: bytes, terminal_id: int, key_version: int = 1) -> bytes:
    prk = hkdf_extract(b"onecard/ocp/v1/terminal-key", master)
    info = b"terminal" + struct.pack(">II", terminal_id, key_version)
    return hkdf_expand(prk, info, KEY_BYTES)


def session_keys(key: bytes, terminal_nonce: bytes, switch_nonce: bytes) -> tuple[bytes, bytes]:
    prk = hkdf_extract(terminal_nonce + switch_nonce, key)
    return (hkdf_expand(prk, b"onecard/ocp/v1 mac t2s", KEY_BYTES),
            hkdf_expand(prk, b"onecard/ocp/v1 mac s2t", KEY_BYTES))


# --- a receiver in the switch's seat, used only to check the spec's invalid-frame vectors -------
def switch_receive(frame: bytes, *, k_t2s: bytes | None, expected_seq: int, ready: bool) -> dict:
    """Apply sections 3, 4, 5, 7 and 10 in the switch's seat; return the message or raise."""
    check_length(frame[:4])
    _version, _flags, sequence, body, mac = split_frame(frame)
    if k_t2s is not None:
        if mac is None:
            raise ProtocolError(BAD_MAC, "plain frame in session")
        verify_mac(frame, k_t2s)
    if sequence != expected_seq:
        raise ProtocolError(SEQUENCE_ERROR)
    msg = decode_body(body)
    direction = MESSAGES[TAGS[msg["type"]]][1]
    if direction == S2T:
        raise ProtocolError(UNEXPECTED_MESSAGE)
    if not ready and msg["type"] in REQUESTS:
        raise ProtocolError(NOT_SIGNED_ON)
    return msg


# --- the terminal ---------------------------------------------------------------------------
class Closed(Exception):
    """The switch closed the stream between frames (a normal close)."""


class Terminal:
    def __init__(self, host: str, port: int, terminal_id: int, key: bytes) -> None:
        self.sock = socket.create_connection((host, port), timeout=10)
        self.terminal_id = terminal_id
        self.key = key
        self.send_seq = 0
        self.recv_seq = 0
        self.k_t2s: bytes | None = None
        self.k_s2t: bytes | None = None
        self.buf = b""
        self.last_frame = b""

    def close(self) -> None:
        self.sock.close()

    # framing
    def frame(self, msg: dict[str, Any], *, plain: bool = False) -> bytes:
        assert self.send_seq <= U32
        frame = build_frame(msg, self.send_seq, None if plain else self.k_t2s)
        self.send_seq += 1
        return frame

    def send(self, *msgs: dict[str, Any]) -> None:
        """All messages in one write."""
        self.sock.sendall(b"".join(self.frame(m) for m in msgs))

    def _read(self, n: int) -> bytes | None:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_raw(self) -> bytes:
        prefix = self._read(4)
        if prefix is None:
            if self.buf:
                raise ProtocolError(MALFORMED_FRAME, "EOF inside a length prefix")
            raise Closed
        length = check_length(prefix)
        rest = self._read(length)
        if rest is None:
            raise ProtocolError(MALFORMED_FRAME, "EOF inside a frame")
        self.last_frame = prefix + rest
        return self.last_frame

    def recv(self) -> dict[str, Any]:
        """One verified, decoded message from the switch (after sign-on)."""
        frame = self.recv_raw()
        _v, _f, sequence, body, mac = split_frame(frame)
        assert self.k_s2t is not None
        if mac is None:
            raise ProtocolError(BAD_MAC, "plain frame in session")
        verify_mac(frame, self.k_s2t)
        if sequence != self.recv_seq:
            raise ProtocolError(SEQUENCE_ERROR, f"got {sequence}, want {self.recv_seq}")
        self.recv_seq += 1
        msg = decode_body(body)
        if MESSAGES[TAGS[msg["type"]]][1] == T2S:
            raise ProtocolError(UNEXPECTED_MESSAGE, msg["type"])
        return msg

    def recv_plain(self) -> dict[str, Any]:
        """A frame before session keys exist (section 3: must be plain)."""
        frame = self.recv_raw()
        _v, flags, sequence, body, _mac = split_frame(frame)
        assert flags == 0, "a refusal before sign-on must be plain"
        assert sequence == self.recv_seq
        self.recv_seq += 1
        return decode_body(body)

    def expect_eof(self) -> None:
        with pytest.raises(Closed):
            self.recv_raw()

    # section 6
    def sign_on(self, last_txn_seq: int = 0) -> dict[str, Any]:
        self.challenge()
        self.send({"type": "SignOnConfirm", "last_txn_seq": last_txn_seq, "terminal_kind": 1,
                   "firmware": "spec-pos-1.0"})
        result = self.recv()
        assert result["type"] == "SignOnResult", result
        return result

    def challenge(self) -> None:
        """Steps 1 and 2: SignOn, then the verified SignOnChallenge; the session keys set."""
        nonce = os.urandom(NONCE_BYTES)
        self.sock.sendall(self.frame(
            {"type": "SignOn", "terminal_id": self.terminal_id, "nonce": nonce,
             "protocol_version": 1}, plain=True))
        frame = self.recv_raw()
        _v, flags, sequence, body, mac = split_frame(frame)
        challenge = decode_body(body)  # decode first, to read the nonce
        if challenge["type"] == "Error":
            raise ProtocolError(challenge["code"], challenge["detail"])
        assert challenge["type"] == "SignOnChallenge", challenge
        assert flags == FLAG_MAC and mac is not None, "SignOnChallenge must carry a MAC"
        assert sequence == 0
        self.recv_seq = 1
        k_t2s, k_s2t = session_keys(self.key, nonce, challenge["nonce"])
        verify_mac(frame, k_s2t)  # proves the switch holds our key
        self.k_t2s, self.k_s2t = k_t2s, k_s2t

    def request(self, msg: dict[str, Any]) -> dict[str, Any]:
        self.send(msg)
        return self.recv()


# =============================================================================================
# 1. Appendix A vectors
# =============================================================================================
def spec_vectors() -> dict[str, dict[str, str]]:
    text = SPEC.read_text()
    vectors: dict[str, dict[str, str]] = {}
    for block in re.findall(r"```ocp-vector\n(.*?)```", text, re.S):
        fields: dict[str, str] = {}
        for line in block.strip().splitlines():
            key, _, value = line.partition(": ")
            fields[key] = fields.get(key, "") + value.strip() if key == "hex" else value.strip()
        vectors[fields["name"]] = fields
    return vectors


VECTORS = spec_vectors()
SESSION_VECTORS = sorted(n for n in VECTORS if n.startswith(
    ("session/", "refused/", "kind-refused/", "reuse/", "closing/")))
INVALID_VECTORS = sorted(n for n in VECTORS if n.startswith("invalid/"))


def vector_keys() -> dict[str, bytes]:
    kdf = VECTORS["kdf/session-keys"]
    k_t2s, k_s2t = session_keys(bytes.fromhex(kdf["terminal_key"]),
                                bytes.fromhex(kdf["terminal_nonce"]),
                                bytes.fromhex(kdf["switch_nonce"]))
    return {"k_t2s": k_t2s, "k_s2t": k_s2t}


def message_from_json(text: str) -> dict[str, Any]:
    msg = json.loads(text)
    _, _, fields = MESSAGES[TAGS[msg["type"]]]
    for name, (kind, _lo, _hi), _default in fields:
        if kind == "bin" and name in msg:
            msg[name] = bytes.fromhex(msg[name])
    return msg


def test_vectors_are_present() -> None:
    assert {"kdf/terminal-key", "kdf/session-keys"} <= VECTORS.keys()
    assert len(SESSION_VECTORS) == 25 and len(INVALID_VECTORS) == 18


def test_vector_terminal_key() -> None:
    v = VECTORS["kdf/terminal-key"]
    key = terminal_key(bytes.fromhex(v["master_secret"]), int(v["terminal_id"]),
                       int(v["key_version"]))
    assert key.hex() == v["terminal_key"]


def test_vector_session_keys() -> None:
    v = VECTORS["kdf/session-keys"]
    assert VECTORS["kdf/terminal-key"]["terminal_key"] == v["terminal_key"]
    keys = vector_keys()
    assert keys["k_t2s"].hex() == v["k_t2s"]
    assert keys["k_s2t"].hex() == v["k_s2t"]


@pytest.mark.parametrize("name", SESSION_VECTORS)
def test_vector_frame(name: str) -> None:
    v = VECTORS[name]
    key = None if v["key"] == "none" else vector_keys()[v["key"]]
    msg = message_from_json(v["message"])
    # JSON fields are in wire order (Appendix A); they must match section 4.1's table.
    _, direction, fields = MESSAGES[TAGS[msg["type"]]]
    assert list(msg)[1:] == [f[0] for f in fields]
    assert direction in (v["direction"], BOTH)
    expected = bytes.fromhex(v["hex"])
    # Encode: byte for byte.
    assert build_frame(msg, int(v["sequence"]), key) == expected
    # Decode with my own receiver: header, MAC, body.
    _ver, flags, sequence, body, mac = split_frame(expected)
    assert sequence == int(v["sequence"])
    assert (flags == FLAG_MAC) == (key is not None) == (mac is not None)
    if key is not None:
        verify_mac(expected, key)
        other = vector_keys()["k_s2t" if v["key"] == "k_t2s" else "k_t2s"]
        with pytest.raises(ProtocolError) as exc:  # reflected frames fail (section 5)
            verify_mac(expected, other)
        assert exc.value.code == BAD_MAC
    assert decode_body(body) == msg


@pytest.mark.parametrize("name", INVALID_VECTORS)
def test_vector_invalid_frame(name: str) -> None:
    v = VECTORS[name]
    code = int(v["code"].split()[0])
    fresh = v["context"] == "fresh"
    expected_seq = {"fresh": 0, "awaiting-confirm": 1, "session": 2}[v["context"]]
    with pytest.raises(ProtocolError) as exc:
        # A frame cut short by the end of the stream ("then: eof") fails as truncated.
        switch_receive(bytes.fromhex(v["hex"]), k_t2s=None if fresh else vector_keys()["k_t2s"],
                       expected_seq=expected_seq, ready=v["context"] == "session")
    assert exc.value.code == code
    if "path" in v:
        assert exc.value.detail == v["path"]


def test_decoder_defaults_and_unknown_trailing_fields() -> None:
    # Section 4.2 rule 3: fill missing trailing defaults, ignore unknown trailing fields.
    assert decode_body(msgspec.msgpack.encode([31, 97])) == {
        "type": "Error", "code": 97, "txn_seq": 0, "detail": ""}
    assert decode_body(msgspec.msgpack.encode([6, 5, "future"])) == {
        "type": "HeartbeatAck", "server_time_ms": 5}
    for bad in ([17, 1, 0, 0, 0, 0], [17, 1, True, 0, 0, 0, 0], [17, 1, 0, 0, 1.0, 0, 0]):
        with pytest.raises(ProtocolError) as exc:
            decode_body(msgspec.msgpack.encode(bad))
        assert exc.value.code == INVALID_FIELD


# =============================================================================================
# 2. Against the running switch
# =============================================================================================
def connect(site: Site, terminal_id: int = FREE_CANTEEN_TERMINAL,
            key: bytes | None = None) -> Terminal:
    assert site.switch is not None
    return Terminal(site.switch.host, site.switch.port, terminal_id,
                    key if key is not None else terminal_key(site.master, terminal_id, 1))


def signed_on(site: Site, last_txn_seq: int = 0, expect_last: int = 0) -> Terminal:
    t = connect(site)
    before = int(time.time() * 1000)
    result = t.sign_on(last_txn_seq)
    after = int(time.time() * 1000)
    assert result["code"] == APPROVED
    assert result["last_txn_seq"] == expect_last
    assert 1 <= result["heartbeat_interval_s"] <= 3600
    assert before - 5_000 <= result["server_time_ms"] <= after + 5_000
    return t


def purchase(txn_seq: int, card_no: int, amount: int) -> dict[str, Any]:
    return {"type": "Purchase", "txn_seq": txn_seq, "card_no": card_no, "amount_fen": amount,
            "terminal_time_ms": int(time.time() * 1000)}


def check_balances(r: dict[str, Any]) -> None:
    # Section 4.1 notes: balance_fen is main_fen + subsidy_fen after the request.
    assert r["balance_fen"] == r["main_fen"] + r["subsidy_fen"], r


def test_sign_on_purchase_repeat_inquiry_reversal_heartbeat_sign_off(site: Site) -> None:
    card = site.card()
    card_no, main, subsidy = card["card_no"], card["main"], card["subsidy"]
    start = main + subsidy
    t = signed_on(site)

    # Balance inquiry before anything.
    b = t.request({"type": "BalanceInquiry", "txn_seq": 1, "card_no": card_no})
    assert b == {"type": "BalanceResult", "txn_seq": 1, "code": APPROVED, "balance_fen": start,
                 "main_fen": main, "subsidy_fen": subsidy}

    # A purchase is approved with the right balance.
    p = purchase(2, card_no, 1234)
    r = t.request(p)
    assert r["type"] == "PurchaseResult"
    assert (r["txn_seq"], r["code"], r["amount_fen"]) == (2, APPROVED, 1234)
    assert r["balance_fen"] == start - 1234
    check_balances(r)
    assert 0 <= main - r["main_fen"] <= 1234 and 0 <= subsidy - r["subsidy_fen"] <= 1234
    body = t.last_frame[10:-MAC_BYTES]

    # The same purchase repeated gets the identical answer (section 7), not a second debit.
    assert t.request(p) == r
    assert t.last_frame[10:-MAC_BYTES] == body

    # Balance inquiry.
    b = t.request({"type": "BalanceInquiry", "txn_seq": 3, "card_no": card_no})
    assert b == {"type": "BalanceResult", "txn_seq": 3, "code": APPROVED,
                 "balance_fen": start - 1234, "main_fen": r["main_fen"],
                 "subsidy_fen": r["subsidy_fen"]}

    # A reversal restores the balance, main and subsidy as they were taken (section 9.2).
    rev = {"type": "Reversal", "txn_seq": 4, "original_txn_seq": 2, "card_no": card_no,
           "amount_fen": 1234}
    rr = t.request(rev)
    assert rr == {"type": "ReversalResult", "txn_seq": 4, "code": APPROVED, "amount_fen": 1234,
                  "balance_fen": start}
    assert t.request(rev) == rr  # a repeat of the reversal's own txn_seq
    b = t.request({"type": "BalanceInquiry", "txn_seq": 5, "card_no": card_no})
    assert (b["balance_fen"], b["main_fen"], b["subsidy_fen"]) == (start, main, subsidy)

    # Heartbeat.
    before = int(time.time() * 1000)
    ack = t.request({"type": "Heartbeat", "terminal_time_ms": before})
    assert ack["type"] == "HeartbeatAck"
    assert before - 5_000 <= ack["server_time_ms"] <= int(time.time() * 1000) + 5_000

    # SignOff: the switch answers every request it has already read, then closes (section 8).
    t.send(purchase(6, card_no, 50), {"type": "SignOff"})  # one write
    last = t.recv()
    assert (last["type"], last["txn_seq"], last["code"]) == ("PurchaseResult", 6, APPROVED)
    assert last["balance_fen"] == start - 50
    t.expect_eof()
    t.close()

    # A new session: the switch reports the highest journaled txn_seq (section 6 step 4).
    t = signed_on(site, last_txn_seq=6, expect_last=6)
    t.close()


def test_pipelined_purchases_in_one_write_are_matched_by_txn_seq(site: Site) -> None:
    card = site.card()
    start = card["main"] + card["subsidy"]
    t = signed_on(site)
    n, amount = 8, 111
    t.send(*[purchase(seq, card["card_no"], amount) for seq in range(1, n + 1)])
    answers = {}
    for _ in range(n):
        a = t.recv()  # recv() checks every MAC and that the sequence is exactly +1
        assert a["type"] == "PurchaseResult" and a["code"] == APPROVED, a
        assert a["txn_seq"] not in answers
        answers[a["txn_seq"]] = a
    assert sorted(answers) == list(range(1, n + 1))
    for a in answers.values():
        assert a["amount_fen"] == amount
        check_balances(a)
    # Whatever order they were applied in, the balances seen are start - k*amount, k = 1..n.
    assert sorted(a["balance_fen"] for a in answers.values()) == [
        start - k * amount for k in range(n, 0, -1)]
    b = t.request({"type": "BalanceInquiry", "txn_seq": n + 1, "card_no": card["card_no"]})
    assert b["balance_fen"] == start - n * amount
    t.close()


def test_bad_mac_gets_error_86_and_a_closed_connection(site: Site) -> None:
    card = site.card()
    start = card["main"] + card["subsidy"]
    t = signed_on(site)
    frame = bytearray(t.frame(purchase(1, card["card_no"], 100)))
    frame[-1] ^= 0x01
    t.sock.sendall(bytes(frame))
    # Section 6 step 4 / section 8: one Error, MAC'd (the switch holds verified keys), then close.
    err = t.recv()
    assert err["type"] == "Error" and err["code"] == BAD_MAC, err
    # Section 4.1: txn_seq "names the refused request, or is 0"; the switch cannot decode an
    # unauthenticated body (section 5: MAC is checked before decoding), so either is tolerated.
    assert err["txn_seq"] in (0, 1)
    assert len(err["detail"]) <= 200
    t.expect_eof()
    t.close()
    # Nothing was applied: a new session sees the untouched balance and no journaled txn_seq.
    t = signed_on(site, expect_last=0)
    b = t.request({"type": "BalanceInquiry", "txn_seq": 2, "card_no": card["card_no"]})
    assert b["balance_fen"] == start
    t.close()


def test_unknown_card_is_declined_14(site: Site) -> None:
    t = signed_on(site)
    p = purchase(1, 1, 500)  # seeded card numbers start at 8_800_000_010
    r = t.request(p)
    assert r["type"] == "PurchaseResult"
    assert (r["txn_seq"], r["code"]) == (1, UNKNOWN_CARD)
    check_balances(r)
    assert t.request(p) == r  # declines are journaled: a repeat gets the same decline
    t.close()
    # Section 4.1 notes: "PurchaseResult.amount_fen is the amount charged (0 when declined)".
    # (The switch echoes the requested amount here; this assertion keeps what the SPEC says.)
    assert r["amount_fen"] == 0, f"declined PurchaseResult.amount_fen should be 0: {r}"


def test_unknown_terminal_and_wrong_key_cannot_sign_on(site: Site) -> None:
    # Section 6 step 2: a plain Error(UNKNOWN_TERMINAL), then close.
    t = connect(site, terminal_id=999_999)
    t.sock.sendall(t.frame({"type": "SignOn", "terminal_id": 999_999,
                            "nonce": os.urandom(16), "protocol_version": 1}, plain=True))
    err = t.recv_plain()
    assert err["type"] == "Error" and err["code"] == UNKNOWN_TERMINAL
    assert err["txn_seq"] == 0
    t.expect_eof()
    t.close()
    # A terminal with the wrong key cannot verify the challenge and must not continue.
    t = connect(site, key=b"\x00" * 32)
    with pytest.raises(ProtocolError) as exc:
        t.sign_on()
    assert exc.value.code == BAD_MAC
    t.close()


def test_a_request_before_sign_on_is_not_signed_on(site: Site) -> None:
    t = connect(site)
    t.sock.sendall(t.frame(purchase(1, 1, 100), plain=True))
    err = t.recv_plain()
    assert (err["type"], err["code"]) == ("Error", NOT_SIGNED_ON)
    t.expect_eof()
    t.close()


def test_a_plain_frame_where_the_confirm_is_due_is_bad_mac(site: Site) -> None:
    # Section 3: once the switch sent the challenge it holds k_t2s; a plain frame other than
    # an Error is BAD_MAC, whatever it carries. The switch's Error is MAC'd (section 8).
    for msg in ({"type": "SignOnConfirm", "last_txn_seq": 0, "terminal_kind": 1,
                 "firmware": "plain"},
                {"type": "Heartbeat", "terminal_time_ms": 0},
                purchase(1, 1, 100)):
        t = connect(site)
        t.challenge()
        t.sock.sendall(t.frame(msg, plain=True))
        err = t.recv()
        assert (err["type"], err["code"], err["txn_seq"]) == ("Error", BAD_MAC, 0), msg
        t.expect_eof()
        t.close()


def test_a_heartbeat_before_sign_on_is_not_signed_on(site: Site) -> None:
    # Section 6: a Heartbeat is refused NOT_SIGNED_ON before the SignOnConfirm, like a request.
    t = connect(site)
    t.sock.sendall(t.frame({"type": "Heartbeat", "terminal_time_ms": 0}, plain=True))
    err = t.recv_plain()
    assert (err["type"], err["code"]) == ("Error", NOT_SIGNED_ON)
    t.expect_eof()
    t.close()


def test_a_second_session_replaces_the_first_and_a_reused_txn_seq_is_a_repeat(site: Site) -> None:
    card = site.card()
    old = signed_on(site)
    b = old.request({"type": "BalanceInquiry", "txn_seq": 1, "card_no": card["card_no"]})
    assert b["type"] == "BalanceResult" and b["code"] == APPROVED
    # Section 8: signing on again closes the older session with Error(SESSION_REPLACED).
    new = signed_on(site, last_txn_seq=1, expect_last=1)
    err = old.recv()
    assert (err["type"], err["code"], err["txn_seq"]) == ("Error", SESSION_REPLACED, 0)
    old.expect_eof()
    old.close()
    # Section 7: a Purchase reusing the inquiry's txn_seq is its repeat: the same answer.
    assert new.request(purchase(1, card["card_no"], 500)) == b
    new.close()
