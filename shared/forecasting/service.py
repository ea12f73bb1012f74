"""What the services call: train, backtest and register models; forecast songs with the active ones."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import functools
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.charts import iter_chart_paths
from shared.config import Settings
from shared.events import Forecast, TrackPrediction
from shared.forecasting.backtest import BACKTEST_STEP_WEEKS, backtest_popularity, backtest_streams
from shared.forecasting.baselines import ChartBaselines, PopularityBaselines
from shared.forecasting.dataset import chart_set, popularity_set, with_thinned
from shared.forecasting.features import (
    CHART_LAGS,
    anchor_chart_features,
    anchor_popularity_features,
    cached_chart_features,
    regions_of,
)
from shared.forecasting.inference import compile_forecaster
from shared.forecasting.models import (
    BoostParams,
    PopularityForecaster,
    StreamsForecaster,
)
from shared.forecasting.panel import (
    ChartPanel,
    NotEnoughData,
    PopularityPanel,
    artist_key,
    chart_panel_from_files,
    chart_panel_from_rows,
    chart_panel_with_floors,
    day_index,
    popularity_panel_from_rows,
    week_date,
    week_index,
)
from shared.forecasting.registry import (
    ArtifactError,
    ForecastBundle,
    activate,
    active_versions,
    load_version,
    save_artifact,
)
from shared.forecasting.store import PanelStore
from shared.models import Album, ChartEntry, ModelVersion, Snapshot, Track, utcnow

log = logging.getLogger(__name__)

PRIMARY_METRIC = {"streams": "cmae", "popularity": "mae"}
FEATURE_VERSION = 3  # bump when features change: older artifacts then compare on a refit, not their numbers
PERSISTENCE = "persistence"


# ---------------------------------------------------------------- loading panels from the database


async def load_chart_panel(
    session: AsyncSession, *, max_week: dt.date | None = None, demo: bool = False
) -> ChartPanel:
    """Every chart entry (up to `max_week`) with its song's name and first artist."""
    return chart_panel_from_rows(await _chart_rows(session, max_week=max_week, demo=demo))


async def _chart_rows(
    session: AsyncSession, *, max_week: dt.date | None, demo: bool, tracks: Sequence[str] | None = None
) -> list[tuple[str, str, dt.date, int, int | None, str, str]]:
    """Chart entries as `chart_panel_from_rows` takes them: all of them, or only those of `tracks`."""
    query = select(
        col(ChartEntry.track_id),
        col(ChartEntry.region),
        col(ChartEntry.week),
        col(ChartEntry.rank),
        col(ChartEntry.streams),
        col(Track.artist_names),
        col(Track.name),
    ).join(Track, Track.id == ChartEntry.track_id, isouter=True)  # type: ignore[arg-type]
    if max_week is not None:
        query = query.where(ChartEntry.week <= max_week)  # type: ignore[arg-type]
    if not demo:
        query = query.where(ChartEntry.is_demo.is_(False))  # type: ignore[attr-defined]
    rows: list[Any] = []
    for part in _chunks(tracks):
        scoped = query if part is None else query.where(col(ChartEntry.track_id).in_(part))
        rows += (await session.execute(scoped)).all()
    return [
        (t, r, w, rank, streams, (artists or "").split(",")[0].strip(), name or "")
        for t, r, w, rank, streams, artists, name in rows
    ]


def _chunks(ids: Sequence[str] | None, size: int = 1000) -> list[list[str] | None]:
    """`ids` in slices small enough for an IN list; [None] (no filter) when `ids` is None."""
    if ids is None:
        return [None]
    return [list(ids[start : start + size]) for start in range(0, len(ids), size)]


async def load_popularity_panel(
    session: AsyncSession, *, max_week: dt.date | None = None, demo: bool = False
) -> tuple[PopularityPanel, float]:
    """Every known weekly popularity (up to `max_week`) and the songs' attributes; also the share of those
    values imported from history files rather than observed by this installation."""
    return await _popularity_panel_of(session, max_week=max_week, demo=demo)


