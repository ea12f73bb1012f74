"""The dashboard's read side: typed views of trending songs, one song, the models and the system status.

Keyword-only query functions take their session explicitly; routes stay thin. The same `TrendingRow`
shape is built from the database (page render, resync) and from MQTT messages (live updates), so the
page has one way to draw a row.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from shared import predictions
from shared.events import Forecast, TrackPrediction
from shared.models import AppState, ChartEntry, IngestRun, ModelVersion, Prediction, Track
from shared.signals import Signal
from shared.weeks import add_weeks

HORIZONS = (26, 52)
SIGNALS = (Signal.POPULARITY, Signal.STREAMS)
RECENT_RUNS = 10
RECENT_MODELS = 30
LOWER_IS_BETTER = {"mae", "cmae", "rmse", "mse", "mape", "smape", "pinball", "crps"}
HIGHER_IS_BETTER = {"auc", "r2", "accuracy"}
COVERAGE_TARGETS = {"coverage80": 0.8}


class ForecastCell(BaseModel):
    """One horizon's forecast as the page shows it."""

    value: float
    lower: float | None = None
    upper: float | None = None
    p_chart: float | None = None
    model_version: str = ""
    cold_start: bool = False
    method: str | None = None  # what serves the forecast, and its skill against the best naive answer
    skill: float | None = None


class TrendingRow(BaseModel):
    """One song's line in the trending table (and one item of a live update)."""

    track_id: str
    name: str = ""
    artists: str = ""
    rank: int | None = None
    current: float | None = None
    signal: str
    region: str = ""
    week: dt.date
    demo: bool = False
    f26: ForecastCell | None = None
    f52: ForecastCell | None = None
    trend: list[float] = Field(default_factory=list, description="recent weekly values, oldest first")

    @property
    def cold_start(self) -> bool:
        return any(f is not None and f.cold_start for f in (self.f26, self.f52))


class SignalChoice(BaseModel):
    signal: str
    region: str


class TrendingView(BaseModel):
    """The trending table of one signal (and chart region) for the latest predicted week."""

    week: dt.date | None
    signal: str | None
    region: str = ""
    choices: list[SignalChoice] = Field(default_factory=list)
    rows: list[TrendingRow] = Field(default_factory=list)
    rank_source: str = "chart"  # "chart" (chart position) or "value" (ordered by current value)

    @property
    def demo(self) -> bool:
        return any(row.demo for row in self.rows)

    @property
    def all_cold_start(self) -> bool:
        """Every forecast shown is a cold start (no model trained on this database yet)."""
        return bool(self.rows) and all(row.cold_start for row in self.rows)


class TrackDetail(BaseModel):
    """One song: its history and forecasts for one signal."""

    track_id: str
    name: str
    artists: str
    demo: bool
    release_date: dt.date | None = None
    signal: str | None = None
    region: str = ""
    choices: list[SignalChoice] = Field(default_factory=list)
    week: dt.date | None = None
    current: float | None = None
    history: list[tuple[dt.date, float]] = Field(
        default_factory=list, description="(week, value) of the signal, oldest first"
    )
    forecasts: dict[int, ForecastCell] = Field(default_factory=dict)


class ComparisonRow(BaseModel):
    label: str
    is_model: bool
    values: dict[str, float]


class ModelCard(BaseModel):
    """A registered model with its backtest metrics next to its baselines."""

    version: str
    signal: str
    horizon_weeks: int
    kind: str
    created_at: dt.datetime
    train_start: dt.date | None = None
    train_end: dt.date | None = None
    n_train: int = 0
    active: bool = False
    cold_start: bool = False
    demo: bool = False
    metric_names: list[str] = Field(default_factory=list)
    comparison: list[ComparisonRow] = Field(default_factory=list)
    verdicts: dict[str, str] = Field(default_factory=dict, description="metric -> better/worse")
    details: dict[str, Any] = Field(default_factory=dict, description="non-numeric metrics")
    serving: dict[str, Any] = Field(default_factory=dict, description="the method that serves and its skill")


