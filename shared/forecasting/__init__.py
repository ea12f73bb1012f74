"""Forecasting: dataset builder, features, models, backtests, registry and the services' entry points.

Entry points: `train_and_register` (trainer), `forecast_tracks` (predictor), `run_eval` and
`format_eval_table` (`songpop eval`).
"""

from shared.forecasting.evaluation import format_eval_table, run_eval
from shared.forecasting.panel import NotEnoughData
from shared.forecasting.registry import ArtifactError, TamperedArtifact
from shared.forecasting.service import forecast_tracks, train_and_register

__all__ = [
    "ArtifactError",
    "NotEnoughData",
    "TamperedArtifact",
    "forecast_tracks",
    "format_eval_table",
    "run_eval",
    "train_and_register",
]