async def _popularity_panel_of(
    session: AsyncSession, *, max_week: dt.date | None, demo: bool, tracks: Sequence[str] | None = None
) -> tuple[PopularityPanel, float]:
    """The popularity panel of all songs, or only of `tracks`, and its imported share."""
    query = select(
        col(Snapshot.track_id), col(Snapshot.week), col(Snapshot.popularity), col(Snapshot.popularity_source)
    ).where(
        Snapshot.popularity.is_not(None)  # type: ignore[union-attr]
    )
    if max_week is not None:
        query = query.where(Snapshot.week <= max_week)  # type: ignore[arg-type]
    if not demo:
        query = query.where(Snapshot.is_demo.is_(False))  # type: ignore[attr-defined]
    obs: list[Any] = []
    for part in _chunks(tracks):
        scoped = query if part is None else query.where(col(Snapshot.track_id).in_(part))
        obs += (await session.execute(scoped)).all()
    imported = sum(1 for *_, source in obs if source == "history") / len(obs) if obs else 0.0
    ids = {o[0] for o in obs}
    songs_query = select(
        col(Track.id),
        col(Track.release_date),
        col(Track.duration_ms),
        col(Track.explicit),
        col(Album.album_type),
        col(Album.total_tracks),
        col(Track.artist_names),
        col(Track.name),
    ).join(Album, Album.id == Track.album_id, isouter=True)  # type: ignore[arg-type]
    songs: list[Any] = []
    for part in _chunks(None if tracks is None else sorted(ids)):
        songs_part = songs_query if part is None else songs_query.where(col(Track.id).in_(part))
        songs += [row for row in (await session.execute(songs_part)).all() if row[0] in ids]
    panel = popularity_panel_from_rows(
        ((t, w, p) for t, w, p, _ in obs),
        (
            (i, r, d, e, a, n, (arts or "").split(",")[0].strip(), name or "", arts or "")
            for i, r, d, e, a, n, arts, name in songs
        ),
    )
    return panel, imported


# ---------------------------------------------------------------- training


@dataclass
class Candidate:
    """A backtested configuration for one signal and horizon, before it is fitted on all data."""

    signal: str
    horizon: int
    config: dict[str, Any]
    backtest: dict[str, Any]
    fingerprint: str
    cold_start: bool
    train_start: dt.date | None
    train_end: dt.date | None

    @property
    def score(self) -> float:
        """The backtest error of what would serve (the method the folds chose)."""
        value = self.backtest.get("served", self.backtest["model"]).get(PRIMARY_METRIC[self.signal])
        return float("inf") if value is None else float(value)

    def baseline_score(self, name: str) -> float:
        value = self.backtest.get(name, {}).get(PRIMARY_METRIC[self.signal])
        return float("inf") if value is None else float(value)


def default_config(signal: str) -> dict[str, Any]:
    params = BoostParams() if signal == "streams" else PopularityForecaster(horizon=0).params
    kind = (
        StreamsForecaster(horizon=0, regions=[]).kind if signal == "streams" else PopularityForecaster(0).kind
    )
    return {"kind": kind, "params": params.as_dict(), "features": FEATURE_VERSION}


def config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def _fingerprint(frame: pd.DataFrame, extra: str) -> str:
    digest = hashlib.sha256(extra.encode())
    digest.update(str(len(frame)).encode())
    digest.update(str(int(pd.util.hash_pandas_object(frame, index=False).sum())).encode())
    return digest.hexdigest()[:32]


def _streams_maker(horizon: int, regions: list[str], config: dict[str, Any]) -> Any:
    return lambda: StreamsForecaster(horizon=horizon, regions=regions, params=BoostParams(**config["params"]))


def _popularity_maker(horizon_days: int, config: dict[str, Any]) -> Any:
    return lambda: PopularityForecaster(horizon=horizon_days, params=BoostParams(**config["params"]))


class Unchanged(Exception):
    """The data and the method are those of the active model: nothing to retrain."""


def _check_new(fingerprint: str, config: dict[str, Any], active: ModelVersion | None) -> None:
    if (
        active is not None
        and active.metrics.get("fingerprint") == fingerprint
        and active.metrics.get("config_hash") == config_hash(config)
    ):
        raise Unchanged


