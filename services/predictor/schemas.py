"""REST response and request models of the predictor (documented in its OpenAPI, with examples)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.events import TrackPrediction
from shared.ids import TRACK_REFERENCE_PATTERN
from shared.predictions import HistoryPoint

EXAMPLE_ID = "4uLU6hMCjMI75M1A2tKUQC"
EXAMPLE_PREDICTION: dict[str, Any] = {
    "track_id": EXAMPLE_ID,
    "name": "Song",
    "artists": "Artist",
    "week": "2026-11-23",
    "signal": "popularity",
    "region": "",
    "current": 71,
    "forecasts": [
        {
            "horizon_weeks": 26,
            "value": 64.2,
            "lower": 55.0,
            "upper": 71.8,
            "model_version": "popularity-26w-1",
            "cold_start": False,
            "method": "model",
            "skill": 0.12,
        },
        {
            "horizon_weeks": 52,
            "value": 58.9,
            "lower": 45.1,
            "upper": 69.0,
            "model_version": "popularity-52w-1",
            "cold_start": False,
            "method": "shrunk 0.5 toward drift",
            "skill": 0.04,
        },
    ],
    "demo": False,
}


class TrackInfo(BaseModel):
    id: str = Field(description="22-character Spotify track id")
    name: str
    artists: str
    album_id: str | None = None
    release_date: dt.date | None = None
    demo: bool = Field(default=False, description="true when the song comes from the Spotify emulator")


EXAMPLE_FORECAST: dict[str, Any] = {
    "track": {"id": EXAMPLE_ID, "name": "Song", "artists": "Artist", "demo": False},
    "predictions": [EXAMPLE_PREDICTION],
    "history": [
        {"week": "2026-11-16", "popularity": 70, "trending": True},
        {
            "week": "2026-11-23",
            "popularity": 71,
            "trending": True,
            "region": "global",
            "rank": 12,
            "streams": 9_412_000,
        },
    ],
    "data_refreshed_at": "2026-11-23T06:00:00Z",
    "source": "batch",
    "cold_start": False,
}


class TrackForecast(BaseModel):
    """A song's current values, 26- and 52-week forecasts with 80% intervals, per signal, and history."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_FORECAST]})

    track: TrackInfo
    predictions: list[TrackPrediction] = Field(
        description="one per signal (popularity index first, then chart streams per region); each holds the "
        "current value and the 26- and 52-week forecasts with their model versions"
    )
    history: list[HistoryPoint] = Field(description="weekly data, oldest first")
    data_refreshed_at: dt.datetime | None = Field(description="when this song's data was last written")
    source: Literal["batch", "on_demand"] = Field(
        description="batch: scored with this week's trending songs; on_demand: computed for this request"
    )
    cold_start: bool = Field(description="true when no model trained on this database covers the song yet")


class ForecastBatchRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"track_ids": [EXAMPLE_ID, f"spotify:track:{EXAMPLE_ID}"]}],
        }
    )

    track_ids: list[Annotated[str, Field(json_schema_extra={"pattern": TRACK_REFERENCE_PATTERN})]] = Field(
        min_length=1,
        description="at most 100: ids, spotify:track: URIs or open.spotify.com URLs (repeats are merged)",
    )


class ForecastBatchResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"forecasts": [EXAMPLE_FORECAST], "not_found": []}]}
    )

    forecasts: list[TrackForecast] = Field(description="in the order asked")
    not_found: list[str] = Field(default_factory=list, description="valid ids Spotify does not know")


class TrendingResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"week": "2026-11-23", "count": 1, "demo": False, "predictions": [EXAMPLE_PREDICTION]}
            ]
        }
    )

    week: dt.date | None = Field(description="anchor week of the forecasts; null before the first run")
    count: int
    demo: bool = Field(description="true when the data comes from the Spotify emulator, not Spotify")
    predictions: list[TrackPrediction]


class ModelOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "version": "popularity-26w-1",
                    "signal": "popularity",
                    "horizon_weeks": 26,
                    "kind": "gbm",
                    "active": True,
                    "cold_start": False,
                    "demo": False,
                    "created_at": "2026-11-23T07:00:00Z",
                    "train_start": "2024-01-01",
                    "train_end": "2026-05-25",
                    "n_train": 48210,
                    "method": "shrunk",
                    "skill": 0.12,
                    "metrics": {"mae": 6.1, "coverage80": 0.81},
                    "baselines": {
                        "learned": {"mae": 6.3},
                        "persistence": {"mae": 8.4},
                        "naive": {"mae": 6.9},
                    },
                }
            ]
        }
    )

    version: str
    signal: str
    horizon_weeks: int
    kind: str
    active: bool
    cold_start: bool
    demo: bool
    created_at: dt.datetime
    train_start: dt.date | None
    train_end: dt.date | None
    n_train: int
    method: str = Field(
        "model",
        description="what serves, chosen on the latest backtest folds: model (the learned model), shrunk "
        "(the model blended with the best naive answer), floored (streams: the model, its point never below "
        "today's chart floor), or a baseline (naive, persistence, drift, original)",
    )
    skill: float | None = Field(
        None, description="1 - error / error of the best naive answer on the backtest folds (< 0: it loses)"
    )
    metrics: dict[str, Any] = Field(
        description="backtest metrics of what serves; `serving` details the choice (`out_of_time` false: no "
        "backtest fold in time yet, chosen on held-out songs of the training weeks, so a naive answer serves)"
    )
    baselines: dict[str, Any] = Field(
        description="the same metrics of every other candidate: the learned model (learned) and the baselines"
    )
    refused: str | None = Field(
        None,
        description="an active model whose artifact the predictor refuses (altered, missing): why; its "
        "forecasts fall back to persistence, flagged cold_start",
    )


class StatusResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "spotify": {"mode": "development", "lacks": ["popularity"], "emulator": False},
                    "last_ingest": {"id": 7, "kind": "update", "status": "ok"},
                    "last_training": {"version": "popularity-26w-1", "active": True},
                    "trainer": {"next_run": "2026-11-30T07:00:00Z"},
                    "versions": {"songpop": "0.1.0"},
                }
            ]
        }
    )

    spotify: dict[str, Any] = Field(description="access mode, what it lacks, emulator or real")
    last_ingest: dict[str, Any] | None
    last_training: dict[str, Any] | None
    trainer: dict[str, Any] | None
    versions: dict[str, str]
    history_build: dict[str, Any] | None = Field(
        None,
        description="the demo history `songpop up` builds on an empty database: phase (simulating, "
        "training, done, interrupted), week, weeks, started_at",
    )


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"status": "ready", "database": "ok", "broker": "ok", "models": "ok"}]
        }
    )

    status: str
    database: str
    broker: str
    models: str = Field("ok", description="ok, or the active models whose artifact is refused")


class Problem(BaseModel):
    """An error: what was wrong, in words."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "detail": "'abc' is not a Spotify track id: expected 22 letters and digits, a "
                    "spotify:track:<id> URI or an https://open.spotify.com/track/<id> URL"
                }
            ]
        }
    )

    detail: str
    errors: list[dict[str, Any]] | None = Field(
        default=None, description="request validation: each problem's location, message and type"
    )
