"""MQTT topics and the versioned event envelopes published on them, defined once for every service.

Every message is a JSON envelope `{schema_version, event_id, occurred_at, producer, data}`; the same
pydantic models are used to publish and to parse.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from shared.signals import Signal

SCHEMA_VERSION = 1
EVENT_ID_MAX = 36  # a UUID's length, and the width of the columns that store event ids
QOS = 1
MAX_LOGGED_PAYLOAD = 200  # characters of a malformed payload worth logging
PERSISTENCE = "persistence"  # the model_version of a forecast made without a usable model (cold_start)


@dataclass(frozen=True)
class Topics:
    """Topic names under one root (`songpop/v1` in production, a unique prefix in tests)."""

    root: str = "songpop/v1"

    @property
    def db_updated(self) -> str:
        return f"{self.root}/events/db-updated"

    @property
    def model_updated(self) -> str:
        return f"{self.root}/events/model-updated"

    @property
    def predictions_latest(self) -> str:
        return f"{self.root}/predictions/latest"

    def prediction_for(self, track_id: str) -> str:
        return f"{self.root}/predictions/tracks/{track_id}"

    def status(self, service: str) -> str:
        return f"{self.root}/status/{service}"

    def alert(self, kind: str) -> str:
        return f"{self.root}/alerts/{kind}"


class IngestKind(StrEnum):
    """What an ingest run did: first fill from chart files, weekly update, imported history, demo history."""

    INIT = "init"
    UPDATE = "update"
    HISTORY = "history"
    DEMO = "demo"


class DbUpdated(BaseModel):
    """An ingest run committed new snapshots."""

    run_id: int
    kind: IngestKind
    week: dt.date = Field(description="Monday of the ISO week the run wrote")
    tracks: int = Field(ge=0, description="tracks written")
    snapshots: int = Field(ge=0, description="snapshot rows written")
    chart_entries: int = Field(default=0, ge=0)
    access_mode: str | None = None
    demo: bool = False


class ModelUpdated(BaseModel):
    """A new model version became active."""

    version: str
    signal: Signal
    horizon_weeks: int
    kind: str
    metrics: dict[str, Any] = Field(default_factory=dict)
    baselines: dict[str, Any] = Field(default_factory=dict)
    cold_start: bool = False
    demo: bool = False


class Forecast(BaseModel):
    """One horizon's forecast of one signal for one song."""

    horizon_weeks: int
    value: float
    lower: float | None = Field(default=None, description="80% interval, lower bound")
    upper: float | None = Field(default=None, description="80% interval, upper bound")
    p_chart: float | None = Field(default=None, description="streams: probability still charting")
    model_version: str
    cold_start: bool = False
    method: str | None = Field(
        default=None,
        description="what serves this forecast, chosen on its model version's latest backtest folds: model, "
        "shrunk <weight> toward <baseline>, model floored at naive (its point never below today's chart "
        "floor), or a baseline (naive: the chart floor or drift, persistence, original); persistence where "
        "no model is usable (model_version persistence)",
    )
    skill: float | None = Field(
        default=None,
        description="skill of that method against the best naive answer on those folds: 1 - error / naive "
        "error (negative: it loses; null: not measured)",
    )


class TrackPrediction(BaseModel):
    """A song's latest forecasts (one per horizon) for one signal."""

    track_id: str
    name: str = ""
    artists: str = ""
    week: dt.date
    signal: Signal
    region: str = Field(
        default="",
        description="streams: the chart, its region (`global`, `it`) or that region's daily chart "
        "(`it-daily`, streams on the weekly scale: the day's times 7); popularity: empty",
    )
    rank: int | None = None
    current: float | None = None
    forecasts: list[Forecast]
    demo: bool = False


class PredictionsLatest(BaseModel):
    """All current predictions of the trending songs."""

    week: dt.date
    count: int
    predictions: list[TrackPrediction]


class ServiceStatus(BaseModel):
    """A service's connection state; `offline` is also its MQTT last will."""

    service: str
    state: Literal["online", "offline"]


class ForecastAlert(BaseModel):
    """A forecast crossed a threshold or moved by more than a set amount since last week."""

    track_id: str
    name: str = ""
    signal: str
    horizon_weeks: int
    reason: Literal["threshold", "moved"]
    value: float
    previous: float | None = None
    threshold: float | None = None


