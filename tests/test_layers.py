"""Imports run one way (shared/design/architecture.md): the project's own check, run here."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHECK = ROOT.parent / "shared" / "checks" / "layers.py"


def test_every_import_runs_the_allowed_way() -> None:
    if not CHECK.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHECK} is missing in CI")
        pytest.skip("shared/checks/layers.py is not beside this clone")
    out = subprocess.run([sys.executable, str(CHECK), str(ROOT)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_protocols_and_ledger_import_nothing_of_ours() -> None:
    ours = ("switch", "admin_api", "terminals_sim", "loadtest", "onecard", "migrations")
    for package in ("protocols", "ledger_ext", "migrations"):
        for path in (ROOT / package).rglob("*.py*"):
            if path.suffix not in (".py", ".pyx", ".pxd", ".pxi"):
                continue
            text = path.read_text()
            for name in ours:
                if name == package:
                    continue
                assert f"from {name}" not in text and f"import {name}" not in text, (path, name)
