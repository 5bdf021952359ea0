"""Every ```ocp-vector block of docs/protocol.md, checked byte for byte against the code.

The vectors are frozen in the spec (docs/make_protocol_tables.py --print-vectors only prints
fresh ones for review), so a change to the wire format fails here until the spec changes too.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import msgspec
import msgspec.inspect as mi
import pytest

from protocols import ocp, qr
from tests.ocp_pair import drain

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"


def load_vectors() -> list[dict[str, str]]:
    vectors = []
    for block in re.findall(r"```ocp-vector\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S):
        fields: dict[str, str] = {}
        for line in block.strip().splitlines():
            key, _, value = line.partition(": ")
            fields[key] = fields.get(key, "") + value if key == "hex" else value
        vectors.append(fields)
    return vectors


VECTORS = load_vectors()
BY_NAME = {v["name"]: v for v in VECTORS}
KDF = BY_NAME["kdf/session-keys"]
ADMIN_KDF = BY_NAME["kdf/admin-session-keys"]
KEYS = {"k_t2s": bytes.fromhex(KDF["k_t2s"]), "k_s2t": bytes.fromhex(KDF["k_s2t"]), "none": None,
        "admin_k_t2s": bytes.fromhex(ADMIN_KDF["k_t2s"]),
        "admin_k_s2t": bytes.fromhex(ADMIN_KDF["k_s2t"])}
FRAMES = [v for v in VECTORS if v["name"].startswith(
    ("session/", "refused/", "admin-session/", "admin-refused/", "qr-session/", "kind-refused/",
     "reuse/", "closing/", "access/", "offline/", "kiosk/"))]
QR_CHECKS = [v for v in VECTORS if v["name"].startswith("qr-check/")]
INVALID = [v for v in VECTORS if v["name"].startswith(("invalid/", "admin-invalid/"))]


def message_of(text: str) -> ocp.Message:
    data = json.loads(text)
    cls = getattr(ocp, data.pop("type"))
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    assert list(data) == [f.name for f in info.fields], "fields in wire order"
    for f in info.fields:
        if isinstance(f.type, mi.BytesType):
            data[f.name] = bytes.fromhex(data[f.name])
    # Nested arrays (offline access lists) become their Structs through a MessagePack round
    # trip: an array-like Struct and a plain array encode alike.
    return msgspec.msgpack.decode(msgspec.msgpack.encode(cls(**data)), type=cls)


def test_vector_inventory() -> None:
    names = [v["name"] for v in VECTORS]
    assert len(names) == len(set(names))
    assert "kdf/terminal-key" in BY_NAME
    session_types = {json.loads(v["message"])["type"] for v in FRAMES}
    for required in (
        "SignOn", "SignOnChallenge", "SignOnConfirm", "SignOnResult", "Purchase",
        "PurchaseResult", "Reversal", "BalanceInquiry", "Heartbeat", "Error",
    ):
        assert required in session_types
    assert {v["direction"] for v in FRAMES} == {"t2s", "s2t"}
    assert len(INVALID) >= 5
    # Appendix A.4: every admin message, both ways, and the refusal of a non-admin terminal.
    admin = [json.loads(v["message"]) for v in FRAMES if v["name"].startswith("admin-")]
    assert {m["type"] for m in admin} >= {
        cls.__name__ for cls in ocp.MESSAGE_TYPES if cls.__struct_config__.tag >= 128}
    assert any(m["type"] == "Error" and m["code"] == ocp.ResponseCode.NOT_PERMITTED
               for m in admin)
    # Appendix A.6: a request refused for its kind, and every Error that ends a session.
    corner = [json.loads(v["message"]) for v in FRAMES
              if v["name"].startswith(("kind-refused/", "closing/"))]
    rc = ocp.ResponseCode
    assert {m["code"] for m in corner if m["type"] == "Error"} == {
        rc.NOT_PERMITTED, rc.SESSION_REPLACED, rc.IDLE_TIMEOUT, rc.SHUTTING_DOWN}


def test_access_vectors_cover_every_access_message() -> None:
    """Appendix A.7: every door access message, both ways, and the refusals of a till and of
    an unknown reader."""
    access = [json.loads(v["message"]) for v in FRAMES if v["name"].startswith("access/")]
    assert {m["type"] for m in access} >= {"AccessRequest", "AccessResult", "DoorEvent",
                                          "DoorEventAck", "DoorCommand", "DoorCommandAck"}
    rc = ocp.ResponseCode
    assert {m["code"] for m in access if m["type"] == "Error"} == {
        rc.NOT_PERMITTED, rc.UNKNOWN_READER, rc.UNKNOWN_MESSAGE}
    # An older door's refusal of a DoorCommand names the command_id in its txn_seq.
    unknown = [m for m in access if m["type"] == "Error" and m["code"] == rc.UNKNOWN_MESSAGE]
    commands = {m["command_id"] for m in access if m["type"] == "DoorCommand"}
    assert unknown and all(m["txn_seq"] not in commands for m in unknown)


def test_offline_vectors_cover_every_offline_message() -> None:
    """Appendix A.8: every offline message (tags 96-100), a stale version and a till's upload
    refused."""
    offline = [json.loads(v["message"]) for v in FRAMES if v["name"].startswith("offline/")]
    assert {m["type"] for m in offline} >= {
        cls.__name__ for cls in ocp.MESSAGE_TYPES if 96 <= cls.__struct_config__.tag <= 111}
    rc = ocp.ResponseCode
    assert {m["code"] for m in offline if m["type"] == "Error"} == {rc.SNAPSHOT_STALE,
                                                                    rc.NOT_PERMITTED}


def test_the_largest_offline_messages_fit_a_frame() -> None:
    """Every limit at its maximum, every number at its widest: still one frame."""
    from protocols import limits

    wide = ocp.AccessEntry(limits.CARD_NO_MAX, limits.TERMINAL_ID_MAX, limits.EPOCH_SECONDS_MAX,
                           limits.EPOCH_SECONDS_MAX, limits.CARD_NO_MAX)
    zone = ocp.OfflineTimeZone(limits.TERMINAL_ID_MAX, [ocp.TimeZoneInterval(7, 1439, 1440)]
                               * limits.INTERVALS_MAX)
    top = limits.ACCESS_LIST_VERSION_MAX
    record = ocp.OfflineRecord(limits.TXN_SEQ_MAX, limits.TIME_MS_MAX, 16, 1,
                               limits.CARD_NO_MAX, limits.CODE_MAX)
    for msg in (
        ocp.AccessListSnapshot(top, limits.ACCESS_LIST_PARTS_MAX - 1, limits.ACCESS_LIST_PARTS_MAX,
                               [wide] * limits.ACCESS_ENTRIES_PER_FRAME_MAX, -50_400, 2,
                               [100_000] * limits.HOLIDAYS_MAX, [zone] * limits.TIME_ZONES_MAX),
        ocp.AccessListDelta(top, top, [wide] * limits.ACCESS_ENTRIES_PER_FRAME_MAX,
                            [limits.CARD_NO_MAX] * limits.ACCESS_ENTRIES_PER_FRAME_MAX),
        ocp.OfflineUpload(limits.TXN_SEQ_MAX, top,
                          [record] * limits.OFFLINE_RECORDS_PER_UPLOAD_MAX),
    ):
        frame = ocp.encode_frame(msg, sequence=2**32 - 1, mac_key=bytes(32))
        assert len(frame) <= limits.FRAME_BYTES_MAX
        assert ocp.decode_frame(frame, mac_key=bytes(32)) == (2**32 - 1, msg)


def test_admin_session_keys_vector() -> None:
    key = ocp.derive_terminal_key(bytes.fromhex(ADMIN_KDF["master_secret"]),
                                  int(ADMIN_KDF["terminal_id"]), int(ADMIN_KDF["key_version"]))
    assert key.hex() == ADMIN_KDF["terminal_key"]
    k_t2s, k_s2t = ocp.derive_session_keys(key, bytes.fromhex(ADMIN_KDF["terminal_nonce"]),
                                           bytes.fromhex(ADMIN_KDF["switch_nonce"]))
    assert (k_t2s.hex(), k_s2t.hex()) == (ADMIN_KDF["k_t2s"], ADMIN_KDF["k_s2t"])


def test_terminal_key_vector() -> None:
    v = BY_NAME["kdf/terminal-key"]
    key = ocp.derive_terminal_key(
        bytes.fromhex(v["master_secret"]), int(v["terminal_id"]), int(v["key_version"])
    )
    assert key.hex() == v["terminal_key"]


def test_session_keys_vector() -> None:
    k_t2s, k_s2t = ocp.derive_session_keys(
        bytes.fromhex(KDF["terminal_key"]),
        bytes.fromhex(KDF["terminal_nonce"]),
        bytes.fromhex(KDF["switch_nonce"]),
    )
    assert (k_t2s.hex(), k_s2t.hex()) == (KDF["k_t2s"], KDF["k_s2t"])


@pytest.mark.parametrize("v", FRAMES, ids=[v["name"] for v in FRAMES])
def test_frame_vector(v: dict[str, str]) -> None:
    msg = message_of(v["message"])
    key = KEYS[v["key"]]
    frame = bytes.fromhex(v["hex"])
    assert ocp.encode_frame(msg, sequence=int(v["sequence"]), mac_key=key).hex() == v["hex"]
    assert ocp.decode_frame(frame, mac_key=key) == (int(v["sequence"]), msg)


@pytest.mark.parametrize(("prefix", "kdf"), [("session/", KDF), ("admin-session/", ADMIN_KDF)])
def test_session_vectors_are_what_connections_produce(prefix: str, kdf: dict[str, str]) -> None:
    """Driving real Connections with the vector keys and nonces yields exactly those frames."""
    key = bytes.fromhex(kdf["terminal_key"])
    t, s = ocp.Connection(ocp.Role.TERMINAL), ocp.Connection(ocp.Role.SWITCH)
    session = [v for v in FRAMES if v["name"].startswith(prefix)]
    assert session
    for v in session:
        msg = message_of(v["message"])
        if isinstance(msg, ocp.SignOn):
            data = t.start_sign_on(msg.terminal_id, key, msg.nonce)
        elif isinstance(msg, ocp.SignOnChallenge):
            data = s.accept_sign_on(key, msg.nonce)
        else:
            data = (t if v["direction"] == "t2s" else s).send(msg)
        assert data.hex() == v["hex"], v["name"]
        receiver = s if v["direction"] == "t2s" else t
        assert drain(receiver, data) == [msg]


def _vector_switch(context: str) -> ocp.Connection:
    """The switch of the session vectors in an A.3 context: "fresh", "awaiting-confirm" (right
    after it sent SignOnChallenge) or "session" (right after it sent SignOnResult)."""
    s = ocp.Connection(ocp.Role.SWITCH)
    if context == "fresh":
        return s
    last = ocp.SignOnChallenge if context == "awaiting-confirm" else ocp.SignOnResult
    key = bytes.fromhex(KDF["terminal_key"])
    for v in FRAMES:
        msg = message_of(v["message"])
        if isinstance(msg, ocp.SignOnChallenge):
            s.accept_sign_on(key, msg.nonce)
        elif v["direction"] == "t2s":
            assert drain(s, bytes.fromhex(v["hex"])) == [msg]
        else:
            s.send(msg)
        if isinstance(msg, last):
            break
    expected = {"awaiting-confirm": (ocp.State.AWAIT_CONFIRM, 1), "session": (ocp.State.READY, 2)}
    assert (s.state, s.receive_sequence) == expected[context]
    return s


def test_invalid_vectors_cover_every_context() -> None:
    assert {v["context"] for v in INVALID} == {"fresh", "awaiting-confirm", "session"}
    assert [v["name"] for v in INVALID if "then" in v] == ["invalid/eof-inside-frame"]


@pytest.mark.parametrize("v", INVALID, ids=[v["name"] for v in INVALID])
def test_invalid_frame_vector(v: dict[str, str]) -> None:
    conn = _vector_switch(v["context"])
    cls = getattr(ocp, v["error"])
    with pytest.raises(cls) as info:
        assert drain(conn, bytes.fromhex(v["hex"])) == []
        assert v.get("then") == "eof"
        drain(conn, b"")
    code = int(v["code"].split()[0])
    assert info.value.response_code == code
    assert ocp.ResponseCode(code).name == v["code"].split()[1]
    if "path" in v:
        assert info.value.path == v["path"]  # type: ignore[attr-defined]


# -- Appendix A.5: phone QR codes -------------------------------------------------------------


def test_qr_vector_inventory() -> None:
    assert {"qr/key", "qr/token"} <= BY_NAME.keys()
    assert {v["error"] for v in QR_CHECKS} == {"none", "QrExpired", "QrBadMac", "QrMalformed"}
    qr_frames = [json.loads(v["message"]) for v in FRAMES if v["name"].startswith("qr-")]
    assert {m["type"] for m in qr_frames} == {"QrPurchase", "PurchaseResult", "Error"}
    assert {m["code"] for m in qr_frames if m["type"] == "Error"} == {
        ocp.ResponseCode.QR_USED, ocp.ResponseCode.QR_INVALID}


def test_qr_key_and_token_vectors() -> None:
    key_v, token_v = BY_NAME["qr/key"], BY_NAME["qr/token"]
    key = qr.derive_qr_key(bytes.fromhex(key_v["master_secret"]))
    assert key.hex() == key_v["qr_key"] == token_v["qr_key"]
    text = qr.issue(key, int(token_v["card_no"]), int(token_v["expires_s"]),
                    bytes.fromhex(token_v["nonce"]), issued_s=int(token_v["issued_s"]))
    assert text == token_v["text"]
    assert base64.b32decode(text[2:]).hex() == token_v["hex"]
    assert qr.parse(text) == qr.QrToken(int(token_v["card_no"]), int(token_v["issued_s"]),
                                        int(token_v["expires_s"]),
                                        bytes.fromhex(token_v["nonce"]))


@pytest.mark.parametrize("v", QR_CHECKS, ids=[v["name"] for v in QR_CHECKS])
def test_qr_check_vector(v: dict[str, str]) -> None:
    key = bytes.fromhex(BY_NAME["qr/key"]["qr_key"])
    if v["error"] == "none":
        assert qr.verify(key, v["text"], int(v["now_s"])).card_no == int(v["card_no"])
    else:
        with pytest.raises(getattr(qr, v["error"])):
            qr.verify(key, v["text"], int(v["now_s"]))


# -- Appendix A.7: kiosk top-up ---------------------------------------------------------------


def test_kiosk_vectors() -> None:
    pin_key_v, block_v = BY_NAME["kdf/pin-key"], BY_NAME["pin/block"]
    k_pin = ocp.derive_pin_key(bytes.fromhex(pin_key_v["terminal_key"]),
                               bytes.fromhex(pin_key_v["terminal_nonce"]),
                               bytes.fromhex(pin_key_v["switch_nonce"]))
    assert k_pin.hex() == pin_key_v["k_pin"] == block_v["k_pin"]
    assert pin_key_v["terminal_key"] == KDF["terminal_key"]
    request = {f: int(block_v[f]) for f in ("terminal_id", "txn_seq", "card_no", "amount_fen")}
    block = ocp.seal_pin(k_pin, block_v["pin"], nonce=bytes.fromhex(block_v["nonce"]), **request)
    assert block.hex() == block_v["pin_block"]
    assert ocp.open_pin(k_pin, block, **request) == block_v["pin"]
    for field in request:  # bound to its request: any other field value does not open it
        with pytest.raises(ocp.PinBlockInvalid):
            ocp.open_pin(k_pin, block, **{**request, field: request[field] + 1})
    topups = [json.loads(v["message"]) for v in FRAMES if v["name"].startswith("kiosk/")]
    assert topups[0]["pin_block"] == block_v["pin_block"]
    assert {m["type"] for m in topups} == {"Topup", "TopupResult", "Error"}
    assert {m["outcome"] for m in topups if m["type"] == "TopupResult"} == {
        int(o) for o in ocp.TopupOutcome}


def test_a_kiosk_session_carries_its_pin_key() -> None:
    key = bytes.fromhex(KDF["terminal_key"])
    t, s = ocp.Connection(ocp.Role.TERMINAL), ocp.Connection(ocp.Role.SWITCH)
    challenge = drain(s, t.start_sign_on(1001, key, bytes.fromhex(KDF["terminal_nonce"])))
    assert challenge and t.pin_key == b""
    drain(t, s.accept_sign_on(key, bytes.fromhex(KDF["switch_nonce"])))
    assert t.pin_key == s.pin_key == bytes.fromhex(BY_NAME["kdf/pin-key"]["k_pin"])
