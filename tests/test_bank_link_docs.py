"""docs/bank-link.md is normative: every ```bank-vector block is checked byte for byte against
protocols/iso8583, and its field, message and field-39 tables against the code's tables."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import msgspec
import pytest

from protocols import iso8583
from switch._banklink import FIELD39_RESPONSE_CODES

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "bank-link.md").read_text(encoding="utf-8")
NOW = dt.datetime(2026, 12, 2, 3, 4, 5, tzinfo=dt.UTC)
KEK = bytes(range(32))
MAC_KEY = bytes.fromhex("00112233445566778899aabbccddeeff000102030405060708090a0b0c0d0e0f")
TYPES = {cls.__name__: cls for cls in (
    iso8583.NetworkRequest, iso8583.NetworkResponse, iso8583.TopupRequest,
    iso8583.TopupResponse, iso8583.ReversalAdvice, iso8583.ReversalResponse)}


def _vectors() -> list[dict[str, str]]:
    out = []
    for block in re.findall(r"```bank-vector\n(.*?)```", DOC, re.S):
        fields: dict[str, str] = {}
        for line in block.strip().splitlines():
            key, _, value = line.partition(": ")
            fields[key] = fields.get(key, "") + value if key == "hex" else value
        out.append(fields)
    return out


VECTORS = _vectors()


def _keys() -> iso8583.MacKeys:
    keys = iso8583.MacKeys()
    keys.install(1, MAC_KEY)
    return keys


def test_there_are_vectors_for_every_mti() -> None:
    assert {v["mti"] for v in VECTORS} == set(iso8583.MESSAGE_FIELDS)


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v["name"])
def test_vector_byte_for_byte(vector: dict[str, str]) -> None:
    data = bytes.fromhex(vector["hex"])
    msg = msgspec.json.decode(vector["message"], type=TYPES[vector["type"]])
    assert iso8583.encode_frame(msg, now=NOW, keys=_keys()) == data
    conn = iso8583.Connection(_keys())
    conn.receive_data(data)
    assert conn.next_event() == msg
    assert conn.next_event() is iso8583.NEED_DATA
    assert iso8583.mti_of(msg) == vector["mti"] == data[2:6].decode()
    if vector["mti"] in iso8583.MAC_MTIS:  # one bit flipped anywhere MAC'd: refused
        damaged = bytearray(data)
        damaged[10] ^= 0x01
        with pytest.raises(iso8583.Iso8583RemoteError):
            iso8583.decode_message(bytes(damaged[2:]), _keys())


def test_key_wrap_and_cmac_known_answers() -> None:
    wrapped = bytes.fromhex("28c9f404c4b810f4cbccb35cfb87f8263f5786e2d80ed326cbc7f0e71a99f43b"
                            "fb988b9b7a02dd21")
    assert iso8583.wrap_key(KEK, MAC_KEY) == wrapped  # RFC 3394 section 4.6
    assert iso8583.unwrap_key(KEK, wrapped) == MAC_KEY
    with pytest.raises(iso8583.BadKey):
        iso8583.unwrap_key(bytes(32), wrapped)
    key = bytes.fromhex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4")
    assert iso8583.cmac(key, b"") == bytes.fromhex("028962f61b7bf89e")  # SP 800-38B D.3
    assert "028962f61b7bf89efc6b551f4667d983" in DOC and wrapped.hex() in DOC


def test_field_table_is_the_spec() -> None:
    for f in iso8583.FIELDS:
        row = f"| {f.number} | {f.name} | {f.format} | {f.length} | {f.max_len} |"
        assert row in DOC, row
    rows = re.findall(r"^\| (\d+) \| [a-z][^|]* \| (?:n|an|ans|b) \|", DOC, re.M)
    assert sorted(map(int, rows)) == sorted(iso8583.FIELD_BY_NUMBER)


def test_message_table_is_the_spec() -> None:
    mtis = list(iso8583.MESSAGE_FIELDS)
    assert "| field | " + " | ".join(mtis) + " |" in DOC
    for f in iso8583.FIELDS:
        marks = []
        for mti in mtis:
            required, optional = iso8583.MESSAGE_FIELDS[mti]
            marks.append("M" if f.number in required else "C" if f.number in optional else "")
        row = f"| {f.number} | " + " | ".join(marks) + " |"
        assert row.replace("  ", " ") in DOC.replace("  ", " "), row


def test_field39_table_is_the_spec() -> None:
    for info in iso8583.FIELD39_TABLE:
        ours = FIELD39_RESPONSE_CODES[info.code]
        row = f"| {info.code} | {info.outcome} | {info.meaning} | {ours.name} ({int(ours)}) |"
        assert row in DOC, row
    rows = re.findall(r"^\| ([0-9A-Z]{2}) \| (?:approved|declined) \|", DOC, re.M)
    assert rows == [info.code for info in iso8583.FIELD39_TABLE]


def test_limits_are_quoted() -> None:
    limits = iso8583.limits
    assert f"| {limits.FRAME_BYTES_MAX} bytes |" in DOC
    assert f"| {limits.MESSAGE_BYTES_MAX} bytes |" in DOC
    assert f"length header over {limits.MESSAGE_BYTES_MAX}" in DOC


def test_daily_file_layout_is_the_simulators() -> None:
    from terminals_sim.bank_host import DAILY_FILE_HEADER

    assert f"exactly: `{DAILY_FILE_HEADER}`" in DOC
