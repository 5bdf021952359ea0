"""protocols/qr.py: phone QR codes, as properties (hypothesis) and a fuzzed decoder.

The format and its vectors are docs/protocol.md section 4.4 and Appendix A.5
(tests/test_ocp_vectors.py checks those); the switch's use of it is tests/test_qr_switch.py.
"""

from __future__ import annotations

import base64
import contextlib
import re

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from protocols import limits, qr

KEY = qr.derive_qr_key(bytes(range(32)))
OTHER_KEY = qr.derive_qr_key(bytes(range(1, 33)))
SKEW = limits.QR_CLOCK_SKEW_SECONDS
U32 = 2**32 - 1

cards = st.integers(1, limits.CARD_NO_MAX)
nonces = st.binary(min_size=limits.QR_NONCE_BYTES, max_size=limits.QR_NONCE_BYTES)


@st.composite
def tokens(draw: st.DrawFn) -> qr.QrToken:
    lifetime = draw(st.integers(1, limits.QR_LIFETIME_SECONDS_MAX))
    issued = draw(st.integers(0, U32 - lifetime))
    return qr.QrToken(draw(cards), issued, issued + lifetime, draw(nonces))


def text_of(t: qr.QrToken, key: bytes = KEY) -> str:
    return qr.issue(key, t.card_no, t.expires_s, t.nonce, issued_s=t.issued_s)


PROPS = settings(max_examples=300, deadline=None)


@PROPS
@given(tokens(), st.data())
def test_a_token_verifies_to_its_fields_throughout_its_validity(t: qr.QrToken,
                                                                data: st.DataObject) -> None:
    text = text_of(t)
    assert len(text) == qr.TEXT_CHARS == 58
    assert re.fullmatch(r"OC[A-Z2-7]{56}", text), "QR alphanumeric alphabet only"
    now = data.draw(st.integers(t.issued_s - SKEW, t.expires_s + SKEW))
    assert qr.verify(KEY, text, now) == t
    assert qr.authenticate(KEY, text) == qr.parse(text) == t


@PROPS
@given(tokens(), st.data())
def test_outside_its_validity_a_token_is_expired(t: qr.QrToken, data: st.DataObject) -> None:
    text = text_of(t)
    now = data.draw(st.one_of(st.integers(-(2**40), t.issued_s - SKEW - 1),
                              st.integers(t.expires_s + SKEW + 1, 2**40)))
    with pytest.raises(qr.QrExpired):
        qr.verify(KEY, text, now)
    assert qr.authenticate(KEY, text) == t  # the MAC is fine: only the clock refuses it
    assert qr.forget_after(t) == t.expires_s + SKEW


@PROPS
@given(tokens())
def test_another_sites_key_is_a_bad_mac(t: qr.QrToken) -> None:
    with pytest.raises(qr.QrBadMac):
        qr.authenticate(KEY, text_of(t, OTHER_KEY))
    assert qr.parse(text_of(t, OTHER_KEY)) == t  # readable without the key, never trusted


@PROPS
@given(tokens(), st.data())
def test_any_change_to_a_text_is_refused(t: qr.QrToken, data: st.DataObject) -> None:
    """One text per token (35 bytes are exactly 56 base32 characters, no spare bits), so
    changing, adding or removing any character fails the format or the MAC."""
    text = text_of(t)
    i = data.draw(st.integers(0, len(text) - 1))
    how = data.draw(st.sampled_from(["replace", "insert", "delete"]))
    char = data.draw(st.characters(codec="utf-8"))
    if how == "replace":
        assume(char != text[i])
        changed = text[:i] + char + text[i + 1:]
    elif how == "insert":
        changed = text[:i] + char + text[i:]
    else:
        changed = text[:i] + text[i + 1:]
    with pytest.raises((qr.QrMalformed, qr.QrBadMac)):
        qr.authenticate(KEY, changed)