def _streams_work(
    panel: ChartPanel, horizon: int, config: dict[str, Any], cold_start: bool, active: ModelVersion | None
) -> tuple[Candidate, Any] | None:
    """Backtest the streams model; returns the candidate and a function fitting it on all labelled data."""
    fingerprint = _fingerprint(
        panel.entries[["track", "region", "week", "rank", "streams"]], f"streams{horizon}"
    )
    _check_new(fingerprint, config, active)
    regions = regions_of(panel)
    data = chart_set(panel, horizon, regions, features=cached_chart_features(panel, regions))
    if len(data) == 0:
        return None
    data = with_thinned(data, panel, horizon, regions)  # also learn from histories of monthly downloads
    result = backtest_streams(
        data, horizon, regions, _streams_maker(horizon, regions, config), step=BACKTEST_STEP_WEEKS
    )
    if result is None:
        return None
    candidate = Candidate(
        "streams",
        horizon,
        config,
        result,
        fingerprint,
        cold_start,
        week_date(int(data.week.min())),
        week_date(int(data.week.max())),
    )
    latest, rule = result.pop("calibration"), result.pop("rule")

    def fit() -> StreamsForecaster:
        model: StreamsForecaster = _streams_maker(horizon, regions, config)().fit(data, calibrated_by=latest)
        model.baselines, model.serving = ChartBaselines().fit(data.observed), rule
        return model

    return candidate, fit


def _popularity_work(
    panel: PopularityPanel,
    horizon: int,
    config: dict[str, Any],
    cold_start: bool,
    active: ModelVersion | None,
) -> tuple[Candidate, Any] | None:
    """Backtest the popularity model; returns the candidate and a function fitting it on all data."""
    fingerprint = _fingerprint(panel.obs[["song", "day", "popularity"]], f"popularity{horizon}")
    _check_new(fingerprint, config, active)
    horizon_days = horizon * 7
    data = popularity_set(panel, horizon_days)
    if len(data) == 0:
        return None
    result = backtest_popularity(
        data, horizon_days, _popularity_maker(horizon_days, config), step=BACKTEST_STEP_WEEKS * 7
    )
    if result is None:
        return None
    candidate = Candidate(
        "popularity",
        horizon,
        config,
        result,
        fingerprint,
        cold_start,
        _day_to_date(int(data.day.min())),
        _day_to_date(int(data.day.max())),
    )
    latest, rule = result.pop("calibration"), result.pop("rule")

    def fit() -> PopularityForecaster:
        maker = _popularity_maker(horizon_days, config)
        model: PopularityForecaster = maker().fit(data, calibrated_by=latest)
        model.baselines, model.serving = PopularityBaselines().fit(data), rule
        return model

    return candidate, fit


def _day_to_date(day: int) -> dt.date:
    return dt.date(1970, 1, 1) + dt.timedelta(days=day)


def _should_activate(candidate: Candidate, active: ModelVersion | None) -> tuple[bool, str]:
    """Whether the candidate replaces the active model, and why (compared on the same backtest)."""
    if active is None:
        served = candidate.backtest.get("served", {})
        if served.get("method") is None and candidate.score >= candidate.baseline_score(PERSISTENCE):
            return False, "does not beat persistence in the backtest"
        # The naive answers were candidates of the selection: what serves never loses to the best of them.
        return True, (
            f"no active model; serves {served.get('method', 'model')} "
            f"(skill {served.get('skill')} against {served.get('best_naive')} in the backtest)"
        )
    same_data = active.metrics.get("fingerprint") == candidate.fingerprint
    same_config = active.metrics.get("config_hash") == config_hash(candidate.config)
    if same_data and same_config:
        return False, "no new data since the active model"
    if same_config:
        # The active model's method backtested on the same folds is this very backtest: a tie, and the
        # candidate has seen newer data.
        return True, "same method, newer data, same backtest score"
    active_score = active.metrics.get("same_backtest", {}).get(candidate.fingerprint)
    if active_score is None:
        active_score = active.metrics.get(PRIMARY_METRIC[candidate.signal])
    if active_score is None or candidate.score < float(active_score):
        return True, f"backtest {PRIMARY_METRIC[candidate.signal]} {candidate.score} beats {active_score}"
    return False, f"backtest {candidate.score} does not beat the active model's {active_score}"


def _version_name(candidate: Candidate) -> str:
    stamp = utcnow().strftime("%Y%m%d%H%M%S")
    return f"{candidate.signal}-{candidate.horizon}w-{stamp}-{candidate.fingerprint[:8]}"


SERVING_KEYS = ("method", "toward", "weight", "skill", "best_naive", "candidates")