@dataclass(frozen=True)
class Channel:
    """One documented topic: its address under the topic root, its payload model and delivery."""

    key: str
    address: str  # under the root; `{name}` marks a parameter
    data: type[BaseModel]
    retained: bool
    producers: tuple[str, ...]
    summary: str
    parameters: tuple[tuple[str, str], ...] = ()  # (name, description)
    enums: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (parameter name, its only values)


SERVICES = ("ingestor", "predictor", "trainer", "dashboard")
ALERT_REASONS = ("threshold", "moved")

# Every topic songpop publishes (QoS 1). shared.asyncapi generates asyncapi.yaml from this list.
CHANNELS: tuple[Channel, ...] = (
    Channel(
        "dbUpdated", "events/db-updated", DbUpdated, True, ("ingestor",),
        "An ingest run committed new snapshots; the latest stays retained.",
    ),
    Channel(
        "modelUpdated", "events/model-updated", ModelUpdated, True, ("trainer",),
        "A new model version is active; the latest stays retained.",
    ),
    Channel(
        "predictionsLatest", "predictions/latest", PredictionsLatest, True, ("predictor",),
        "All current predictions of the trending songs (retained): a new subscriber gets them at once.",
    ),
    Channel(
        "trackPrediction", "predictions/tracks/{track_id}", TrackPrediction, True, ("predictor",),
        "One song's latest prediction (retained), the popularity index where known, else chart streams.",
        (("track_id", "22-character Spotify track id"),),
    ),
    Channel(
        "serviceStatus", "status/{service}", ServiceStatus, True, SERVICES,
        "`online` when a service connects; `offline` as its last will when it goes away (retained).",
        (("service", "the service the status is of"),), (("service", SERVICES),),
    ),
    Channel(
        "forecastAlert", "alerts/{reason}", ForecastAlert, False, ("predictor",),
        "A forecast crossed the configured threshold or moved more than the configured amount since "
        "last week (not retained: an alert is news, not state).",
        (("reason", "why the alert fired"),), (("reason", ALERT_REASONS),),
    ),
)  # fmt: skip


D = TypeVar("D", bound=BaseModel)


class Envelope(BaseModel, Generic[D]):
    """The JSON wrapper of every songpop MQTT message."""

    model_config = ConfigDict(extra="ignore")

    schema_version: int = Field(
        default=SCHEMA_VERSION, description="version of the payload schema; consumers check it"
    )
    event_id: str = Field(
        default_factory=lambda: str(uuid.uuid4()),
        min_length=1,
        max_length=EVENT_ID_MAX,
        description="unique per event (a UUID); a redelivered message keeps it, so consumers drop duplicates "
        "by it",
    )
    occurred_at: dt.datetime = Field(
        default_factory=lambda: dt.datetime.now(dt.UTC), description="when the event happened (UTC)"
    )
    producer: str = Field(description="the service that published the message")
    version: int | None = Field(
        default=None,
        description="retained state only: increases with every new state a producer stages (its outbox "
        "sequence), so a consumer can tell an older retained state (e.g. a broker's restored save) from "
        "the one it holds; a republished state keeps its version",
    )
    data: D


def envelope(producer: str, data: D, *, event_id: str | None = None) -> Envelope[D]:
    """Wrap `data` in a new envelope from `producer`."""
    model: Any = Envelope[type(data)]  # type: ignore[misc]
    if event_id:
        return model(producer=producer, data=data, event_id=event_id)  # type: ignore[no-any-return]
    return model(producer=producer, data=data)  # type: ignore[no-any-return]


def parse(payload: bytes | str, data_model: type[D]) -> Envelope[D]:
    """Parse and validate a message; raises pydantic.ValidationError on anything malformed."""
    return Envelope[data_model].model_validate_json(payload)  # type: ignore[valid-type]


def preview(payload: bytes | str) -> str:
    """A short printable excerpt of a payload, for logging bad messages without flooding logs."""
    text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else payload
    return text[:MAX_LOGGED_PAYLOAD] + ("…" if len(text) > MAX_LOGGED_PAYLOAD else "")
