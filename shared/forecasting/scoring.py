"""Scoring: forecasts of songs with the active models, as columns (`ScoredBatch`) or `TrackPrediction`s.

Two entry points: `score_from_store` (the predictor's batch, from a resident `PanelStore`) and
`forecast_tracks` (on-demand answers, from only the rows the songs' features read).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import functools
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.config import Settings
from shared.events import PERSISTENCE, Forecast, TrackPrediction
from shared.forecasting.features import anchor_chart_features, anchor_popularity_features
from shared.forecasting.inference import compile_forecaster, forget_batches
from shared.forecasting.panel import ChartPanel, PopularityPanel, day_date, day_index, week_date, week_index
from shared.forecasting.queries import load_chart_panel, load_popularity_panel, scoped_panels, song_names
from shared.forecasting.registry import (
    LOADED_ARTIFACTS,
    ArtifactError,
    ForecastBundle,
    active_versions,
    load_version,
)
from shared.forecasting.store import PanelStore
from shared.models import ModelVersion
from shared.predictions import Serving, serving_of
from shared.rowcolumns import RowColumns, gathered, picked
from shared.signals import Signal
from shared.weeks import week_of

log = logging.getLogger(__name__)


def _load_active(
    versions: dict[tuple[str, int], ModelVersion], signal: str, horizon: int
) -> tuple[ModelVersion, ForecastBundle] | None:
    version = versions.get((signal, horizon))
    if version is None:
        return None
    try:
        bundle = load_version(version)  # verified against its sha256 at every call (cached by hash)
    except ArtifactError as exc:
        log.error(
            "model %s refused: %s; falling back to a flagged persistence forecast", version.version, exc
        )
        return None
    return version, _compiled_bundle(bundle)


_compiled: dict[
    int, tuple[ForecastBundle, ForecastBundle]
] = {}  # id(bundle) -> (bundle, compiled), oldest first


def _compiled_bundle(bundle: ForecastBundle) -> ForecastBundle:
    """The bundle with its forecaster's trees compiled (`inference.py`: the same forecasts, several times
    faster on a batch), once per loaded artifact."""
    key = id(bundle)
    if key not in _compiled or _compiled[key][0] is not bundle:
        fast = dataclasses.replace(bundle, forecaster=compile_forecaster(bundle.forecaster))
        _compiled[key] = (bundle, fast)
        while len(_compiled) > LOADED_ARTIFACTS:
            del _compiled[next(iter(_compiled))]
    return _compiled[key][1]


_FORECAST_FIELDS = frozenset(Forecast.model_fields)
_PREDICTION_FIELDS = frozenset(TrackPrediction.model_fields)


def _trusted(model: type[Any], fields: frozenset[str], values: dict[str, Any]) -> Any:
    """A pydantic object from values built here (already of the right types), without validation: batch
    scoring makes hundreds of thousands of them."""
    obj = object.__new__(model)
    object.__setattr__(obj, "__dict__", values)
    object.__setattr__(obj, "__pydantic_fields_set__", fields)
    object.__setattr__(obj, "__pydantic_extra__", None)
    object.__setattr__(obj, "__pydantic_private__", None)
    return obj


@dataclass
class HorizonColumns:
    """One horizon's forecasts of a block's songs, one entry per song; `value` is None where nothing can be
    said (no usable model and no current value)."""

    horizon: int
    value: list[float | None]
    lower: list[float | None]
    upper: list[float | None]
    p_chart: list[float | None]
    model_version: str
    cold_start: bool
    complete: bool  # every song has a forecast (a model answered)
    serving: Serving  # the method that serves the model version, and its skill


@dataclass
class SignalBlock:
    """One signal's scored songs as columns (the songs in the order the panels gave them)."""

    signal: Signal  # rows and messages carry its plain `.value`: a dict of atomic values only is not
    # tracked by the garbage collector, and 200,000 tracked ones made building the rows 2.6x slower
    week: dt.date
    tracks: list[str]
    current: list[float | None]
    regions: list[str]
    ranks: list[int | None]
    horizons: list[HorizonColumns]

    def kept(self) -> list[int]:
        """The rows with at least one forecast (the others make no prediction)."""
        if not self.horizons:
            return []
        if any(h.complete for h in self.horizons):
            return list(range(len(self.tracks)))
        return [i for i in range(len(self.tracks)) if any(h.value[i] is not None for h in self.horizons)]


