"""The suite's own checks fail where they would otherwise pass by skipping: the layer check when
its checker is missing in CI, the stateful ledger test when the extension is not built."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests import test_layers

ROOT = Path(__file__).resolve().parent.parent


def test_a_missing_layer_checker_fails_in_ci_and_skips_elsewhere(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(test_layers, "CHECK", tmp_path / "layers.py")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="missing in CI"):
        test_layers.test_every_import_runs_the_allowed_way()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        test_layers.test_every_import_runs_the_allowed_way()


def test_the_stateful_ledger_test_fails_without_the_extension() -> None:
    # ledger_ext as if it had not been built: importing it raises ImportError.
    code = (
        "import sys; sys.modules['ledger_ext'] = None; import pytest; sys.exit(pytest.main("
        "['--collect-only', '-q', '--noconftest', '-p', 'no:cacheprovider',"
        " 'tests/test_ledger_stateful.py']))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == pytest.ExitCode.INTERRUPTED, out.stdout + out.stderr
    assert "ledger_ext" in out.stdout and "skipped" not in out.stdout
