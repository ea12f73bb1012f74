"""`songpop train` and `songpop predict`: one training or scoring job, what the trainer and the predictor
do on their events."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from .jobs import EXIT_CONFIG, console, fail, rich_progress, run_job, settings_of


def train(
    horizon: Annotated[list[int] | None, typer.Option(help="26 or 52 (repeatable; default both)")] = None,
) -> None:
    """Train, backtest and register the models; announce the ones that became active."""
    from services.trainer.main import train_once
    from services.trainer.settings import TrainerSettings

    horizons = horizon or [26, 52]
    if any(h not in (26, 52) for h in horizons):
        fail("--horizon must be 26 or 52", EXIT_CONFIG)
    settings = settings_of(TrainerSettings)
    bar, update = rich_progress()

    async def job() -> list[Any]:
        with bar:
            return await train_once(settings, horizons=horizons, progress=update)

    run_job(job, settings, print_activated)


def print_activated(activated: list[Any]) -> int:
    """Each model version that became active, or why none did."""
    if not activated:
        console.print("no model became active (not enough new data, or no improvement over the active ones)")
    for version in activated:
        console.print(
            f"active: {version.version} ({version.signal}, {version.horizon_weeks} weeks) {version.metrics}"
        )
    return 0


def predict() -> None:
    """Score the current trending songs with the active models, store and publish the forecasts."""
    from services.predictor.main import predict_once
    from services.predictor.settings import PredictorSettings

    settings = settings_of(PredictorSettings)
    run_job(lambda: predict_once(settings), settings, print_predictions)


def print_predictions(predictions: list[Any]) -> int:
    """How many predictions of how many songs were stored."""
    songs = len({p.track_id for p in predictions})
    console.print(f"{len(predictions)} prediction(s) of {songs} song(s) stored")
    return 0