@dataclass
class ScoredBatch:
    """A batch scoring's result as columns: the predictor's rows are built straight from them, and
    `TrackPrediction` objects only when asked for (building hundreds of thousands costs seconds)."""

    ids: list[str]
    blocks: list[SignalBlock]
    names: dict[str, tuple[str, str]]
    demo: bool

    @functools.cached_property
    def _ranked(self) -> tuple[np.ndarray, np.ndarray]:
        """The block (its number) and row of every prediction, in the order of `ids`, then by signal (as
        `_predict` sorts)."""
        order = {track: i for i, track in enumerate(self.ids)}
        signals = sorted({b.signal for b in self.blocks})
        numbers, rows, song_keys, signal_keys = [], [], [], []
        for number, block in enumerate(self.blocks):
            kept = block.kept()
            numbers.append(np.full(len(kept), number, np.int64))
            rows.append(np.asarray(kept, np.int64))
            song_keys.append(np.fromiter((order.get(block.tracks[i], 0) for i in kept), np.int64, len(kept)))
            signal_keys.append(np.full(len(kept), signals.index(block.signal), np.int64))
        if not rows:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        ranked = np.lexsort((np.concatenate(signal_keys), np.concatenate(song_keys)))  # stable, like sort
        return np.concatenate(numbers)[ranked], np.concatenate(rows)[ranked]

    @functools.cached_property
    def positions(self) -> list[tuple[SignalBlock, int]]:
        """(block, row) of every prediction, in the order of `ids`, then by signal (as `_predict` sorts)."""
        numbers, rows = self._ranked
        return [(self.blocks[b], i) for b, i in zip(numbers.tolist(), rows.tolist(), strict=True)]

    def __len__(self) -> int:
        return len(self.positions)

    def predictions(self) -> list[TrackPrediction]:
        """The `TrackPrediction` objects (what `forecast_tracks` returns)."""
        unnamed = ("", "")
        out = []
        for block, i in self.positions:
            track = block.tracks[i]
            name, artists = self.names.get(track, unnamed)
            forecasts = [
                _trusted(Forecast, _FORECAST_FIELDS, {
                    "horizon_weeks": h.horizon, "value": h.value[i], "lower": h.lower[i], "upper": h.upper[i],
                    "p_chart": h.p_chart[i], "model_version": h.model_version, "cold_start": h.cold_start,
                    "method": h.serving.method, "skill": h.serving.skill,
                })
                for h in block.horizons
                if h.value[i] is not None
            ]  # fmt: skip
            out.append(
                _trusted(TrackPrediction, _PREDICTION_FIELDS, {
                    "track_id": track, "name": name, "artists": artists, "week": block.week,
                    "signal": block.signal, "region": block.regions[i], "rank": block.ranks[i],
                    "current": block.current[i], "forecasts": forecasts, "demo": self.demo,
                })
            )  # fmt: skip
        return out

    def message_data(self, start: int = 0, stop: int | None = None) -> list[dict[str, Any]]:
        """`predictions()[start:stop]` as JSON-ready dicts (what `model_dump(mode="json")` gives each), built
        from the columns: the predictor's messages carry these, without a pydantic object per song."""
        unnamed = ("", "")
        out = []
        for block, i in self.positions[start:stop]:
            track = block.tracks[i]
            name, artists = self.names.get(track, unnamed)
            forecasts = [
                {"horizon_weeks": h.horizon, "value": h.value[i], "lower": h.lower[i], "upper": h.upper[i],
                 "p_chart": h.p_chart[i], "model_version": h.model_version, "cold_start": h.cold_start,
                 "method": h.serving.method, "skill": h.serving.skill}
                for h in block.horizons
                if h.value[i] is not None
            ]  # fmt: skip
            out.append({
                "track_id": track, "name": name, "artists": artists, "week": block.week.isoformat(),
                "signal": block.signal.value, "region": block.regions[i], "rank": block.ranks[i],
                "current": block.current[i], "forecasts": forecasts, "demo": self.demo,
            })  # fmt: skip
        return out

    def rows(self, created_at: dt.datetime) -> RowColumns:
        """The stored rows (`Prediction`), one per song, signal and horizon, as columns (no dict per row
        unless one is read: 2,000,000 of them took ~1 GB), in the order of the predictions, then of
        their horizons: the rows `shared.predictions.predictions_from_rows` reads back as `predictions()`
        (the song's name, rank and serving method live elsewhere: the song and the model version)."""
        numbers, rows = self._ranked
        widest = max((len(b.horizons) for b in self.blocks), default=0)
        known = np.zeros((len(numbers), widest), bool)  # prediction x horizon: a forecast is stored
        groups: list[HorizonColumns | None] = []  # (block, horizon) by `number * widest + horizon`
        for number, block in enumerate(self.blocks):
            here = numbers == number
            for j in range(widest):
                h = block.horizons[j] if j < len(block.horizons) else None
                groups.append(h)
                if h is not None:
                    stored = np.fromiter((v is not None for v in h.value), bool, len(h.value))
                    known[here, j] = stored[rows[here]]
        prediction, horizon = np.nonzero(known)  # row-major: by prediction, then horizon
        in_block, row = numbers[prediction], rows[prediction]
        group = in_block * widest + horizon
        blocks, nothing = self.blocks, list[Any]()

        def of_blocks(values: Callable[[SignalBlock], list[Any]]) -> list[Any]:
            return gathered([values(b) for b in blocks], in_block, row)

        def of_horizons(values: Callable[[HorizonColumns], list[Any]]) -> list[Any]:
            return gathered([nothing if h is None else values(h) for h in groups], group, row)

        def per_horizon(value: Callable[[HorizonColumns], Any]) -> list[Any]:
            return picked([None if h is None else value(h) for h in groups], group)

        return RowColumns({
            "track_id": of_blocks(lambda b: b.tracks),
            "week": picked([b.week for b in blocks], in_block),
            "signal": picked([b.signal.value for b in blocks], in_block),
            "region": of_blocks(lambda b: b.regions),
            "horizon_weeks": per_horizon(lambda h: h.horizon),
            "current": of_blocks(lambda b: b.current),
            "value": of_horizons(lambda h: h.value),
            "lower": of_horizons(lambda h: h.lower),
            "upper": of_horizons(lambda h: h.upper),
            "p_chart": of_horizons(lambda h: h.p_chart),
            "model_version": per_horizon(lambda h: h.model_version),
            "cold_start": per_horizon(lambda h: h.cold_start),
            "created_at": [created_at] * len(row),
        })  # fmt: skip