class RunView(BaseModel):
    id: int
    kind: str
    status: str
    started_at: dt.datetime
    finished_at: dt.datetime | None = None
    week: dt.date | None = None
    access_mode: str | None = None
    counts: dict[str, Any] = Field(default_factory=dict)
    errors: int = 0


class StatusView(BaseModel):
    """What the status page shows from the database."""

    spotify: dict[str, Any] = Field(default_factory=dict)
    trainer: dict[str, Any] = Field(default_factory=dict)
    other_state: dict[str, dict[str, Any]] = Field(default_factory=dict)
    runs: list[RunView] = Field(default_factory=list)
    tracks: int = 0
    demo_tracks: int = 0
    latest_prediction_week: dt.date | None = None
    active_models: list[str] = Field(default_factory=list)


# ---------------------------------------------------------------- conversions


def cell(forecast: Forecast) -> ForecastCell:
    """A table cell from a forecast (read from the database or published)."""
    return ForecastCell.model_validate(forecast, from_attributes=True)


def row_from_message(prediction: TrackPrediction) -> TrendingRow:
    """A live-update row from a published `TrackPrediction`."""
    cells = {f.horizon_weeks: cell(f) for f in prediction.forecasts}
    return TrendingRow(
        track_id=prediction.track_id,
        name=prediction.name,
        artists=prediction.artists,
        rank=prediction.rank,
        current=prediction.current,
        signal=prediction.signal,
        region=prediction.region,
        week=prediction.week,
        demo=prediction.demo,
        f26=cells.get(26),
        f52=cells.get(52),
    )


# ---------------------------------------------------------------- trending


def _pick(
    choices: Sequence[SignalChoice], signal: str | None, region: str | None, default_region: str
) -> SignalChoice | None:
    """The requested signal/region if predicted, else popularity, else the default chart region."""
    if not choices:
        return None

    def score(choice: SignalChoice) -> tuple[int, int, int, str]:
        return (
            0 if signal and choice.signal == signal else 1,
            0 if region is not None and choice.region == region else 1,
            (0 if choice.signal == Signal.POPULARITY else 1) if not signal else 0,
            "" if choice.region == default_region else choice.region or "~",
        )

    return min(choices, key=score)


async def signal_choices(
    *, session: AsyncSession, week: dt.date, track_id: str | None = None
) -> list[SignalChoice]:
    """The (signal, region) pairs predicted for `week` (optionally for one song)."""
    query = select(Prediction.signal, Prediction.region).where(Prediction.week == week).distinct()
    if track_id is not None:
        query = query.where(Prediction.track_id == track_id)
    pairs = (await session.exec(query)).all()
    return sorted((SignalChoice(signal=s, region=r) for s, r in pairs), key=lambda c: (c.signal, c.region))


async def trending(
    *,
    session: AsyncSession,
    signal: str | None = None,
    region: str | None = None,
    default_region: str = "global",
    limit: int = 200,
    trend_weeks: int = 26,
) -> TrendingView:
    """The latest week's predicted songs for one signal, ranked, with a short trend of each."""
    week = await predictions.latest_batch_week(session)
    if week is None:
        return TrendingView(week=None, signal=None)
    choices = await signal_choices(session=session, week=week)
    choice = _pick(choices, signal, region, default_region)
    assert choice is not None  # a week with predictions has at least one choice
    found = await predictions.stored_predictions(
        session, week=week, signal=choice.signal, region=choice.region, horizons=HORIZONS
    )
    rows = {p.track_id: row_from_message(p) for p in found}
    for row in rows.values():
        row.name = row.name or row.track_id
    chart_region = choice.region or default_region
    ranks = await _chart_ranks(session=session, week=week, region=chart_region, track_ids=list(rows))
    ordered, rank_source = _rank(rows.values(), ranks)
    shown = ordered[:limit]
    trends = await _trends(
        session=session,
        signal=choice.signal,
        region=chart_region,
        end=week,
        weeks=trend_weeks,
        track_ids=[r.track_id for r in shown],
    )
    for row in shown:
        row.trend = trends.get(row.track_id, [])
    return TrendingView(
        week=week,
        signal=choice.signal,
        region=choice.region,
        choices=choices,
        rows=shown,
        rank_source=rank_source,
    )