def _model_row(candidate: Candidate, *, demo: bool) -> ModelVersion:
    """The registry row: the backtest metrics of what serves (`serving` says which method and its skill
    against the best naive answer), and those of every other candidate as `baselines` (`learned`: the model
    itself, whether it serves or not)."""
    served = dict(candidate.backtest.get("served", candidate.backtest["model"]))
    metrics = {key: value for key, value in served.items() if key not in SERVING_KEYS}
    metrics.update(
        serving={key: served.get(key) for key in SERVING_KEYS} if "method" in served else {"method": "model"},
        fingerprint=candidate.fingerprint,
        config_hash=config_hash(candidate.config),
        config=candidate.config,
        folds=candidate.backtest.get("folds", []),
        n_test=candidate.backtest.get("n_test", 0),
        primary=PRIMARY_METRIC[candidate.signal],
    )
    baselines = {"learned": candidate.backtest["model"]}
    baselines.update(
        {k: v for k, v in candidate.backtest.items() if isinstance(v, dict) and k not in ("model", "served")}
    )
    return ModelVersion(
        version=_version_name(candidate),
        signal=candidate.signal,
        horizon_weeks=candidate.horizon,
        kind=str(candidate.config["kind"]),
        train_start=candidate.train_start,
        train_end=candidate.train_end,
        metrics=metrics,
        baselines=baselines,
        cold_start=candidate.cold_start,
        is_demo=demo,
    )


def _cold_start_chart_panel(settings: Settings) -> ChartPanel | None:
    """The charts folder's files, when the database has too little history of its own."""
    try:
        if not settings.charts_dir.exists() or not iter_chart_paths([settings.charts_dir]):
            return None
        return chart_panel_from_files([settings.charts_dir])
    except (NotEnoughData, ValueError, OSError) as exc:
        log.warning("cold start from %s impossible: %s", settings.charts_dir, exc)
        return None


async def train_and_register(
    *,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    horizons: Sequence[int] = (26, 52),
    signals: Sequence[str] = ("streams", "popularity"),
    progress: Callable[[str, int, int], None] | None = None,
) -> list[ModelVersion]:
    """Backtest, fit and register a model per signal and horizon; returns those that became active.
    `progress("models", done, total)` is called before each model and at the end.

    A model becomes active only when it beats the active one on the same backtest (or, with none active,
    persistence). With too little history in the database, the streams model is trained on the charts
    folder's files instead and flagged `cold_start`.
    """
    async with sessions() as session:
        chart_panel = await load_chart_panel(session, demo=settings.demo) if "streams" in signals else None
        popularity = (
            await load_popularity_panel(session, demo=settings.demo) if "popularity" in signals else None
        )
        active = await active_versions(session)
    activated: list[ModelVersion] = []
    done, total = 0, len(signals) * len(horizons)
    for signal in signals:
        for horizon in horizons:
            if progress is not None:
                progress("models", done, total)
            done += 1
            current = active.get((signal, horizon))
            try:
                work = await asyncio.to_thread(
                    _prepare, signal, horizon, chart_panel, popularity, settings, current
                )
            except Unchanged:
                log.info("%s %dw: no new data since the active model %s", signal, horizon, current)
                continue
            if work is None:
                log.info("%s %dw: not enough history to train", signal, horizon)
                continue
            candidate, fit_all = work
            go, why = _should_activate(candidate, current)
            log.info(
                "%s %dw: %s (%s)", signal, horizon, "activating" if go else "keeping the active model", why
            )
            row = _model_row(candidate, demo=settings.demo)
            if go:
                forecaster = await asyncio.to_thread(fit_all)
                bundle = ForecastBundle(
                    signal, horizon, forecaster, candidate.config, candidate.fingerprint, candidate.cold_start
                )
                path, digest = await asyncio.to_thread(
                    save_artifact, bundle, settings.models_dir, row.version
                )
                row.artifact_path, row.sha256, row.n_train = str(path), digest, int(forecaster.n_train)
            async with sessions() as session:
                if go:
                    await activate(session, row)
                else:
                    session.add(row)
                await session.commit()
                await session.refresh(row)
            if go:
                activated.append(row)
    if progress is not None:
        progress("models", total, total)
    return activated


