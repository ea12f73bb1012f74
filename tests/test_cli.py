"""The `songpop` command: every command explains itself, and `eval` fails with a message, not a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.cli import app
from services.cli.evaluate import spread_paths

COMMANDS = [
    ["ingest", "init"], ["ingest", "update"], ["ingest", "history"], ["train"], ["predict"], ["serve"],
    ["up"], ["emulator"], ["eval", "charts"], ["eval", "popularity"], ["migrate"], ["health"],
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
    assert "no chart files" in result.output


def test_eval_paths_follow_their_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert spread_paths(["--train", "a", "b", "--test-spacing", "4", "--test", "c", "--json"]) == [
        "--train", "a", "--train", "b", "--test-spacing", "4", "--test", "c", "--json",
    ]  # fmt: skip
    a, b, c = (tmp_path / n for n in "abc")
    for p in (a, b, c):
        p.mkdir()
    seen: list[tuple[str, list[Path], list[Path], dict[str, str]]] = []

    def fake_eval(kind: str, train: list[Path], test: list[Path], **spacings: str) -> dict[str, object]:
        seen.append((kind, train, test, spacings))
        return {"26w": {}}

    monkeypatch.setattr("shared.forecasting.run_eval", fake_eval)
    args = [
        "eval",
        "charts",
        "--train",
        str(a),
        str(b),
        "--test",
        str(c),
        "--json",
        "--test-spacing",
        "monthly",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    spacings = {"train_spacing": "weekly", "test_spacing": "monthly"}
    assert seen == [("charts", [a, b], [c], spacings)] and result.stdout.strip() == '{"26w": {}}'
    bad = CliRunner().invoke(app, [*args[:-1], "fortnightly"])
    assert bad.exit_code == 2 and "fortnightly" in bad.output


@pytest.mark.parametrize("command", ["charts", "popularity"])
def test_eval_help_lists_its_options(command: str) -> None:
    result = CliRunner().invoke(app, ["eval", command, "--help"], env={"COLUMNS": "200"})
    assert all(option in result.output for option in ("--train", "--test", "--json"))


def test_eval_needs_both_sides(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["eval", "charts", "--train", str(tmp_path)])
    assert result.exit_code == 2
    assert "Missing option '--test'" in result.output


def test_version_and_plain_option_errors() -> None:
    version = CliRunner().invoke(app, ["--version"])
    assert version.exit_code == 0 and version.output.startswith("songpop ")
    wrong = CliRunner().invoke(app, ["emulator", "--mode", "extnded"])
    assert wrong.exit_code == 2
    assert "'extnded' is not one of development, extended" in wrong.output
    assert "Traceback" not in wrong.output and "Value error" not in wrong.output