def _rank(rows: Iterable[TrendingRow], chart_ranks: dict[str, int]) -> tuple[list[TrendingRow], str]:
    """Order by chart position when the week has a chart, else by current value (highest first)."""
    items = list(rows)
    if chart_ranks:
        for row in items:
            row.rank = chart_ranks.get(row.track_id)
        items.sort(key=lambda r: (r.rank is None, r.rank or 0, -(r.current or 0.0), r.name))
        return items, "chart"
    items.sort(key=lambda r: (r.current is None, -(r.current or 0.0), r.name))
    for position, row in enumerate(items, start=1):
        row.rank = position
    return items, "value"


async def _chart_ranks(
    *, session: AsyncSession, week: dt.date, region: str, track_ids: Sequence[str]
) -> dict[str, int]:
    if not track_ids:
        return {}
    query = select(ChartEntry.track_id, ChartEntry.rank).where(
        ChartEntry.week == week, ChartEntry.region == region, col(ChartEntry.track_id).in_(track_ids)
    )
    return {track_id: rank for track_id, rank in (await session.exec(query)).all()}


async def _trends(
    *,
    session: AsyncSession,
    signal: str,
    region: str,
    end: dt.date,
    weeks: int,
    track_ids: Sequence[str],
) -> dict[str, list[float]]:
    """Each song's weekly values over the last `weeks` weeks up to `end`, oldest first."""
    if not track_ids:
        return {}
    start = add_weeks(end, -(weeks - 1))
    histories = await predictions.song_histories(session, track_ids, start=start, end=end)
    return {
        track_id: [value for _, value in predictions.series(points, signal, region)]
        for track_id, points in histories.items()
    }


# ---------------------------------------------------------------- one song


async def track_detail(
    *,
    session: AsyncSession,
    track_id: str,
    signal: str | None = None,
    region: str | None = None,
    default_region: str = "global",
) -> TrackDetail | None:
    """A song's history and latest forecasts, or None when the song is unknown."""
    track = await session.get(Track, track_id)
    latest = (
        await session.exec(select(func.max(Prediction.week)).where(Prediction.track_id == track_id))
    ).one()
    if track is None and latest is None:
        return None
    detail = TrackDetail(
        track_id=track_id,
        name=track.name if track else track_id,
        artists=track.artist_names if track else "",
        demo=bool(track and track.is_demo),
        release_date=track.release_date if track else None,
        week=latest,
    )
    choices = await signal_choices(session=session, week=latest, track_id=track_id) if latest else []
    choice = _pick(choices, signal, region, default_region)
    detail.choices = choices
    if choice is None:  # no forecast yet: show whatever history there is
        choice = SignalChoice(signal=signal or Signal.POPULARITY, region=region or "")
    detail.signal, detail.region = choice.signal, choice.region
    if latest is not None:
        found = await predictions.stored_predictions(
            session, week=latest, signal=choice.signal, region=choice.region, track_ids=[track_id]
        )
        if found:
            detail.forecasts = {f.horizon_weeks: cell(f) for f in found[0].forecasts}
            detail.current = found[0].current
    histories = await predictions.song_histories(session, [track_id])
    chart_region = choice.region or default_region
    detail.history = predictions.series(histories.get(track_id, []), choice.signal, chart_region)
    return detail


# ---------------------------------------------------------------- models


