"""A new user's first commands on the embedded defaults: in an empty folder with no SONGPOP_* set, the
installed `songpop` ingests chart files of either format and exits 0, though no broker runs (the events
wait in the outbox) and no emulator was started by hand (the command runs one in-process)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ingest_support import chart_entries, new_format, old_format, write

SONGPOP = Path(sys.executable).parent / "songpop"
OUTBOX_LINE = "event(s) wait in the outbox: the next `songpop up`, or any run that reaches a broker"


def chart_folder(folder: Path, fmt: str) -> Path:
    """Two weekly chart files of one format, named as the site of that format names them."""
    names = {
        "old": ["global_2024-01-05--2024-01-12.csv", "global_2024-01-12--2024-01-19.csv"],
        "new": ["regional-global-weekly-2024-01-11.csv", "regional-global-weekly-2024-01-18.csv"],
    }[fmt]
    for seed, name in enumerate(names):
        entries = chart_entries(50, seed=seed)
        write(folder / name, (old_format if fmt == "old" else new_format)(entries))
    return folder


def songpop(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SONGPOP_")}
    env["COLUMNS"] = "200"  # one line per message
    return subprocess.run(
        [str(SONGPOP), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=180, check=False
    )


@pytest.mark.parametrize("fmt", ["old", "new"])
def test_ingest_init_on_embedded_defaults_exits_0_twice(tmp_path: Path, fmt: str) -> None:
    charts = chart_folder(tmp_path / "charts", fmt)
    home = tmp_path / "empty"
    home.mkdir()
    first = songpop(["ingest", "init", "--charts", str(charts)], home)
    assert first.returncode == 0, first.stderr
    assert ": ok" in first.stderr and "Traceback" not in first.stderr
    assert OUTBOX_LINE in first.stderr  # said once, in one line
    assert first.stderr.count("wait in the outbox") == 1
    second = songpop(["ingest", "init", "--charts", str(charts)], home)
    assert second.returncode == 0, second.stderr
    assert ": ok" in second.stderr

    with sqlite3.connect(home / "var" / "songpop.db") as db:
        entries = db.execute("SELECT count(*) FROM chart_entry").fetchone()[0]
        files = db.execute("SELECT count(*) FROM chart_file").fetchone()[0]
        pending = db.execute("SELECT count(*) FROM outbox WHERE published_at IS NULL").fetchone()[0]
    assert (entries, files) == (100, 2)  # the data is committed, once
    assert pending >= 1  # and its db-updated waits for a broker