def _prepare(
    signal: str,
    horizon: int,
    chart_panel: ChartPanel | None,
    popularity: tuple[PopularityPanel, float] | None,
    settings: Settings,
    active: ModelVersion | None,
) -> tuple[Candidate, Any] | None:
    """The backtested candidate of one signal and horizon; raises Unchanged when nothing is new."""
    config = default_config(signal)
    if signal == "streams":
        work = (
            _streams_work(chart_panel, horizon, config, False, active)
            if chart_panel is not None and len(chart_panel.entries)
            else None
        )
        if work is None:
            files = _cold_start_chart_panel(settings)
            work = _streams_work(files, horizon, config, True, active) if files is not None else None
        return work
    if popularity is None or not len(popularity[0].obs):
        return None
    panel, imported_share = popularity
    return _popularity_work(panel, horizon, config, imported_share > 0.5, active)


# ---------------------------------------------------------------- forecasting


async def _latest_week(session: AsyncSession) -> dt.date | None:
    chart = (await session.execute(select(func.max(ChartEntry.week)))).scalar()
    snap = (await session.execute(select(func.max(Snapshot.week)))).scalar()
    weeks = [w for w in (chart, snap) if w is not None]
    return max(weeks) if weeks else None


async def _trending_ids(session: AsyncSession, week: dt.date) -> list[str]:
    charted = (
        (await session.execute(select(col(ChartEntry.track_id)).where(col(ChartEntry.week) == week)))
        .scalars()
        .all()
    )
    trending = (
        (
            await session.execute(
                select(col(Snapshot.track_id)).where(
                    col(Snapshot.week) == week, col(Snapshot.trending).is_(True)
                )
            )
        )
        .scalars()
        .all()
    )
    return list(dict.fromkeys([*charted, *trending]))


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


_compiled: dict[int, tuple[ForecastBundle, ForecastBundle]] = {}


def _compiled_bundle(bundle: ForecastBundle) -> ForecastBundle:
    """The bundle with its forecaster's trees compiled (`inference.py`: the same forecasts, several times
    faster on a batch), once per loaded artifact."""
    key = id(bundle)
    if key not in _compiled or _compiled[key][0] is not bundle:
        fast = dataclasses.replace(bundle, forecaster=compile_forecaster(bundle.forecaster))
        _compiled[key] = (bundle, fast)
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


@dataclass
class SignalBlock:
    """One signal's scored songs as columns (the songs in the order the panels gave them)."""

    signal: str
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
    def positions(self) -> list[tuple[SignalBlock, int]]:
        """(block, row) of every prediction, in the order of `ids`, then by signal (as `_predict` sorts)."""
        order = {track: i for i, track in enumerate(self.ids)}
        signals = sorted({b.signal for b in self.blocks})
        found: list[tuple[SignalBlock, int]] = []
        song_keys, signal_keys = [], []
        for block in self.blocks:
            kept = block.kept()
            found += [(block, i) for i in kept]
            song_keys.append(np.fromiter((order.get(block.tracks[i], 0) for i in kept), np.int64, len(kept)))
            signal_keys.append(np.full(len(kept), signals.index(block.signal), np.int64))
        if not found:
            return []
        ranked = np.lexsort((np.concatenate(signal_keys), np.concatenate(song_keys)))  # stable, like sort
        return [found[i] for i in ranked.tolist()]

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

    def message_data(self) -> list[dict[str, Any]]:
        """`predictions()` as JSON-ready dicts (what `model_dump(mode="json")` gives each), built from the
        columns: the predictor's messages carry these, without a pydantic object per song."""
        unnamed = ("", "")
        out = []
        for block, i in self.positions:
            track = block.tracks[i]
            name, artists = self.names.get(track, unnamed)
            forecasts = [
                {"horizon_weeks": h.horizon, "value": h.value[i], "lower": h.lower[i], "upper": h.upper[i],
                 "p_chart": h.p_chart[i], "model_version": h.model_version, "cold_start": h.cold_start}
                for h in block.horizons
                if h.value[i] is not None
            ]  # fmt: skip
            out.append({
                "track_id": track, "name": name, "artists": artists, "week": block.week.isoformat(),
                "signal": block.signal, "region": block.regions[i], "rank": block.ranks[i],
                "current": block.current[i], "forecasts": forecasts, "demo": self.demo,
            })  # fmt: skip
        return out

    def rows(self, created_at: dt.datetime) -> list[dict[str, Any]]:
        """The stored rows (`Prediction`), one per song, signal and horizon, without building objects: the
        same rows, in the same order, as the predictor's `prediction_rows` of `predictions()`."""
        return [
            {
                "track_id": block.tracks[i], "week": block.week, "signal": block.signal,
                "region": block.regions[i], "horizon_weeks": h.horizon, "current": block.current[i],
                "value": h.value[i], "lower": h.lower[i], "upper": h.upper[i], "p_chart": h.p_chart[i],
                "model_version": h.model_version, "cold_start": h.cold_start, "created_at": created_at,
            }
            for block, i in self.positions
            for h in block.horizons
            if h.value[i] is not None
        ]  # fmt: skip