def _numeric(values: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def comparison_rows(metrics: dict[str, Any], baselines: dict[str, Any]) -> list[ComparisonRow]:
    """The model's numeric metrics and each baseline's, as rows of one table."""
    method = (
        metrics.get("serving", {}).get("method", "model")
        if isinstance(metrics.get("serving"), dict)
        else "model"
    )
    rows = [ComparisonRow(label=f"served: {method}", is_model=True, values=_numeric(metrics))]
    nested = {k: v for k, v in baselines.items() if isinstance(v, dict)}
    rows.extend(ComparisonRow(label=name, is_model=False, values=_numeric(v)) for name, v in nested.items())
    flat = _numeric({k: v for k, v in baselines.items() if k not in nested})
    if flat:
        rows.append(ComparisonRow(label="baselines", is_model=False, values=flat))
    return rows


def verdict(metric: str, model: float | None, baselines: list[float]) -> str:
    """'better' when the model beats every baseline on `metric`, 'worse' when it beats none, else ''."""
    if model is None or not baselines:
        return ""
    if metric in COVERAGE_TARGETS:
        target = COVERAGE_TARGETS[metric]
        wins = [abs(model - target) <= abs(b - target) for b in baselines]
    elif metric in LOWER_IS_BETTER or metric.endswith(("mae", "rmse", "error")):
        wins = [model <= b for b in baselines]
    elif metric in HIGHER_IS_BETTER:
        wins = [model >= b for b in baselines]
    else:
        return ""
    return "better" if all(wins) else "worse" if not any(wins) else ""


def model_card(model: ModelVersion) -> ModelCard:
    comparison = comparison_rows(model.metrics or {}, model.baselines or {})
    names: list[str] = []
    for row in comparison:
        names.extend(k for k in row.values if k not in names)
    details = {
        k: v for k, v in (model.metrics or {}).items() if k not in comparison[0].values and k != "serving"
    }
    mine, others = comparison[0].values, [row.values for row in comparison[1:]]
    verdicts = {name: verdict(name, mine.get(name), [o[name] for o in others if name in o]) for name in names}
    return ModelCard(
        version=model.version,
        signal=model.signal,
        horizon_weeks=model.horizon_weeks,
        kind=model.kind,
        created_at=model.created_at,
        train_start=model.train_start,
        train_end=model.train_end,
        n_train=model.n_train,
        active=model.active,
        cold_start=model.cold_start,
        demo=model.is_demo,
        metric_names=names,
        comparison=comparison,
        verdicts={k: v for k, v in verdicts.items() if v},
        details=details,
        serving=(model.metrics or {}).get("serving") or {},
    )


async def model_cards(*, session: AsyncSession, limit: int = RECENT_MODELS) -> list[ModelCard]:
    """Active models first (by signal and horizon), then the most recent others."""
    query = select(ModelVersion).order_by(
        col(ModelVersion.active).desc(), col(ModelVersion.created_at).desc(), col(ModelVersion.id).desc()
    )
    models = (await session.exec(query.limit(limit))).all()
    cards = [model_card(m) for m in models]
    # Stable sort: the inactive ones stay newest first.
    cards.sort(key=lambda c: (0, c.signal, c.horizon_weeks) if c.active else (1, "", 0))
    return cards


# ---------------------------------------------------------------- status


async def status_view(*, session: AsyncSession) -> StatusView:
    """Access mode, schedules, recent ingest runs and a few counts."""
    states = {s.key: dict(s.value or {}) for s in (await session.exec(select(AppState))).all()}
    runs = (await session.exec(select(IngestRun).order_by(col(IngestRun.id).desc()).limit(RECENT_RUNS))).all()
    tracks = (await session.exec(select(func.count()).select_from(Track))).one()
    demo_tracks = (
        await session.exec(select(func.count()).select_from(Track).where(col(Track.is_demo).is_(True)))
    ).one()
    active = (
        await session.exec(select(ModelVersion.version).where(col(ModelVersion.active).is_(True)))
    ).all()
    return StatusView(
        spotify=states.pop("spotify", {}),
        trainer=states.pop("trainer", {}),
        other_state=states,
        runs=[
            RunView(
                id=r.id or 0,
                kind=r.kind,
                status=r.status,
                started_at=r.started_at,
                finished_at=r.finished_at,
                week=r.week,
                access_mode=r.access_mode,
                counts=dict(r.counts or {}),
                errors=len(r.errors or []),
            )
            for r in runs
        ],
        tracks=int(tracks),
        demo_tracks=int(demo_tracks),
        latest_prediction_week=await predictions.latest_batch_week(session),
        active_models=sorted(active),
    )
