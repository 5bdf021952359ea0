"""HKDF (RFC 5869 test cases 1-3, SHA-256), key derivation and the frame MAC."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols import ocp

RFC5869 = [
    (  # Test Case 1: basic test case with SHA-256
        "0b" * 22,
        "000102030405060708090a0b0c",
        "f0f1f2f3f4f5f6f7f8f9",
        42,
        "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5",
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
    ),
    (  # Test Case 2: longer inputs and outputs
        bytes(range(0x00, 0x50)).hex(),
        bytes(range(0x60, 0xB0)).hex(),
        bytes(range(0xB0, 0x100)).hex(),
        82,
        "06a6b88c5853361a06104c9ceb35b45cef760014904671014a193f40c15fc244",
        "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c"
        "59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71"
        "cc30c58179ec3e87c14c01d5c1f3434f1d87",
    ),
    (  # Test Case 3: zero-length salt and info
        "0b" * 22,
        "",
        "",
        42,
        "19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04",
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8",
    ),
]


@pytest.mark.parametrize(("ikm", "salt", "info", "length", "prk", "okm"), RFC5869)
def test_hkdf_rfc5869(ikm: str, salt: str, info: str, length: int, prk: str, okm: str) -> None:
    got_prk = ocp.hkdf_extract(bytes.fromhex(salt), bytes.fromhex(ikm))
    assert got_prk.hex() == prk
    assert ocp.hkdf_expand(got_prk, bytes.fromhex(info), length).hex() == okm


def test_hkdf_expand_length_limits() -> None:
    with pytest.raises(ValueError):
        ocp.hkdf_expand(bytes(32), b"", 0)
    with pytest.raises(ValueError):
        ocp.hkdf_expand(bytes(32), b"", 255 * 32 + 1)
    assert len(ocp.hkdf_expand(bytes(32), b"", 255 * 32)) == 255 * 32


def test_terminal_key_is_hkdf_of_the_documented_inputs() -> None:
    master = bytes(range(32))
    info = b"terminal" + (1001).to_bytes(4, "big") + (1).to_bytes(4, "big")
    prk = ocp.hkdf_extract(b"onecard/ocp/v1/terminal-key", master)
    expected = ocp.hkdf_expand(prk, info, 32)
    assert ocp.derive_terminal_key(master, 1001, 1) == expected
    assert ocp.derive_terminal_key(master, 1001, 2) != expected
    assert ocp.derive_terminal_key(master, 1002, 1) != expected
    with pytest.raises(ValueError):
        ocp.derive_terminal_key(master, 2**32, 1)


def test_session_keys_follow_the_spec() -> None:
    key, tn, sn = bytes(range(32)), bytes(16), bytes(range(16))
    prk = ocp.hkdf_extract(tn + sn, key)
    k_t2s, k_s2t = ocp.derive_session_keys(key, tn, sn)
    assert k_t2s == ocp.hkdf_expand(prk, b"onecard/ocp/v1 mac t2s", 32)
    assert k_s2t == ocp.hkdf_expand(prk, b"onecard/ocp/v1 mac s2t", 32)
    assert k_t2s != k_s2t


@given(st.binary(min_size=0, max_size=100), st.binary(max_size=300))
def test_mac_key_is_truncated_hmac_sha256(key: bytes, data: bytes) -> None:
    expected = hmac.new(key, data, hashlib.sha256).digest()[:16]
    mac = ocp.MacKey(key)
    assert mac.mac(data) == expected
    assert mac.mac(memoryview(data)) == expected
    assert mac.mac(data) == expected, "the keyed state is reusable"