def _horizon_columns(
    horizon: int,
    pred: dict[str, np.ndarray] | None,
    current: list[float | None],
    version: tuple[str, bool],
    *,
    to_level: Any = None,
) -> HorizonColumns:
    """One horizon's forecasts as columns; plain lists, no per-row pandas."""
    name, cold = version
    n = len(current)
    if pred is None:  # no usable model: persistence, flagged
        nothing: list[float | None] = [None] * n
        return HorizonColumns(horizon, list(current), nothing, nothing, nothing, name, True, False)
    convert = to_level or (lambda a: a)
    value, lower, upper = (convert(pred[k]).tolist() for k in ("value", "lower", "upper"))
    p_chart = pred["p_chart"].tolist() if "p_chart" in pred else [None] * n
    return HorizonColumns(horizon, value, lower, upper, p_chart, name, cold, True)


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
        pred, version = None, (PERSISTENCE, True)
        if loaded is not None:
            row, bundle = loaded
            regions = tuple(bundle.forecaster.regions)
            with _timed(timings, "features"):
                if regions not in features:
                    features[regions] = anchor_chart_features(panel, list(regions), chosen.index)
            with _timed(timings, "inference"):
                pred = bundle.forecaster.predict(features[regions])
            version = (row.version, bundle.cold_start)
        columns.append(_horizon_columns(horizon, pred, current, version, to_level=np.exp))
    for track, name in zip(chosen["track"], chosen["name"], strict=True):
        names.setdefault(track, (str(name or ""), ""))
    return SignalBlock(
        "streams", week_date(week), chosen["track"].tolist(), current, chosen["region"].tolist(),
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
        pred, version = None, (PERSISTENCE, True)
        if loaded is not None:
            row, bundle = loaded
            with _timed(timings, "features"):
                if features is None:
                    features = anchor_popularity_features(panel, now.index)
            with _timed(timings, "inference"):
                pred = bundle.forecaster.predict(features)
            version = (row.version, bundle.cold_start)
        columns.append(_horizon_columns(horizon, pred, current, version))
    n = len(current)
    return SignalBlock(
        "popularity", _day_to_date(day), now["song"].tolist(), current, [""] * n, [None] * n, columns
    )


async def forecast_tracks(
    *,
    session: AsyncSession,
    settings: Settings,
    week: dt.date | None = None,
    track_ids: Sequence[str] | None = None,
    horizons: Sequence[int] = (26, 52),
) -> list[TrackPrediction]:
    """Forecasts (streams and popularity, 26 and 52 weeks) of songs from their data in `week`.

    `track_ids` None means the trending songs of that week (default: the latest week with data). Songs
    without data that week are left out. With no usable active model, a persistence forecast flagged
    `cold_start` (model_version "persistence") stands in, never a silent constant. Only the rows the
    songs' features read are loaded (see `_scoped_panels`).
    """
    return await _forecast(
        session=session, settings=settings, week=week, track_ids=track_ids, horizons=horizons, scoped=True
    )


async def forecast_tracks_at(
    *,
    session: AsyncSession,
    settings: Settings,
    anchors: Mapping[str, dt.date],
    horizons: Sequence[int] = (26, 52),
) -> list[TrackPrediction]:
    """`forecast_tracks` of songs each at its own anchor week (`anchors`: song id -> week), as the same
    songs' `forecast_tracks` week by week would give, with one load (the songs' rows up to the latest
    anchor) and its derived indexes shared by every week: anchor features read only the rows up to their
    week, so no week needs a panel of its own."""
    from shared.weeks import week_of

    by_week: dict[dt.date, list[str]] = {}
    for track_id, week in anchors.items():
        by_week.setdefault(week_of(week), []).append(track_id)
    if not by_week:
        return []
    latest, ids = max(by_week), list(anchors)
    versions = await active_versions(session)
    names = await _names(session, ids)
    panels = await _scoped_panels(session, latest, ids, names, settings.demo, also=list(by_week))
    if panels is None:
        panels = (
            await load_chart_panel(session, max_week=latest, demo=settings.demo),
            (await load_popularity_panel(session, max_week=latest, demo=settings.demo))[0],
        )
    predictions: list[TrackPrediction] = []
    for week, songs in sorted(by_week.items()):
        predictions += _predict(
            *panels, anchor=week, ids=songs, versions=versions, names=names, settings=settings,
            horizons=horizons,
        )  # fmt: skip
    return predictions


async def _forecast(
    *,
    session: AsyncSession,
    settings: Settings,
    week: dt.date | None,
    track_ids: Sequence[str] | None,
    horizons: Sequence[int],
    scoped: bool,
) -> list[TrackPrediction]:
    """`forecast_tracks`; `scoped` False loads every row up to the week instead (same results, slower)."""
    anchor = week or await _latest_week(session)
    if anchor is None:
        return []
    from shared.weeks import week_of

    anchor = week_of(anchor)
    ids = list(track_ids) if track_ids is not None else await _trending_ids(session, anchor)
    if not ids:
        return []
    versions = await active_versions(session)
    names = await _names(session, ids)
    panels = await _scoped_panels(session, anchor, ids, names, settings.demo) if scoped else None
    if panels is None:
        chart_panel = await load_chart_panel(session, max_week=anchor, demo=settings.demo)
        popularity, _ = await load_popularity_panel(session, max_week=anchor, demo=settings.demo)
    else:
        chart_panel, popularity = panels
    return _predict(
        chart_panel, popularity, anchor=anchor, ids=ids, versions=versions, names=names, settings=settings,
        horizons=horizons,
    )  # fmt: skip


async def forecast_from_store(
    *,
    session: AsyncSession,
    settings: Settings,
    store: PanelStore,
    week: dt.date | None = None,
    track_ids: Sequence[str] | None = None,
    horizons: Sequence[int] = (26, 52),
    timings: dict[str, float] | None = None,
) -> list[TrackPrediction]:
    """`forecast_tracks` from a resident `PanelStore` (refreshed by the caller) instead of the database's
    rows: the same answers, with only the active models and the trending songs read from the database.
    `timings`, when given, receives the seconds spent in features and in model inference."""
    batch = await score_from_store(
        session=session, settings=settings, store=store, week=week, track_ids=track_ids, horizons=horizons,
        timings=timings,
    )  # fmt: skip
    return batch.predictions()


async def score_from_store(
    *,
    session: AsyncSession,
    settings: Settings,
    store: PanelStore,
    week: dt.date | None = None,
    track_ids: Sequence[str] | None = None,
    horizons: Sequence[int] = (26, 52),
    timings: dict[str, float] | None = None,
) -> ScoredBatch:
    """`forecast_from_store` as columns (`ScoredBatch`): the batch scoring, objects built only if asked."""
    empty = ScoredBatch([], [], {}, settings.demo)
    anchor = week or await _latest_week(session)
    if anchor is None:
        return empty
    from shared.weeks import week_of

    anchor = week_of(anchor)
    ids = list(track_ids) if track_ids is not None else await _trending_ids(session, anchor)
    if not ids:
        return empty
    versions = await active_versions(session)
    with _timed(timings, "panels"):  # built once per refresh: free on a warm store
        chart_panel, popularity = await asyncio.to_thread(store.panels, anchor)
    return await asyncio.to_thread(
        functools.partial(
            _score, chart_panel, popularity, anchor=anchor, ids=ids, versions=versions,
            names=store.names(ids), settings=settings, horizons=horizons, timings=timings,
        )
    )  # fmt: skip


def _predict(
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
    """`_score`'s predictions as objects."""
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
    stream_models = {h: _load_active(versions, "streams", h) for h in horizons}
    popularity_models = {h: _load_active(versions, "popularity", h) for h in horizons}
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


SCOPED_MAX_SONGS = 2000  # beyond this many songs one scan of the tables beats the per-song queries


@functools.lru_cache(maxsize=1 << 16)
def _first_artist_key(artist_names: str) -> str:
    """The artist key the panels give a song (its first artist, normalised)."""
    return artist_key(artist_names.split(",")[0].strip())


async def _same_artist_songs(
    session: AsyncSession, ids: Sequence[str], names: dict[str, tuple[str, str]]
) -> list[str] | None:
    """The songs and every song sharing a first artist with one of them (the cross-song features read
    those); None when a song has no artist (it would share the key of every unknown song)."""
    keys = {_first_artist_key(names.get(i, ("", ""))[1]) for i in ids}
    if "" in keys:
        return None
    spellings = (await session.execute(select(col(Track.artist_names)).distinct())).scalars().all()
    # The IN below compares with the column's collation (case- and accent-insensitive): it may add songs
    # of other artists, which only form groups of their own, never drop one of these artists' songs.
    matching = [a for a in spellings if a and _first_artist_key(a) in keys]
    scope = dict.fromkeys(ids)
    for start in range(0, len(matching), 1000):
        part = matching[start : start + 1000]
        found = await session.execute(select(col(Track.id)).where(col(Track.artist_names).in_(part)))
        scope.update(dict.fromkeys(found.scalars().all()))
    return list(scope)


async def _chart_floors(
    session: AsyncSession, weeks: Sequence[dt.date], demo: bool
) -> list[tuple[str, dt.date, int | None]]:
    """Every region's chart of `weeks` with its smallest positive streams (its floor), grouped by MariaDB."""
    regions = (await session.execute(select(col(ChartEntry.region)).distinct())).scalars().all()
    positive = case((col(ChartEntry.streams) > 0, col(ChartEntry.streams)))
    query = (
        # region IN and week IN: point ranges of the (region, week) index instead of a scan of the table
        select(col(ChartEntry.region), col(ChartEntry.week), func.min(positive))
        .where(col(ChartEntry.region).in_(regions), col(ChartEntry.week).in_(sorted(set(weeks))))
        .group_by(col(ChartEntry.region), col(ChartEntry.week))
    )
    if not demo:
        query = query.where(col(ChartEntry.is_demo).is_(False))
    return [(r, w, f) for r, w, f in (await session.execute(query)).all()] if regions and weeks else []


async def _scoped_panels(
    session: AsyncSession,
    anchor: dt.date,
    ids: Sequence[str],
    names: dict[str, tuple[str, str]],
    demo: bool,
    also: Sequence[dt.date] = (),
) -> tuple[ChartPanel, PopularityPanel] | None:
    """Panels holding only what the songs' features at `anchor` read: their own rows, their artists'
    other songs' rows, and the floors of the charts they read; None when a full load is needed or cheaper.

    Every other feature is a lookup or running aggregate over the song's own rows, so the features of
    these songs come out identical to those computed on the full panels.
    """
    if len(ids) > SCOPED_MAX_SONGS:
        return None
    scope = await _same_artist_songs(session, ids, names)
    if scope is None:
        return None
    rows = await _chart_rows(session, max_week=anchor, demo=demo, tracks=scope)
    # The floors these songs' features read: of the weeks they (or their artists' songs) charted, for
    # above_floor and its running best, and of the lagged weeks before the anchor.
    # (`also`: earlier anchors the same panels will be cut at.)
    lagged = {a - dt.timedelta(weeks=k) for a in (anchor, *also) for k in CHART_LAGS}
    weeks = {row[2] for row in rows} | lagged
    chart_panel = chart_panel_with_floors(rows, await _chart_floors(session, sorted(weeks), demo))
    popularity, _ = await _popularity_panel_of(session, max_week=anchor, demo=demo, tracks=scope)
    return chart_panel, popularity


async def _names(session: AsyncSession, ids: Sequence[str]) -> dict[str, tuple[str, str]]:
    names: dict[str, tuple[str, str]] = {}
    for start in range(0, len(ids), 1000):
        part = list(ids[start : start + 1000])
        rows = (
            await session.execute(
                select(col(Track.id), col(Track.name), col(Track.artist_names)).where(col(Track.id).in_(part))
            )
        ).all()
        names.update({i: (n or "", a or "") for i, n, a in rows})
    return names
