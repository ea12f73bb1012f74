"""The Chromium the browser tests and `make bench-e2e` drive: Debian's, never a downloaded build."""

from __future__ import annotations

import os
from pathlib import Path

CHROMIUM = Path(os.environ.get("SONGPOP_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