def _horizon_columns(
    horizon: int,
    pred: dict[str, np.ndarray] | None,
    current: list[float | None],
    version: ModelVersion | None,
    cold: bool,
    *,
    to_level: Any = None,
) -> HorizonColumns:
    """One horizon's forecasts as columns; plain lists, no per-row pandas. `version` None (no usable
    model): persistence, flagged cold start."""
    n = len(current)
    if pred is None or version is None:
        nothing: list[float | None] = [None] * n
        persistence = serving_of(PERSISTENCE, None)
        return HorizonColumns(
            horizon, list(current), nothing, nothing, nothing, PERSISTENCE, True, False, persistence
        )
    convert = to_level or (lambda a: a)
    value, lower, upper = (convert(pred[k]).tolist() for k in ("value", "lower", "upper"))
    p_chart = pred["p_chart"].tolist() if "p_chart" in pred else [None] * n
    serving = serving_of(version.version, version.metrics)
    return HorizonColumns(horizon, value, lower, upper, p_chart, version.version, cold, True, serving)


def _predicted(bundle: ForecastBundle, features: pd.DataFrame) -> dict[str, np.ndarray]:
    """The forecaster's forecasts of the rows of `features`, its compiled models then forgetting the batch."""
    try:
        return bundle.forecaster.predict(features)
    finally:
        forget_batches(bundle.forecaster)


