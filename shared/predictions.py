"""The read model of predictions: one definition of each question the services ask about them.

- `latest_data_week` / `trending_ids`: the week the batch scores and the songs it scores;
- `latest_batch_week`: the anchor week of the newest stored predictions (what `/v1/trending` and the
  dashboard show);
- `predictions_from_rows` / `stored_predictions`: stored prediction rows as `TrackPrediction` objects (the
  rows themselves are written by `ScoredBatch.rows`, the batch's only writer), or as their JSON-ready
  dicts (`prediction_data_from_rows` / `week_prediction_data`);
- `HistoryPoint` / `merge_history` / `song_histories`: a song's weekly data;
- `Serving` / `serving_of` / `serving_by_version`: which method serves a model version, and its skill
  against the best naive answer (issue 11), stamped on every forecast answer.

The predictor (batch and REST answers) and the dashboard both read through this module.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import AsyncGenerator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import func, select, true
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.events import PERSISTENCE, Forecast, TrackPrediction
from shared.models import ChartEntry, ModelVersion, Prediction, Snapshot, Track
from shared.signals import Signal

# ---------------------------------------------------------------- weeks and songs


async def latest_data_week(session: AsyncSession) -> dt.date | None:
    """The most recent week with trending songs (a trending snapshot or a chart entry): a snapshot of a
    song fetched on demand is not trending, and must not move the batch to a week where nothing trends.
    Each read walks its week index from the newest week and stops at the first row that qualifies (a
    `max()` over the trending snapshots scanned every week's rows: seconds at 100,000 songs)."""
    trending = (
        select(col(Snapshot.week))
        .where(col(Snapshot.trending) == true())
        .order_by(col(Snapshot.week).desc())
        .limit(1)
    )
    snapshot_week = (await session.execute(trending)).scalar()
    chart_week = (await session.execute(select(func.max(col(ChartEntry.week))))).scalar()
    weeks = [w for w in (snapshot_week, chart_week) if w is not None]
    return max(weeks) if weeks else None


async def trending_ids(session: AsyncSession, week: dt.date) -> list[str]:
    """The songs that trended in `week` (on a chart, or flagged trending in their snapshot), sorted: the
    same order whatever order the charts and the enrichment arrived in. Two reads merged here: as one
    SQL `UNION` the server put 100,000 ids through a temporary table to drop duplicates (3 s of 4)."""
    snapshots = select(col(Snapshot.track_id)).where(
        col(Snapshot.week) == week, col(Snapshot.trending) == true()
    )
    charts = select(col(ChartEntry.track_id)).where(col(ChartEntry.week) == week).distinct()
    ids = set((await session.execute(snapshots)).scalars().all())
    ids.update((await session.execute(charts)).scalars().all())
    return sorted(ids)


# The anchor week of the newest stored predictions (the latest batch's week), as SQL: the REST read embeds
# it as a subquery.
LATEST_BATCH_WEEK = select(func.max(col(Prediction.week)))

# A song's predictions read through named indexes, as MySQL hints: right after a bulk write the table's
# statistics can say "nearly empty" until InnoDB recounts them, and MariaDB then scanned the whole table
# once per song (12 s for 500 songs at 10,000 songs), or sorted derived tables for minutes (issue 14),
# whatever the statistics say. A song's latest week from the index on track_id (holding the key: no row
# read), its rows of that week from the clustered key (week, track_id, ...): one lookup (migration 0009).
SONG_WEEKS_ONLY = "FORCE INDEX (ix_prediction_track_id)"
SONG_KEY_ONLY = "FORCE INDEX (PRIMARY)"


async def latest_batch_week(connection: AsyncConnection | AsyncSession) -> dt.date | None:
    """The anchor week of the newest stored predictions (the latest batch's week; what `/v1/trending` and
    the dashboard show)."""
    return (await connection.execute(LATEST_BATCH_WEEK)).scalar()


# ---------------------------------------------------------------- serving method and skill


@dataclass(frozen=True)
class Serving:
    """Which method serves a model version's forecasts, and its skill against the best naive answer on the
    backtest folds (1 - error / naive error; negative when it loses, None when not measured)."""

    method: str
    skill: float | None = None


def serving_of(model_version: str, metrics: Mapping[str, Any] | None) -> Serving:
    """A model version's serving method, from the `serving` part of its registry metrics (what
    `GET /v1/models` shows); a shrunk forecast says how much and toward what, e.g. "shrunk 0.5 toward
    naive", a floored one at what ("model floored at naive"). Forecasts made without a usable model are
    served by persistence."""
    if model_version == PERSISTENCE:
        return Serving(PERSISTENCE)
    serving = (metrics or {}).get("serving") or {}
    method = str(serving.get("method") or "model")
    if method == "shrunk" and serving.get("toward"):
        method = f"shrunk {float(serving.get('weight') or 0):g} toward {serving['toward']}"
    elif method == "floored" and serving.get("toward"):
        method = f"model floored at {serving['toward']}"
    skill = serving.get("skill")
    return Serving(method, None if skill is None else float(skill))


# A version's card is written once, when it is registered: what was read of it holds for the process.
_SERVING_READ: dict[str, Serving] = {}
SERVING_READ_MAX = 1024  # versions remembered (a registry holds a few per signal, horizon and week)


async def serving_by_version(
    connection: AsyncConnection | AsyncSession, versions: Iterable[str]
) -> dict[str, Serving]:
    """`serving_of` each of the model `versions`, read from the registry the first time a version is asked
    for (names it lacks: "model", skill unknown)."""
    wanted = set(versions)
    unread = sorted(v for v in wanted if v not in _SERVING_READ and v != PERSISTENCE)
    if unread:
        query = select(col(ModelVersion.version), col(ModelVersion.metrics)).where(
            col(ModelVersion.version).in_(unread)
        )
        found = (await connection.execute(query)).all()
        if len(_SERVING_READ) + len(found) > SERVING_READ_MAX:
            _SERVING_READ.clear()
        _SERVING_READ.update((version, serving_of(version, metrics)) for version, metrics in found)
    return {version: _SERVING_READ.get(version) or serving_of(version, None) for version in wanted}


# ---------------------------------------------------------------- stored rows as TrackPrediction

# The columns of a stored prediction row, read by name (`predictions_from_rows` also reads the song's
# name, artists and demo flag when the read joins them).
PREDICTION_FIELDS = (
    "track_id", "week", "signal", "region", "horizon_weeks", "current", "value", "lower", "upper",
    "p_chart", "model_version", "cold_start",
)  # fmt: skip


def predictions_from_rows(
    rows: Iterable[Mapping[Any, Any]], serving: Mapping[str, Serving]
) -> list[TrackPrediction]:
    """Stored prediction rows (one per song, signal, region and horizon, ordered by song, signal, region
    and horizon) as one `TrackPrediction` per song, signal and region,"""
    out: list[TrackPrediction] = []
    last: tuple[str, str, str] | None = None
    for row in rows:
        key = (row["track_id"], row["signal"], row["region"])
        if key != last:
            last = key
            out.append(
                TrackPrediction(
                    track_id=row["track_id"],
                    name=row.get("name") or "",
                    artists=row.get("artists") or "",
                    week=row["week"],
                    signal=row["signal"],
                    region=row["region"],
                    current=row["current"],
                    forecasts=[],
                    demo=bool(row.get("demo")),
                )
            )
        served = serving.get(row["model_version"]) or serving_of(row["model_version"], None)
        out[-1].forecasts.append(
            Forecast(
                horizon_weeks=row["horizon_weeks"],
                value=row["value"],
                lower=row["lower"],
                upper=row["upper"],
                p_chart=row["p_chart"],
                model_version=row["model_version"],
                cold_start=bool(row["cold_start"]),
                method=served.method,
                skill=served.skill,
            )
        )
    return out


# Stored prediction rows with their songs' names (`predictions_from_rows` reads them by name).
_STORED = select(
    *(col(getattr(Prediction, name)) for name in PREDICTION_FIELDS),
    col(Track.name),
    col(Track.artist_names).label("artists"),
    col(Track.is_demo).label("demo"),
).join(Track, col(Track.id) == col(Prediction.track_id), isouter=True)


def prediction_data_from_rows(
    rows: Iterable[Mapping[Any, Any]], serving: Mapping[str, Serving]
) -> list[dict[str, Any]]:
    """`predictions_from_rows` as JSON-ready dicts (what `model_dump(mode="json")` gives each), without
    building the objects: the predictor's messages of a whole batch are rebuilt this way after a crash."""
    out: list[dict[str, Any]] = []
    last: tuple[str, str, str] | None = None
    for row in rows:
        key = (row["track_id"], row["signal"], row["region"])
        if key != last:
            last = key
            out.append({
                "track_id": row["track_id"], "name": row.get("name") or "",
                "artists": row.get("artists") or "", "week": row["week"].isoformat(), "signal": row["signal"],
                "region": row["region"], "rank": None, "current": _float(row["current"]), "forecasts": [],
                "demo": bool(row.get("demo")),
            })  # fmt: skip
        served = serving.get(row["model_version"]) or serving_of(row["model_version"], None)
        out[-1]["forecasts"].append({
            "horizon_weeks": int(row["horizon_weeks"]), "value": float(row["value"]),
            "lower": _float(row["lower"]), "upper": _float(row["upper"]), "p_chart": _float(row["p_chart"]),
            "model_version": row["model_version"], "cold_start": bool(row["cold_start"]),
            "method": served.method, "skill": served.skill,
        })  # fmt: skip
    return out


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


async def stored_predictions(
    session: AsyncSession,
    *,
    week: dt.date,
    signal: str | None = None,
    region: str | None = None,
    horizons: Sequence[int] | None = None,
    track_ids: Sequence[str] | None = None,
) -> list[TrackPrediction]:
    """The stored predictions of anchor week `week` (optionally of one signal, region, some horizons or
    songs), with their songs' names, sorted by song, signal and region."""
    rows, serving = await _stored_rows(session, week, signal, region, horizons, track_ids)
    return predictions_from_rows(rows, serving)


async def week_prediction_data(
    session: AsyncSession, *, week: dt.date, chunk_rows: int = 20_000
) -> AsyncGenerator[list[dict[str, Any]], None]:
    """Every stored prediction of anchor week `week` as JSON-ready dicts (`prediction_data_from_rows`),
    by song in Python's order of the ids (code points; MySQL's collation ignores case), in chunks of whole
    songs of about `chunk_rows` rows: one streamed statement, whatever the size of the week (a batch's
    messages rebuilt after a crash)."""
    versions = select(col(Prediction.model_version)).where(col(Prediction.week) == week).distinct()
    serving = await serving_by_version(session, (await session.execute(versions)).scalars().all())
    track_id: Any = col(Prediction.track_id)
    if (await session.connection()).dialect.name == "mysql":
        track_id = track_id.collate("utf8mb4_bin")
    query = _STORED.where(col(Prediction.week) == week).order_by(
        track_id, col(Prediction.signal), col(Prediction.region), col(Prediction.horizon_weeks)
    )
    result = await session.stream(query.execution_options(yield_per=chunk_rows))
    try:
        pending: list[Any] = []
        async for part in result.mappings().partitions():
            rows = pending + list(part)
            cut = len(rows)  # the last song's rows may go on in the next part: kept for it
            while cut and rows[cut - 1]["track_id"] == rows[-1]["track_id"]:
                cut -= 1
            if cut:
                yield prediction_data_from_rows(rows[:cut], serving)
            pending = rows[cut:]
        if pending:
            yield prediction_data_from_rows(pending, serving)
    finally:  # a reader that stops early leaves the rest unread: the connection is freed of it
        await result.close()


async def _stored_rows(
    session: AsyncSession,
    week: dt.date,
    signal: str | None,
    region: str | None,
    horizons: Sequence[int] | None,
    track_ids: Sequence[str] | None,
) -> tuple[Sequence[Mapping[Any, Any]], dict[str, Serving]]:
    """The rows of `stored_predictions` (in its order) and the serving of their model versions."""
    query = (
        _STORED.where(col(Prediction.week) == week)
        .order_by(col(Prediction.track_id), col(Prediction.signal), col(Prediction.region))
        .order_by(col(Prediction.horizon_weeks))
    )
    if signal is not None:
        query = query.where(col(Prediction.signal) == signal)
    if region is not None:
        query = query.where(col(Prediction.region) == region)
    if horizons is not None:
        query = query.where(col(Prediction.horizon_weeks).in_(list(horizons)))
    if track_ids is not None:
        query = query.where(col(Prediction.track_id).in_(list(track_ids)))
    rows = (await session.execute(query)).mappings().all()
    serving = await serving_by_version(session, {row["model_version"] for row in rows})
    return rows, serving


# ---------------------------------------------------------------- history


class HistoryPoint(BaseModel):
    """One week of a song's data: its popularity index and, when it charted, its rank and streams."""

    week: dt.date = Field(description="Monday of the ISO week")
    popularity: int | None = Field(default=None, description="Spotify popularity index 0-100")
    trending: bool = False
    region: str | None = Field(default=None, description="chart region of rank and streams")
    rank: int | None = None
    streams: int | None = None

    @property
    def forecastable(self) -> bool:
        """Whether a forecast uses this week's point. A snapshot without popularity (Development Mode's
        enrichment of a song, written at the current week) changes no forecast."""
        return self.popularity is not None or self.rank is not None

    def value(self, signal: str) -> float | None:
        """The point's value of `signal` (popularity index, or chart streams of its region)."""
        value = self.popularity if signal == Signal.POPULARITY else self.streams
        return None if value is None else float(value)


def merge_history(
    snapshots: Iterable[Mapping[str, Any]], charts: Iterable[Mapping[str, Any]]
) -> list[HistoryPoint]:
    """One song's snapshot rows (week, popularity, trending) and chart rows (week, region, rank, streams)
    as one list, oldest first: a charted week's point carries both its popularity and its rank and streams
    (one point per region; a chart entry without a snapshot is a trending week of unknown popularity)."""
    return [HistoryPoint(**p) for p in merged_points(snapshots, charts)]


def merged_points(
    snapshots: Iterable[Mapping[str, Any]], charts: Iterable[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """`merge_history`'s points as dicts of every `HistoryPoint` field, in the model's order (what the
    resident answers serialise without building the models)."""
    points: dict[tuple[dt.date, str | None], dict[str, Any]] = {}
    for s in snapshots:
        points[(s["week"], None)] = {
            "week": s["week"], "popularity": s["popularity"], "trending": bool(s["trending"]),
            "region": None, "rank": None, "streams": None,
        }  # fmt: skip
    for c in charts:
        base = points.pop((c["week"], None), None)
        streams = None if c["streams"] is None else int(c["streams"])
        points[(c["week"], c["region"])] = {
            "week": c["week"],
            "popularity": None if base is None else base["popularity"],
            "trending": True if base is None else base["trending"],
            "region": c["region"], "rank": c["rank"], "streams": streams,
        }  # fmt: skip
    return sorted(points.values(), key=lambda p: (p["week"], p["region"] or ""))


async def song_histories(
    session: AsyncSession,
    track_ids: Sequence[str],
    *,
    start: dt.date | None = None,
    end: dt.date | None = None,
) -> dict[str, list[HistoryPoint]]:
    """Each song's `merge_history` between `start` and `end` (inclusive; None: unbounded)."""
    if not track_ids:
        return {}
    snapshots = select(
        col(Snapshot.track_id), col(Snapshot.week), col(Snapshot.popularity), col(Snapshot.trending)
    ).where(col(Snapshot.track_id).in_(list(track_ids)))
    charts = select(
        col(ChartEntry.track_id), col(ChartEntry.week), col(ChartEntry.region), col(ChartEntry.rank),
        col(ChartEntry.streams),
    ).where(col(ChartEntry.track_id).in_(list(track_ids)))  # fmt: skip
    if start is not None:
        snapshots, charts = (
            snapshots.where(col(Snapshot.week) >= start),
            charts.where(col(ChartEntry.week) >= start),
        )
    if end is not None:
        snapshots, charts = (
            snapshots.where(col(Snapshot.week) <= end),
            charts.where(col(ChartEntry.week) <= end),
        )
    by_song: dict[str, tuple[list[Any], list[Any]]] = defaultdict(lambda: ([], []))
    for row in (await session.execute(snapshots)).mappings():
        by_song[row["track_id"]][0].append(row)
    for row in (await session.execute(charts)).mappings():
        by_song[row["track_id"]][1].append(row)
    return {track_id: merge_history(s, c) for track_id, (s, c) in by_song.items()}


def series(points: Iterable[HistoryPoint], signal: str, region: str) -> list[tuple[dt.date, float]]:
    """(week, value) of one signal from a song's history, oldest first: streams of the chart `region`, or
    the popularity index (one value per week, whatever regions the week charted in)."""
    values: dict[dt.date, float] = {}
    for point in points:
        value = point.value(signal)
        if value is not None and (signal == Signal.POPULARITY or point.region == region):
            values.setdefault(point.week, value)
    return sorted(values.items())