@PROPS
@given(tokens(), st.integers(0, qr.TOKEN_BYTES - 1), st.integers(1, 255))
def test_any_flipped_bit_of_the_token_is_refused(t: qr.QrToken, i: int, x: int) -> None:
    raw = bytearray(base64.b32decode(text_of(t)[2:]))
    raw[i] ^= x
    with pytest.raises((qr.QrMalformed, qr.QrBadMac)):
        qr.authenticate(KEY, "OC" + base64.b32encode(bytes(raw)).decode())


def test_issue_refuses_what_the_format_cannot_hold() -> None:
    nonce = bytes(8)
    ok = {"card_no": 1, "expires_s": 160, "nonce": nonce, "issued_s": 100}
    qr.issue(KEY, **ok)  # type: ignore[arg-type]
    for change in ({"card_no": 0}, {"card_no": 2**63}, {"expires_s": 100},
                   {"expires_s": 100 + limits.QR_LIFETIME_SECONDS_MAX + 1},
                   {"issued_s": -1}, {"issued_s": U32, "expires_s": U32 + 1},
                   {"nonce": bytes(7)}, {"nonce": bytes(9)}):
        with pytest.raises(ValueError):
            qr.issue(KEY, **{**ok, **change})  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        qr.issue(KEY[:16], **ok)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        qr.derive_qr_key(bytes(31))
    # The QR key is its own, not the master secret, and stable.
    assert bytes(range(32)) != KEY and len(KEY) == 32
    assert qr.derive_qr_key(bytes(range(32))) == KEY


def test_malformed_texts_say_why() -> None:
    good = text_of(qr.QrToken(42, 1000, 1060, bytes(8)))
    cases = {
        "": "not a OneCard",
        "X" * (limits.QR_CHARS_MAX + 1): "longer than",
        good[2:]: "not a OneCard",
        good.lower(): "not a OneCard",
        "OC" + good[2:].lower(): "not base32",
        good + "=" * 8: "not base32",
        good[:-8]: "bytes, not",
        "OC": "not base32",
        "OCAAAAAAAA": "version 0",
    }
    for text, why in cases.items():
        with pytest.raises(qr.QrMalformed, match=why):
            qr.authenticate(KEY, text)
    for not_text in (None, b"OC", 7, ["OC"]):
        with pytest.raises(qr.QrMalformed):
            qr.authenticate(KEY, not_text)  # type: ignore[arg-type]


def test_a_signed_token_with_impossible_fields_is_malformed() -> None:
    """Fields are checked after the MAC: an issuer bug, not a forgery."""
    import hmac

    def signed(card_no: int, issued: int, expires: int) -> str:
        body = bytes([1]) + card_no.to_bytes(8, "big") + issued.to_bytes(4, "big") \
            + expires.to_bytes(4, "big") + bytes(8)
        mac = hmac.digest(KEY, body, "sha256")[: limits.QR_MAC_BYTES]
        return "OC" + base64.b32encode(body + mac).decode()

    for card_no, issued, expires in ((0, 1, 2), (2**63, 1, 2), (1, 5, 5), (1, 6, 5),
                                     (1, 0, limits.QR_LIFETIME_SECONDS_MAX + 1)):
        with pytest.raises(qr.QrMalformed):
            qr.authenticate(KEY, signed(card_no, issued, expires))


FUZZ = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.one_of(
    st.text(max_size=200),
    st.from_regex(r"\AOC[A-Z2-7=]{0,80}\Z"),
    st.binary(max_size=60).map(lambda b: "OC" + base64.b32encode(b).decode().rstrip("=")),
    st.binary(min_size=1, max_size=60).map(
        lambda b: "OC" + base64.b32encode(b"\x01" + b).decode().rstrip("=")),
))
def test_the_decoder_only_ever_raises_qr_errors(text: str) -> None:
    for decode in (qr.parse, lambda t: qr.authenticate(KEY, t),
                   lambda t: qr.verify(KEY, t, 1_700_000_000)):
        with contextlib.suppress(qr.QrError):
            decode(text)


def test_a_huge_text_is_refused_before_it_is_decoded() -> None:
    with pytest.raises(qr.QrMalformed, match="longer than"):
        qr.authenticate(KEY, "OC" + "A" * 10_000_000)