@contextmanager
def _timed(timings: dict[str, float] | None, part: str) -> Iterator[None]:
    """Add the seconds spent in the block to `timings[part]` (when timings are asked for)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        if timings is not None:
            timings[part] = timings.get(part, 0.0) + time.perf_counter() - start


def _streams_predictions(
    panel: ChartPanel,
    week: int,
    track_ids: set[str],
    models: dict[int, tuple[ModelVersion, ForecastBundle] | None],
    preferred_region: str,
    names: dict[str, tuple[str, str]],
    timings: dict[str, float] | None = None,
) -> SignalBlock | None:
    entries = panel.entries
    now = entries[(entries["week"] == week) & entries["track"].isin(track_ids)]
    if now.empty:
        return None
    # one region per song: the preferred one when the song charts there, else its best-ranked chart
    now = now.assign(pref=(now["region"] != preferred_region).astype(int)).sort_values(
        ["track", "pref", "rank"]
    )
    chosen = now.drop_duplicates("track")
    streams = chosen["streams"].to_numpy(float)
    current = [None if np.isnan(s) else s for s in streams.tolist()]
    columns = []
    features: dict[tuple[str, ...], pd.DataFrame] = {}  # per model region list (the same for most)
    for horizon, loaded in models.items():
        pred, version, cold = None, None, True
        if loaded is not None:
            version, bundle = loaded
            regions = tuple(bundle.forecaster.regions)
            with _timed(timings, "features"):
                if regions not in features:
                    features[regions] = anchor_chart_features(panel, list(regions), chosen.index)
            with _timed(timings, "inference"):
                pred = _predicted(bundle, features[regions])
            cold = bundle.cold_start
        columns.append(_horizon_columns(horizon, pred, current, version, cold, to_level=np.exp))
    for track, name in zip(chosen["track"], chosen["name"], strict=True):
        names.setdefault(track, (str(name or ""), ""))
    return SignalBlock(
        Signal.STREAMS, week_date(week), chosen["track"].tolist(), current, chosen["region"].tolist(),
        chosen["rank"].astype(int).tolist(), columns,
    )  # fmt: skip


def _popularity_predictions(
    panel: PopularityPanel,
    day: int,
    track_ids: set[str],
    models: dict[int, tuple[ModelVersion, ForecastBundle] | None],
    timings: dict[str, float] | None = None,
) -> SignalBlock | None:
    obs = panel.obs
    now = obs[(obs["day"] == day) & obs["song"].isin(track_ids) & obs["popularity"].notna()]
    if now.empty:
        return None
    current: list[float | None] = now["popularity"].astype(float).tolist()
    features = None
    columns = []
    for horizon, loaded in models.items():
        pred, version, cold = None, None, True
        if loaded is not None:
            version, bundle = loaded
            with _timed(timings, "features"):
                if features is None:
                    features = anchor_popularity_features(panel, now.index)
            with _timed(timings, "inference"):
                pred = _predicted(bundle, features)
            cold = bundle.cold_start
        columns.append(_horizon_columns(horizon, pred, current, version, cold))
    n = len(current)
    return SignalBlock(
        Signal.POPULARITY, day_date(day), now["song"].tolist(), current, [""] * n, [None] * n, columns
    )


async def forecast_tracks(
    *,
    session: AsyncSession,
    settings: Settings,
    anchors: Mapping[str, dt.date],
    horizons: Sequence[int] = (26, 52),
) -> list[TrackPrediction]:
    """On-demand forecasts (streams and popularity, 26 and 52 weeks) of songs, each from its data in its
    own anchor week (`anchors`: song id -> week); songs without data that week are left out. With no
    usable active model, a persistence forecast flagged `cold_start` (model_version "persistence") stands
    in, never a silent constant.

    One load serves every week: only the rows the songs' features read, up to the latest anchor
    (`queries.scoped_panels`; every row when that is cheaper), and anchor features read only the rows up
    to their own week, so no week needs a panel of its own.
    """
    by_week: dict[dt.date, list[str]] = {}
    for track_id, week in anchors.items():
        by_week.setdefault(week_of(week), []).append(track_id)
    if not by_week:
        return []
    latest, ids = max(by_week), list(anchors)
    versions = await active_versions(session)
    names = await song_names(session, ids)
    panels = await scoped_panels(session, latest, ids, names, settings.demo)
    if panels is None:
        panels = (
            await load_chart_panel(session, max_week=latest, demo=settings.demo),
            (await load_popularity_panel(session, max_week=latest, demo=settings.demo))[0],
        )
    predictions: list[TrackPrediction] = []
    for week, songs in sorted(by_week.items()):
        predictions += predict(
            *panels, anchor=week, ids=songs, versions=versions, names=names, settings=settings,
            horizons=horizons,
        )  # fmt: skip
    return predictions


async def score_from_store(
    *,
    session: AsyncSession,
    settings: Settings,
    store: PanelStore,
    week: dt.date,
    track_ids: Sequence[str],
    horizons: Sequence[int] = (26, 52),
    timings: dict[str, float] | None = None,
) -> ScoredBatch:
    """The predictor's batch: forecasts of the songs `track_ids` from their data in `week`, read from a
    resident `PanelStore` (refreshed by the caller; only the active models come from the database), as
    columns (`ScoredBatch`: `TrackPrediction` objects only if asked for). The same answers as
    `forecast_tracks` of the same songs at that week. `timings`, when given, receives the seconds spent
    building panels, in features and in model inference."""
    anchor, ids = week_of(week), list(track_ids)
    if not ids:
        return ScoredBatch([], [], {}, settings.demo)
    versions = await active_versions(session)
    with _timed(timings, "panels"):  # built once per refresh: free on a warm store
        chart_panel, popularity = await asyncio.to_thread(store.panels, anchor)
    return await asyncio.to_thread(
        functools.partial(
            _score, chart_panel, popularity, anchor=anchor, ids=ids, versions=versions,
            names=store.names(ids), settings=settings, horizons=horizons, timings=timings,
        )
    )  # fmt: skip


def predict(
    chart_panel: ChartPanel,
    popularity: PopularityPanel,
    *,
    anchor: dt.date,
    ids: list[str],
    versions: dict[tuple[str, int], ModelVersion],
    names: dict[str, tuple[str, str]],
    settings: Settings,
    horizons: Sequence[int],
) -> list[TrackPrediction]:
    """The forecasts of songs `ids` at `anchor` from panels (`_score`) as objects."""
    return _score(
        chart_panel, popularity, anchor=anchor, ids=ids, versions=versions, names=names, settings=settings,
        horizons=horizons,
    ).predictions()  # fmt: skip


def _score(
    chart_panel: ChartPanel,
    popularity: PopularityPanel,
    *,
    anchor: dt.date,
    ids: list[str],
    versions: dict[tuple[str, int], ModelVersion],
    names: dict[str, tuple[str, str]],
    settings: Settings,
    horizons: Sequence[int],
    timings: dict[str, float] | None = None,
) -> ScoredBatch:
    """Both signals' forecasts of the songs `ids` at `anchor` from panels holding (at least) what their
    features read, with the active models (persistence, flagged, where none is usable)."""
    wanted = set(ids)
    stream_models = {h: _load_active(versions, Signal.STREAMS, h) for h in horizons}
    popularity_models = {h: _load_active(versions, Signal.POPULARITY, h) for h in horizons}
    blocks = []
    if len(chart_panel.entries):
        blocks.append(
            _streams_predictions(
                chart_panel, week_index(anchor), wanted, stream_models, settings.chart_region, names, timings
            )
        )
    if len(popularity.obs):
        blocks.append(
            _popularity_predictions(popularity, day_index(anchor), wanted, popularity_models, timings)
        )
    return ScoredBatch(ids, [b for b in blocks if b is not None], names, settings.demo)
