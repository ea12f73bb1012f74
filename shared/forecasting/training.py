"""Training: backtest a candidate per signal and horizon, decide whether it replaces the active model, fit
and register it (`train_and_register`, the trainer's entry point)."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.charts import iter_chart_paths
from shared.config import Settings
from shared.forecasting.backtest import (
    BACKTEST_STEP_WEEKS,
    Backtest,
    backtest_popularity,
    backtest_streams,
    oldest_fitted_time,
)
from shared.forecasting.baselines import ChartBaselines, PopularityBaselines
from shared.forecasting.dataset import OUTCOME_TOLERANCE_WEEKS, chart_set, popularity_set, with_history_copies
from shared.forecasting.features import cached_chart_features, regions_of
from shared.forecasting.models import BoostParams, PopularityForecaster, StreamsForecaster
from shared.forecasting.panel import (
    ChartPanel,
    NotEnoughData,
    PopularityPanel,
    chart_panel_from_files,
    day_date,
    week_date,
)
from shared.forecasting.queries import load_chart_panel, load_popularity_panel
from shared.forecasting.registry import ForecastBundle, activate, active_versions, save_artifact
from shared.forecasting.selection import ServingRule
from shared.models import ModelVersion, utcnow
from shared.signals import Signal

log = logging.getLogger(__name__)

PRIMARY_METRIC = {Signal.STREAMS: "cmae", Signal.POPULARITY: "mae"}
FEATURE_VERSION = 3  # bump when features change: older artifacts then compare on a refit, not their numbers


@dataclass
class Candidate:
    """A backtested configuration for one signal and horizon, before it is fitted on all data."""

    signal: Signal
    horizon: int
    config: dict[str, Any]
    backtest: Backtest
    fingerprint: str
    cold_start: bool
    train_start: dt.date | None
    train_end: dt.date | None

    @property
    def score(self) -> float:
        """The backtest error of what would serve (the method the folds chose)."""
        return self.baseline_score("served")

    def baseline_score(self, name: str) -> float:
        value = self.backtest.metric(name, PRIMARY_METRIC[self.signal])
        return float("inf") if value is None else value


def default_config(signal: str) -> dict[str, Any]:
    params = BoostParams() if signal == Signal.STREAMS else PopularityForecaster(horizon=0).params
    kind = (
        StreamsForecaster(horizon=0, regions=[]).kind
        if signal == Signal.STREAMS
        else PopularityForecaster(0).kind
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


def _serving(active: ModelVersion | None) -> str | None:
    """The method the active model serves (a candidate's name): this week's choice keeps it unless beaten."""
    serving = (active.metrics or {}).get("serving") if active is not None else None
    if not isinstance(serving, dict) or not serving.get("method"):
        return None
    return ServingRule(method=str(serving["method"]), weight=float(serving.get("weight") or 0.0)).candidate


def _streams_work(
    panel: ChartPanel, horizon: int, config: dict[str, Any], cold_start: bool, active: ModelVersion | None
) -> tuple[Candidate, Any] | None:
    """Backtest the streams model; returns the candidate and a function fitting it on all labelled data."""
    fingerprint = _fingerprint(
        panel.entries[["track", "region", "week", "rank", "streams"]], f"streams{horizon}"
    )
    _check_new(fingerprint, config, active)
    regions = regions_of(panel)
    features = cached_chart_features(panel, regions)
    data = chart_set(panel, horizon, regions, features=features, tolerance=OUTCOME_TOLERANCE_WEEKS)
    if len(data) == 0:
        return None
    # also learn from histories of monthly downloads and of files begun a few weeks earlier
    since = oldest_fitted_time(data.week, horizon)  # copies no fit reads are not made
    data = with_history_copies(data, panel, horizon, regions, tolerance=OUTCOME_TOLERANCE_WEEKS, since=since)
    maker = _streams_maker(horizon, regions, config)
    result = backtest_streams(
        data, horizon, regions, maker, step=BACKTEST_STEP_WEEKS, current=_serving(active)
    )
    if result is None:
        return None
    candidate = Candidate(
        Signal.STREAMS,
        horizon,
        config,
        result,
        fingerprint,
        cold_start,
        week_date(int(data.week.min())),
        week_date(int(data.week.max())),
    )
    latest, rule = result.calibration, result.rule

    def fit() -> StreamsForecaster:
        model: StreamsForecaster = maker().fit(data, calibrated_by=latest)
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
    maker = _popularity_maker(horizon_days, config)
    result = backtest_popularity(
        data, horizon_days, maker, step=BACKTEST_STEP_WEEKS * 7, current=_serving(active)
    )
    if result is None:
        return None
    candidate = Candidate(
        Signal.POPULARITY,
        horizon,
        config,
        result,
        fingerprint,
        cold_start,
        day_date(int(data.day.min())),
        day_date(int(data.day.max())),
    )
    latest, rule = result.calibration, result.rule

    def fit() -> PopularityForecaster:
        model: PopularityForecaster = maker().fit(data, calibrated_by=latest)
        model.baselines, model.serving = PopularityBaselines().fit(data), rule
        return model

    return candidate, fit


def _should_activate(candidate: Candidate, active: ModelVersion | None) -> tuple[bool, str]:
    """Whether the candidate replaces the active model, and why (compared on the same backtest)."""
    if active is None:
        served = candidate.backtest.served
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


SERVING_KEYS = (
    "method",
    "toward",
    "weight",
    "skill",
    "best_naive",
    "fold_skill",
    "out_of_time",
    "candidates",
)


def _model_row(candidate: Candidate, *, demo: bool) -> ModelVersion:
    """The registry row: the backtest metrics of what serves (`serving` says which method and its skill
    against the best naive answer), and those of every other candidate as `baselines` (`learned`: the model
    itself, whether it serves or not)."""
    served = candidate.backtest.served
    metrics = {key: value for key, value in served.items() if key not in SERVING_KEYS}
    metrics.update(
        serving={key: served.get(key) for key in SERVING_KEYS},
        fingerprint=candidate.fingerprint,
        config_hash=config_hash(candidate.config),
        config=candidate.config,
        folds=candidate.backtest.folds,
        n_test=candidate.backtest.n_test,
        primary=PRIMARY_METRIC[candidate.signal],
    )
    baselines = {"learned": candidate.backtest.model, **candidate.backtest.baselines}
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
    signals: Sequence[str] = (Signal.STREAMS, Signal.POPULARITY),
    progress: Callable[[str, int, int], None] | None = None,
) -> list[ModelVersion]:
    """Backtest, fit and register a model per signal and horizon; returns those that became active.
    `progress("models", done, total)` is called before each model and at the end.

    A model becomes active only when it beats the active one on the same backtest (or, with none active,
    persistence). With too little history in the database, the streams model is trained on the charts
    folder's files instead and flagged `cold_start`.
    """
    async with sessions() as session:
        chart_panel = (
            await load_chart_panel(session, demo=settings.demo) if Signal.STREAMS in signals else None
        )
        popularity = (
            await load_popularity_panel(session, demo=settings.demo) if Signal.POPULARITY in signals else None
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
            del work, fit_all  # their labelled data: not held while the next model is prepared
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
    if signal == Signal.STREAMS:
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
