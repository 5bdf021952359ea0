"""Every decoder that reads bytes from outside either decodes or raises its own error.

- OCP frames: coverage-guided with atheris (libFuzzer), bounded in runs, as a subprocess so a
  crash in C code shows up as a failed test rather than a dead test run. (Hypothesis fuzzing of
  the same decoder is in tests/test_ocp_fuzz.py.)
- Phone QR codes (the text a POS scans, passed on by the terminal): the same, with
  fuzz/fuzz_qr.py (hypothesis fuzzing of that decoder is in tests/test_qr.py).
- Ledger snapshots (read back from the database at start-up by C code): hypothesis feeds
  truncated, bit-flipped and random snapshots to Ledger.restore; only SnapshotError may come out.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ledger_ext

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_ocp_decoder_survives_coverage_guided_fuzzing() -> None:
    if importlib.util.find_spec("atheris") is None:
        if os.environ.get("CI"):
            pytest.fail("atheris is a test dependency and did not install")
        pytest.skip("atheris is not installed")
    out = subprocess.run(
        [sys.executable, str(ROOT / "fuzz" / "fuzz_ocp.py"), "-runs=30000", "-max_len=600",
         "-seed=1"],
        capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "Done 30000 runs" in out.stderr


@pytest.mark.slow
def test_qr_decoder_survives_coverage_guided_fuzzing() -> None:
    if importlib.util.find_spec("atheris") is None:
        if os.environ.get("CI"):
            pytest.fail("atheris is a test dependency and did not install")
        pytest.skip("atheris is not installed")
    out = subprocess.run(
        [sys.executable, str(ROOT / "fuzz" / "fuzz_qr.py"), "-runs=30000", "-max_len=200",
         "-seed=1"],
        capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "Done 30000 runs" in out.stderr


@pytest.mark.slow
def test_iso8583_decoder_survives_coverage_guided_fuzzing() -> None:
    """The bank link's decoder (fuzz/fuzz_iso8583.py); hypothesis fuzzing of the same decoder
    is in tests/test_iso8583_codec.py."""
    if importlib.util.find_spec("atheris") is None:
        if os.environ.get("CI"):
            pytest.fail("atheris is a test dependency and did not install")
        pytest.skip("atheris is not installed")
    out = subprocess.run(
        [sys.executable, str(ROOT / "fuzz" / "fuzz_iso8583.py"), "-runs=30000",
         "-max_len=1200", "-seed=1"],
        capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "Done 30000 runs" in out.stderr


def test_iso8583_harness_runs_without_atheris() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "fuzz" / "fuzz_iso8583.py"), "--random", "3000"],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]


def _ledger() -> ledger_ext.Ledger:
    ledger = ledger_ext.Ledger(64, 8)
    ledger.configure_tenant(1, 28800, [(660, 780)])
    ledger.configure_class(1, 0, 0, 0, 0, 0)
    ledger.open_merchant(1, 1, balance_fen=-5_000)
    ledger.open_merchant(2, 1)
    for a in range(1, 6):
        ledger.open_account(a, 1, 1, 0, 1_000, 0)
        ledger.bind_card(1000 + a, a)
    for seq in range(1, 30):
        ledger.purchase(7, seq, 1000 + seq % 5 + 1, 2, seq, 1_790_000_000 + seq)
    ledger.hold(8, 1, 1001, 2, 50, 1_790_100_000, 1_790_000_000)
    return ledger


SNAPSHOT = _ledger().snapshot()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cut=st.integers(0, len(SNAPSHOT)),
    flips=st.lists(st.tuples(st.integers(0, len(SNAPSHOT) - 1), st.integers(1, 255)),
                   max_size=4),
    tail=st.binary(max_size=64),
)
def test_restore_of_a_damaged_snapshot_only_raises_snapshot_error(
    cut: int, flips: list[tuple[int, int]], tail: bytes
) -> None:
    data = bytearray(SNAPSHOT[:cut])
    for i, x in flips:
        if i < len(data):
            data[i] ^= x
    data += tail
    target = _ledger()
    try:
        target.restore(bytes(data))
    except ledger_ext.SnapshotError:
        return
    # Accepted: then it must have been the intact snapshot.
    assert bytes(data) == SNAPSHOT


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_restore_of_random_bytes_only_raises_snapshot_error(data: bytes) -> None:
    with pytest.raises(ledger_ext.SnapshotError):
        _ledger().restore(data)
