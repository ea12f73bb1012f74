"""Training and test sets: features at an anchor time joined with what happened H later."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import pandas as pd

from shared.forecasting.features import (
    cached_chart_features,
    chart_features,
    chart_targets,
    popularity_features,
    popularity_targets,
    restarted_chart_features,
)
from shared.forecasting.panel import ChartPanel, PopularityPanel, thin_charts

# Where a region's files are sparse (monthly, or downloaded when remembered) and none is exactly H weeks
# after a training anchor, its outcome is read from the latest file up to this many weeks earlier: the models
# then learn from most anchors of a sparse history (26 weeks, both sides irregular, 2017-20 -> 2021-24: skill
# 0.062 -> 0.137; both monthly, 2017-19 -> 2020: 0.079 -> 0.140). Never from a file after t+H; training
# anchors still need t+H itself by a fold's or split's origin, and what is scored keeps the exact week
# (`ChartSet.observed`; `chart_targets`).
OUTCOME_TOLERANCE_WEEKS = 4
# The same for popularity files sparser than daily, in days, for every pair, scored ones included: its
# horizons are days (182, 365) while its files may be weekly snapshots, whose year is 364 days later. Daily
# files keep the exact day (`popularity_targets`).
OUTCOME_TOLERANCE_DAYS = 7
# Training anchors are also seen through histories that began at most this many weeks earlier (the files cut
# into blocks: `restarted_chart_set`), for horizons up to RESTARTED_MAX_HORIZON: test files that begin after a
# hole or in a market never seen make every song look new for weeks. 26 weeks, learned model, 2017-20 ->
# 2021-24: skill 0.181 -> 0.204 (0.088 -> 0.129 on the test files' first 13 weeks); at 52 weeks the survivors
# are the songs of long histories, which the copies blur (0.143 -> 0.094), so not there. docs/forecasting.md.
RESTART_WEEKS = 26
RESTARTED_MAX_HORIZON = 26


@dataclass
class ChartSet:
    """Chart anchors (song, region, week) with features and, when known, the outcome H weeks later."""

    X: pd.DataFrame
    track: np.ndarray
    region: np.ndarray
    week: np.ndarray
    charted: np.ndarray  # still on the region's chart at t+H
    future_level: np.ndarray  # log streams at t+H (NaN when censored)
    future_floor: np.ndarray  # log floor of the region's chart at t+H
    # weeks before t+H of that chart: 0, or a few where a sparse history has none at t+H (training only)
    outcome_early: np.ndarray
    # True for a copy of an anchor seen through another history (monthly files, files begun a few weeks
    # earlier: `with_history_copies`): training only, never scored
    thinned: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))

    def __post_init__(self) -> None:
        if len(self.thinned) != len(self.week):
            self.thinned = np.zeros(len(self.week), bool)

    def __len__(self) -> int:
        return len(self.week)

    @property
    def log_floor(self) -> np.ndarray:
        return self.X["log_floor"].to_numpy(float)

    @property
    def level(self) -> np.ndarray:
        return self.X["level"].to_numpy(float)

    @property
    def censored_target(self) -> np.ndarray:
        """Log streams at t+H, or the floor at t+H for a song that fell off the chart."""
        return np.where(self.charted, self.future_level, self.future_floor)

    def take(self, mask: np.ndarray) -> ChartSet:
        return ChartSet(
            self.X[mask].reset_index(drop=True),
            self.track[mask],
            self.region[mask],
            self.week[mask],
            self.charted[mask],
            self.future_level[mask],
            self.future_floor[mask],
            self.outcome_early[mask],
            self.thinned[mask],
        )

    @property
    def as_given(self) -> np.ndarray:
        """Which anchors are as the files give them (not thinned-history copies) and scored as everywhere:
        with the outcome of the chart exactly H weeks later."""
        return ~self.thinned & (self.outcome_early == 0)

    @property
    def observed(self) -> ChartSet:
        """The anchors `as_given`: what folds, splits and baselines use."""
        as_given = self.as_given
        return self if as_given.all() else self.take(as_given)


def with_history_copies(
    data: ChartSet,
    panel: ChartPanel,
    horizon: int,
    regions: list[str],
    *,
    tolerance: int = 0,
    since: int | None = None,
) -> ChartSet:
    """The anchors plus their copies seen through other histories: monthly files (`thinned_chart_set`) and,
    up to RESTARTED_MAX_HORIZON, files that began at most RESTART_WEEKS earlier (`restarted_chart_set`);
    with `since`, only copies of anchors of that week or later (`backtest.oldest_fitted_time`)."""
    copies = [thinned_chart_set(panel, horizon, regions, tolerance=tolerance)]
    if horizon <= RESTARTED_MAX_HORIZON:
        copies.append(restarted_chart_set(panel, horizon, regions, tolerance=tolerance, since=since))
    kept = [copy if since is None else copy.take(copy.week >= since) for copy in copies if copy is not None]
    return concat_chart_sets([data, *kept]) if kept else data


def chart_set(
    panel: ChartPanel,
    horizon: int,
    regions: list[str],
    *,
    features: pd.DataFrame | None = None,
    labelled_only: bool = True,
    tolerance: int = 0,
) -> ChartSet:
    """Every chart entry of the panel as an anchor; with `labelled_only`, only those whose region's chart
    exists H weeks later (a song absent from it is censored, not dropped)."""
    feats = features if features is not None else chart_features(panel, regions)
    targets = chart_targets(panel, horizon, regions, tolerance=tolerance)
    usable = targets["observable"].to_numpy() & ~np.isnan(feats["level"].to_numpy())
    if labelled_only:
        keep = usable & ~(targets["charted"].to_numpy() & np.isnan(targets["future_level"].to_numpy()))
    else:
        keep = np.ones(len(feats), bool)
    entries = panel.entries
    return ChartSet(
        X=feats[keep].reset_index(drop=True),
        track=entries["track"].to_numpy()[keep],
        region=entries["region"].to_numpy()[keep],
        week=entries["week"].to_numpy()[keep],
        charted=targets["charted"].to_numpy()[keep],
        future_level=targets["future_level"].to_numpy()[keep],
        future_floor=targets["future_floor"].to_numpy()[keep],
        outcome_early=targets["outcome_early"].to_numpy()[keep],
    )


def concat_chart_sets(sets: list[ChartSet]) -> ChartSet:
    return _concat(sets)


def thinned_chart_set(
    panel: ChartPanel, horizon: int, regions: list[str], *, tolerance: int = 0
) -> ChartSet | None:
    """The panel's anchors as someone who downloads a file a month sees them (features of the monthly
    history), with the outcomes the full panel knows: trained on, so that features of sparse or irregular
    histories mean to the models what they mean in production."""
    if ("thinned", "monthly") not in panel.cache:  # both horizons read the same thinned history
        panel.cache[("thinned", "monthly")] = thin_charts(panel, "monthly")
    thin: ChartPanel = panel.cache[("thinned", "monthly")]
    if len(thin.entries) == len(panel.entries):
        return None  # the files are monthly already
    features = cached_chart_features(thin, regions).reindex(panel.entries.index)
    data = chart_set(panel, horizon, regions, features=features, tolerance=tolerance)
    data.thinned = np.ones(len(data), bool)
    return data


def restarted_chart_set(
    panel: ChartPanel, horizon: int, regions: list[str], *, tolerance: int = 0, since: int | None = None
) -> ChartSet | None:
    """The panel's anchors (of week `since` or later) as someone whose files began at most RESTART_WEEKS
    earlier sees them (`restarted_chart_features`), with the outcomes the full panel knows: trained on, never
    scored."""
    if not len(panel.entries):
        return None
    weeks = panel.weeks()
    if weeks[-1] - weeks[0] < RESTART_WEEKS:
        return None  # the history is that short already
    features = restarted_chart_features(panel, regions, RESTART_WEEKS, since=since)
    data = chart_set(panel, horizon, regions, features=features, tolerance=tolerance)
    data.thinned = np.ones(len(data), bool)
    return data


@dataclass
class PopularitySet:
    """Popularity anchors (song, day) with features and the popularity H days later (survivors only)."""

    X: pd.DataFrame
    song: np.ndarray
    day: np.ndarray
    future: np.ndarray

    def __len__(self) -> int:
        return len(self.day)

    @property
    def current(self) -> np.ndarray:
        return self.X["popularity"].to_numpy(float)

    def take(self, mask: np.ndarray) -> PopularitySet:
        return PopularitySet(
            self.X[mask].reset_index(drop=True), self.song[mask], self.day[mask], self.future[mask]
        )


def concat_popularity_sets(sets: list[PopularitySet]) -> PopularitySet:
    return _concat(sets)


def _concat(sets: list[Any]) -> Any:
    """The anchors of `sets` (of one dataclass: a frame of features, arrays) one after the other."""
    first = sets[0]
    return type(first)(
        **{
            f.name: pd.concat([getattr(s, f.name) for s in sets], ignore_index=True)
            if isinstance(getattr(first, f.name), pd.DataFrame)
            else np.concatenate([getattr(s, f.name) for s in sets])
            for f in fields(first)
        }
    )


def popularity_set(
    panel: PopularityPanel,
    horizon_days: int,
    *,
    every_days: int = 1,
    features: pd.DataFrame | None = None,
    labelled_only: bool = True,
    tolerance: int = OUTCOME_TOLERANCE_DAYS,
) -> PopularitySet:
    """Observations with a known popularity as anchors (one every `every_days` days), with the popularity
    `horizon_days` later when the song was still observed then (or on the file a few days before, where
    there is none that day: `popularity_targets`)."""
    feats = features if features is not None else popularity_features(panel)
    future = popularity_targets(panel, horizon_days, tolerance=tolerance)["future"].to_numpy()
    day = panel.obs["day"].to_numpy()
    keep = ~np.isnan(feats["popularity"].to_numpy()) & (day % every_days == 0)
    if labelled_only:
        keep &= ~np.isnan(future)
    return PopularitySet(
        X=feats[keep].reset_index(drop=True),
        song=panel.obs["song"].to_numpy()[keep],
        day=day[keep],
        future=future[keep],
    )
