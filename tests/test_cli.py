"""The `songpop` command: every command explains itself, and `eval` fails with a message, not a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.cli import app, split_paths

COMMANDS = [
    ["ingest", "init"], ["ingest", "update"], ["ingest", "history"], ["train"], ["predict"], ["serve"],
    ["up"], ["emulator"], ["eval", "charts"], ["eval", "popularity"], ["migrate"],
]  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help(command: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_eval_on_unreadable_files_says_why(tmp_path: Path) -> None:
    bad = tmp_path / "history.csv"
    bad.write_text("nothing,useful\n1,2\n")
    result = CliRunner().invoke(app, ["eval", "popularity", "--train", str(bad), "--test", str(bad)])
    assert result.exit_code == 1
    assert "history.csv" in result.output and "Traceback" not in result.output


def test_eval_without_chart_files_says_so(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["eval", "charts", "--train", str(tmp_path), "--test", str(tmp_path)])
    assert result.exit_code == 1
    assert "no weekly chart files" in result.output


def test_eval_paths_follow_their_flag(tmp_path: Path) -> None:
    a, b, c = (tmp_path / n for n in "abc")
    for p in (a, b, c):
        p.mkdir()
    assert split_paths(["--train", str(a), str(b), "--test", str(c), "--json"]) == ([a, b], [c], True)


def test_eval_needs_both_sides(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["eval", "charts", "--train", str(tmp_path)])
    assert result.exit_code == 2
    assert "--test needs at least one path" in result.output
