"""Forecasting: dataset builder, features, models, backtests, registry and the services' entry points.

Entry points: `train_and_register` (trainer), `score_from_store` (the predictor's batch, from a resident
`PanelStore`), `forecast_tracks` (on-demand answers), `run_eval` and `format_eval_table` (`songpop eval`).
"""

from shared.forecasting.evaluation import format_eval_table, run_eval
from shared.forecasting.panel import NotEnoughData
from shared.forecasting.registry import ArtifactError, TamperedArtifact
from shared.forecasting.scoring import ScoredBatch, forecast_tracks, score_from_store
from shared.forecasting.store import PanelStore
from shared.forecasting.training import train_and_register

__all__ = [
    "ArtifactError",
    "NotEnoughData",
    "PanelStore",
    "ScoredBatch",
    "TamperedArtifact",
    "forecast_tracks",
    "format_eval_table",
    "run_eval",
    "score_from_store",
    "train_and_register",
]
