"""REST response and request models of the predictor (documented in its OpenAPI)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.events import TrackPrediction


class HistoryPoint(BaseModel):
    week: dt.date
    popularity: int | None = None
    trending: bool = False
    region: str | None = None
    rank: int | None = None
    streams: int | None = None


class TrackInfo(BaseModel):
    id: str
    name: str
    artists: str
    album_id: str | None = None
    release_date: dt.date | None = None
    demo: bool = False


class TrackForecast(BaseModel):
    """A song's current values, 26- and 52-week forecasts with 80% intervals, per signal, and history."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "track": {"id": "4uLU6hMCjMI75M1A2tKUQC", "name": "Song", "artists": "Artist", "demo": False},
                "predictions": [
                    {
                        "track_id": "4uLU6hMCjMI75M1A2tKUQC",
                        "week": "2026-11-23",
                        "signal": "popularity",
                        "current": 71,
                        "forecasts": [
                            {
                                "horizon_weeks": 26,
                                "value": 64.2,
                                "lower": 55.0,
                                "upper": 71.8,
                                "model_version": "popularity-26w-1",
                            },
                            {
                                "horizon_weeks": 52,
                                "value": 58.9,
                                "lower": 45.1,
                                "upper": 69.0,
                                "model_version": "popularity-52w-1",
                            },
                        ],
                    }
                ],
                "history": [{"week": "2026-11-16", "popularity": 70, "trending": True}],
                "data_refreshed_at": "2026-11-23T06:00:00Z",
                "cold_start": False,
            }
        }
    )

    track: TrackInfo
    predictions: list[TrackPrediction] = Field(
        description="one per signal: popularity index and/or chart streams"
    )
    history: list[HistoryPoint]
    data_refreshed_at: dt.datetime | None = Field(description="when this song's data was last written")
    cold_start: bool = Field(description="true when no model trained on this database covers the song yet")


class ForecastBatchRequest(BaseModel):
    track_ids: list[str] = Field(
        min_length=1, description="ids, spotify:track: URIs or open.spotify.com URLs"
    )


class ForecastBatchResponse(BaseModel):
    forecasts: list[TrackForecast]
    not_found: list[str] = Field(default_factory=list, description="valid ids Spotify does not know")


class TrendingResponse(BaseModel):
    week: dt.date | None
    count: int
    demo: bool = Field(description="true when the data comes from the Spotify emulator, not Spotify")
    predictions: list[TrackPrediction]


class ModelOut(BaseModel):
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
    metrics: dict[str, Any]
    baselines: dict[str, Any]


class StatusResponse(BaseModel):
    spotify: dict[str, Any] = Field(description="access mode, what it lacks, emulator or real")
    last_ingest: dict[str, Any] | None
    last_training: dict[str, Any] | None
    trainer: dict[str, Any] | None
    versions: dict[str, str]


class Problem(BaseModel):
    detail: str
