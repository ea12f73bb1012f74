"""`songpop eval charts|popularity`: train on some files and score on others, with the dataset, feature
and model code the trainer uses."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand

from shared import logs

from .jobs import EXIT_FAILED, fail

eval_app = typer.Typer(help="Backtest the forecasting models on files (train on some, score on others).")


def spread_paths(args: list[str], flags: tuple[str, ...] = ("--train", "--test")) -> list[str]:
    """`--train A B --test C` -> `--train A --train B --test C`: a shell glob gives one flag many paths,
    while click's options take one value each (and repeat)."""
    spread: list[str] = []
    current: str | None = None
    for arg in args:
        if arg in flags:
            current = arg
        elif arg.startswith("-"):
            current = None
            spread.append(arg)
        elif current is not None:
            spread += [current, arg]
        else:
            spread.append(arg)
    return spread


class SpreadPathsCommand(TyperCommand):
    """A command whose --train/--test take one or more paths each (see spread_paths)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # typer vendors click's Context
        return super().parse_args(ctx, spread_paths(args))


def eval_paths(help_text: str) -> Any:
    return typer.Option(
        help=f"{help_text}: one or more files or folders", exists=True, metavar="PATH...", show_default=False
    )


TrainPaths = Annotated[list[Path], eval_paths("training data (the model learns from these)")]
TestPaths = Annotated[list[Path], eval_paths("test data (the forecasts are scored on these)")]
JsonFlag = Annotated[bool, typer.Option("--json", help="print one JSON object instead of a table")]


class Spacing(StrEnum):
    """How often the chart files of one side were downloaded (`monthly`: the first file of each month;
    `irregular`: a file every 1 to 6 weeks, at random)."""

    weekly = "weekly"
    monthly = "monthly"
    irregular = "irregular"


def spacing_option(side: str) -> Any:
    return typer.Option(
        help=f"keep every {side} chart file (weekly), only the first of each month (monthly), as someone "
        "who downloads a file a month has them, or one every 1 to 6 weeks at random (irregular: when they "
        "remember; the same files on every run)"
    )


def _eval(kind: str, train: list[Path], test: list[Path], as_json: bool, **spacings: Spacing) -> None:
    from shared.charts import ChartFormatError
    from shared.forecasting import NotEnoughData, format_eval_table, run_eval
    from shared.history import HistoryFormatError

    logs.setup("WARNING")
    try:
        options = {name: str(value) for name, value in spacings.items()}
        result = run_eval(kind, train, test, **options)  # type: ignore[arg-type]
    except (NotEnoughData, ChartFormatError, HistoryFormatError) as exc:
        fail(str(exc), EXIT_FAILED)
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
    else:
        sys.stdout.write(format_eval_table(result) + "\n")


@eval_app.command("charts", cls=SpreadPathsCommand)
def eval_charts(
    train: TrainPaths,
    test: TestPaths,
    as_json: JsonFlag = False,
    train_spacing: Annotated[Spacing, spacing_option("training")] = Spacing.weekly,
    test_spacing: Annotated[Spacing, spacing_option("test")] = Spacing.weekly,
) -> None:
    """Chart streams: censored MAE, AUC, 80% coverage and the top-20 survivors at 26 and 52 weeks of what
    would serve (the method the training files' rolling-origin folds choose), of what the weekly retrain
    would serve as the test period's outcomes arrive (`served_updating`), of the learned model and of every
    baseline; skill is 1 - error / the best naive answer's. Example: `--train charts/*_2019-*.csv
    --test charts/*_2020-*.csv --test-spacing monthly`."""
    _eval("charts", train, test, as_json, train_spacing=train_spacing, test_spacing=test_spacing)


@eval_app.command("popularity", cls=SpreadPathsCommand)
def eval_popularity(train: TrainPaths, test: TestPaths, as_json: JsonFlag = False) -> None:
    """Popularity index: MAE and 80% coverage at 182 and 365 days of what would serve (once chosen, and as
    the weekly retrain updates it), of the learned model, persistence and the naive drift; skill against
    the best naive answer. Example: `--train a.csv b.csv --test c.csv`."""
    _eval("popularity", train, test, as_json)
