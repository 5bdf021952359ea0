"""Regenerate the console's screenshots in docs/img/console/ (shown in docs/console.md and the
README): the browser journeys of the console's tests (TESTS), saving their screenshots there.

    PYTHONPATH=$PWD python docs/make_console_screenshots.py

Needs what the tests need: PostgreSQL on 127.0.0.1:5432, Redis on 127.0.0.1:6379, Debian's
Chromium at /usr/bin/chromium and Playwright (pip install -e '.[test]').
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "docs" / "img" / "console"
TESTS = ["tests/test_console.py", "tests/test_console_desk.py", "tests/test_console_office.py",
         "tests/test_console_reports.py"]


def main() -> int:
    SHOTS.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "ONECARD_CONSOLE_SHOTS": str(SHOTS), "CI": "true",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", *TESTS],
                          cwd=ROOT, env=env, check=False)
    if done.returncode == 0:
        print(f"screenshots in {SHOTS.relative_to(ROOT)}:")
        for path in sorted(SHOTS.glob("*.png")):
            print(f"  {path.name}")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
