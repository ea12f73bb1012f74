"""The resident answers built straight from the rows (see the package's docstring).

The plain build (`tracks.load_songs`, `tracks._answer`) turns each song's rows into pydantic objects
(`TrackInfo`, `TrackPrediction`, `Forecast`, `HistoryPoint`, `TrackForecast`) and serialises them: about
300 us a song, most of a resident build. Here the same rows become plain dicts in the models' field order,
serialised by orjson (numbers, dates and strings come out as pydantic-core's encoder, the one
`model_dump_json` runs, writes them: `as_json`): the same bytes (tests compare them with the plain
build's), a tenth of the time.

Two ways to read a chunk's rows, the same rows either way:
- listed: three statements over the ids (`IN`), each served by the tables' indexes on track_id: for a few
  songs, or songs scattered over the catalogue;
- by range: a dense chunk (a whole rebuild after a new week) is read as the id range it spans, five
  statements that scan each table's track_id index over that range (and the week's predictions by their
  primary key) instead of one lookup per id: about a third of the database's time for a chunk, measured.
The JSON is built on the event loop and compressed in a worker thread (ISA-L, like zlib, lets go of the
GIL), so the next chunk is read and built while this one is compressed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import operator
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import BindParameter, DateTime, bindparam, func, select, type_coerce
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel import col

from shared.ids import TRACK_ID
from shared.models import ChartEntry, Prediction, Snapshot, Track
from shared.predictions import (
    SONG_KEY_ONLY,
    SONG_WEEKS_ONLY,
    latest_batch_week,
    merged_points,
    serving_by_version,
)
from shared.signals import Signal

from ..batch_answers import PREDICTION_COLUMNS, ScoredWeek
from ..reader import with_retry_on_dropped_connection

# The columns of a song (`Track`), as its answer reads them by position.
TRACK_COLUMNS = (col(Track.id), col(Track.name), col(Track.artist_names), col(Track.album_id),
                 col(Track.release_date), col(Track.is_demo))  # fmt: skip
TRACK_WIDTH = len(TRACK_COLUMNS)


def _statements() -> tuple[Any, Any, Any, Any]:
    """The songs with their predictions of their latest anchor week (one row per signal, region and horizon,
    a row of NULLs when none), the songs alone, their snapshots, their chart entries: rows of plain
    columns, no padding."""
    p, q = Prediction.__table__.alias("p"), Prediction.__table__.alias("q")  # type: ignore[attr-defined]
    ids: BindParameter[list[str]] = bindparam("ids", expanding=True)
    latest_week = (
        select(func.max(q.c.week))
        .where(q.c.track_id == col(Track.id))
        .with_hint(q, SONG_WEEKS_ONLY, "mysql")
        .scalar_subquery()
    )
    songs = (
        select(*TRACK_COLUMNS, *(p.c[name] for name in PREDICTION_COLUMNS))
        .outerjoin(p, (p.c.track_id == col(Track.id)) & (p.c.week == latest_week))
        .with_hint(p, SONG_KEY_ONLY, "mysql")
        .where(col(Track.id).in_(ids))
        .order_by(col(Track.id), p.c.signal, p.c.region, p.c.horizon_weeks)
    )
    tracks = select(*TRACK_COLUMNS).where(col(Track.id).in_(ids))
    snapshots = _snapshot_rows().where(col(Snapshot.track_id).in_(ids))
    charts = _chart_rows().where(col(ChartEntry.track_id).in_(ids))
    return songs, tracks, snapshots, charts


def _snapshot_rows() -> Any:
    """Snapshot rows, the write stamps as the driver reads them: only each song's newest becomes an aware
    UTC datetime."""
    return select(
        col(Snapshot.track_id), col(Snapshot.week), col(Snapshot.popularity), col(Snapshot.trending),
        type_coerce(col(Snapshot.updated_at), DateTime()),
    )  # fmt: skip


def _chart_rows() -> Any:
    """Chart rows in region order within a week, as the plain read: which region's point carries the
    popularity."""
    return select(
        col(ChartEntry.track_id), col(ChartEntry.week), col(ChartEntry.region), col(ChartEntry.rank),
        col(ChartEntry.streams),
    ).order_by(col(ChartEntry.track_id), col(ChartEntry.week), col(ChartEntry.region))  # fmt: skip


def _range_statements() -> tuple[Any, Any, Any, Any, Any]:
    """The rows of `_statements` for every song whose id lies between `lo` and `hi` (the database's
    collation): the songs, each song's latest anchor week, the predictions of one anchor week `week`
    (the songs' usual latest week: by its primary key), the snapshots and the chart entries."""
    p = Prediction.__table__  # type: ignore[attr-defined]
    lo: BindParameter[str] = bindparam("lo")
    hi: BindParameter[str] = bindparam("hi")
    songs = select(*TRACK_COLUMNS).where(col(Track.id).between(lo, hi))
    latest = (
        select(p.c.track_id, func.max(p.c.week))
        .where(p.c.track_id.between(lo, hi))
        .with_hint(p, SONG_WEEKS_ONLY, "mysql")
        .group_by(p.c.track_id)
    )
    predictions = (
        select(p.c.track_id, *(p.c[name] for name in PREDICTION_COLUMNS))
        .where(p.c.week == bindparam("week"), p.c.track_id.between(lo, hi))
        .order_by(p.c.track_id, p.c.signal, p.c.region, p.c.horizon_weeks)
    )
    snapshots = _snapshot_rows().where(col(Snapshot.track_id).between(lo, hi))
    charts = _chart_rows().where(col(ChartEntry.track_id).between(lo, hi))
    return songs, latest, predictions, snapshots, charts


# built once: constructing them costs more than running them
SONGS, TRACKS, SNAPSHOTS, CHARTS = _statements()
RANGE_SONGS, RANGE_LATEST, RANGE_PREDICTIONS, RANGE_SNAPSHOTS, RANGE_CHARTS = _range_statements()
RANGE_MIN_SONGS = 200  # a chunk of at least this many songs may be read by range ...
RANGE_MIN_SHARE = 0.5  # ... when at least this share of the songs in its range are the chunk's
BUILD_SLICE = 250  # songs built between two yields to the event loop (requests wait no longer than that)
# Rows are read as tuples, unpacked by position: where a prediction row's model version is.
MODEL_VERSION = PREDICTION_COLUMNS.index("model_version")
STAMP = Snapshot.__table__.c.updated_at.type  # type: ignore[attr-defined]  # what the plain read gives

Rows = dict[str, list[Any]]  # a kind of row, by song, in the order read


@dataclass
class ChunkRows:
    """What the answers of a chunk of songs are built from, by song: the song (`TRACK_COLUMNS`), its
    predictions of its latest anchor week (`PREDICTION_COLUMNS`, by signal, region and horizon; none
    without), its snapshots and its chart entries (as read)."""

    tracks: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    predictions: Rows = field(default_factory=dict)
    snapshots: Rows = field(default_factory=dict)
    charts: Rows = field(default_factory=dict)

    def update(self, other: ChunkRows) -> None:
        """Take the songs of `other` (read apart) as it has them."""
        self.tracks.update(other.tracks)
        self.predictions.update(other.predictions)
        self.snapshots.update((i, other.snapshots.get(i, [])) for i in other.tracks)
        self.charts.update((i, other.charts.get(i, [])) for i in other.tracks)


async def gzipped_bodies(
    *,
    reader: AsyncEngine,
    track_ids: Sequence[str],
    gzipped: Callable[[bytes], bytes],
    batch: ScoredWeek | None = None,
) -> dict[str, bytes]:
    """The `gzipped` JSON answers of those songs whose batch forecast is up to date, by id. The predictions
    of the songs of `batch` (the stored batch of the latest week, while no other write followed it) are
    its rows rather than read back."""

    async def read() -> dict[str, bytes]:
        async with reader.connect() as connection:
            batch_week = await latest_batch_week(connection)
            scored = batch if batch is not None and batch.week == batch_week else None
            rows = await _rows(connection, list(track_ids), scored)
            versions = {row[MODEL_VERSION] for song in rows.predictions.values() for row in song}
            serving = await serving_by_version(connection, versions)
        methods = {version: (s.method, s.skill) for version, s in serving.items()}
        return await _json_bodies(rows, batch_week, methods, reader.dialect)

    bodies = await with_retry_on_dropped_connection(read)
    return await asyncio.to_thread(_compressed, bodies, gzipped)


def _compressed(bodies: dict[str, bytes], gzipped: Callable[[bytes], bytes]) -> dict[str, bytes]:
    return {track_id: gzipped(body) for track_id, body in bodies.items()}


async def _json_bodies(
    rows: ChunkRows,
    batch_week: dt.date | None,
    methods: dict[str, tuple[str, float | None]],
    dialect: Dialect,
) -> dict[str, bytes]:
    """The JSON answers of the songs of `rows` that have one, yielding to the event loop now and then."""
    bodies: dict[str, bytes] = {}
    for n, (track_id, predictions) in enumerate(rows.predictions.items()):
        if n and n % BUILD_SLICE == 0:
            await asyncio.sleep(0)
        history = rows.snapshots.get(track_id, []), rows.charts.get(track_id, [])
        answer = _answer(rows.tracks[track_id], predictions, *history, batch_week, methods)
        if answer is not None and TRACK_ID.match(track_id):
            answer["data_refreshed_at"] = _utc(answer["data_refreshed_at"], dialect)
            bodies[track_id] = as_json(answer)
    return bodies


async def _rows(connection: AsyncConnection, ids: list[str], batch: ScoredWeek | None) -> ChunkRows:
    """The songs' rows: the predictions of the songs of `batch` from it, the others' read back."""
    scored = [i for i in ids if i in batch] if batch is not None else []
    if batch is None or not scored:
        return await _read_rows(connection, ids)
    found = await _song_data(connection, scored)
    found.predictions = batch.predictions([i for i in scored if i in found.tracks])
    others = [i for i in ids if i not in batch]
    if others:
        found.update(await _read_rows(connection, others))
    return found


async def _read_rows(connection: AsyncConnection, ids: list[str]) -> ChunkRows:
    """The songs' rows (`_statements`), predictions included: by range when the chunk is dense enough,
    else listed."""
    if len(ids) >= RANGE_MIN_SONGS:
        found = await _range_rows(connection, ids)
        if found is not None:
            return found
    return await _listed_rows(connection, ids)


async def _listed_rows(connection: AsyncConnection, ids: list[str]) -> ChunkRows:
    songs = _by_song(await _tuples(connection, SONGS, {"ids": ids}))
    found = await _listed_data(connection, ids, {i: rows[0][:TRACK_WIDTH] for i, rows in songs.items()})
    predicted = {i: rows for i, rows in songs.items() if rows[0][TRACK_WIDTH] is not None}  # a week
    found.predictions = {i: [row[TRACK_WIDTH:] for row in rows] for i, rows in predicted.items()}
    return found


async def _listed_data(
    connection: AsyncConnection, ids: list[str], tracks: dict[str, tuple[Any, ...]] | None = None
) -> ChunkRows:
    """The songs, snapshots and chart entries of `ids` (the songs read here unless given)."""
    if tracks is None:
        tracks = {row[0]: tuple(row) for row in await _tuples(connection, TRACKS, {"ids": ids})}
    snapshots = _by_song(await _tuples(connection, SNAPSHOTS, {"ids": ids}))
    charts = _by_song(await _tuples(connection, CHARTS, {"ids": ids}))
    return ChunkRows(tracks, {}, snapshots, charts)


async def _song_data(connection: AsyncConnection, ids: list[str]) -> ChunkRows:
    """The songs, snapshots and chart entries of `ids`, without predictions: by range when dense enough
    (ids the range does not hold read listed), else listed."""
    found = await _range_data(connection, ids) if len(ids) >= RANGE_MIN_SONGS else None
    if found is None:
        return await _listed_data(connection, ids)
    outside = [i for i in ids if i not in found.tracks]
    if outside:
        found.update(await _listed_data(connection, outside))
    return found


def _bounds(connection: AsyncConnection, ids: list[str]) -> dict[str, str]:
    """The range the ids span: its ends in the database's order (MariaDB compares ids without case)."""
    order = str.upper if connection.dialect.name == "mysql" else None
    return {"lo": min(ids, key=order), "hi": max(ids, key=order)}


async def _range_data(connection: AsyncConnection, ids: list[str]) -> ChunkRows | None:
    """The songs of `ids` the range they span holds, with every snapshot and chart entry of the range;
    None when the chunk's songs are too few of the range's."""
    bounds = _bounds(connection, ids)
    tracks = await _tuples(connection, RANGE_SONGS, bounds)
    wanted = set(ids)
    kept = {row[0]: tuple(row) for row in tracks if row[0] in wanted}
    if len(kept) < RANGE_MIN_SHARE * len(tracks):
        return None
    snapshots = _by_song(await _tuples(connection, RANGE_SNAPSHOTS, bounds))
    charts = _by_song(await _tuples(connection, RANGE_CHARTS, bounds))
    return ChunkRows(kept, {}, snapshots, charts)


async def _range_rows(connection: AsyncConnection, ids: list[str]) -> ChunkRows | None:
    """The rows `_listed_rows` reads, read over the range of ids the chunk spans (None when the chunk's
    songs are too few of the range's). The songs whose latest anchor week is the range's usual one get
    that week's predictions; the others, and ids the range did not hold (an id out of the collation's
    order), are read listed."""
    found = await _range_data(connection, ids)
    if found is None:
        return None
    bounds = _bounds(connection, ids)
    latest = dict(await _tuples(connection, RANGE_LATEST, bounds))
    weeks = Counter(latest[i] for i in found.tracks if i in latest)
    if weeks:
        week = weeks.most_common(1)[0][0]
        predictions = _by_song(await _tuples(connection, RANGE_PREDICTIONS, {**bounds, "week": week}))
        found.predictions = {
            i: [row[1:] for row in predictions[i]]
            for i in found.tracks
            if latest.get(i) == week and i in predictions
        }
    # a song without predictions has no answer; one of another week, or out of the range, is read listed
    others = [i for i in ids if i not in found.predictions and (i in latest or i not in found.tracks)]
    if others:
        found.update(await _listed_rows(connection, others))
    return found


async def _tuples(connection: AsyncConnection, statement: Any, params: dict[str, Any]) -> Sequence[Any]:
    """The statement's rows. On MySQL/MariaDB the tuples the driver handed over, without SQLAlchemy's row
    objects and result processing (~60% of the read's CPU, measured): the same values, except booleans as
    0/1 (the builders apply `bool`). Elsewhere through the result (SQLite hands dates back as text)."""
    result = await connection.execute(statement, params)
    if connection.dialect.name != "mysql":
        return result.all()
    try:
        return result.cursor.fetchall()  # the async drivers' adapter has fetched every row already
    finally:
        result.close()


def _by_song(rows: Sequence[Any]) -> Rows:
    """Rows by their song (the first column), each song's in the order read."""
    grouped: Rows = defaultdict(list)
    for row in rows:
        grouped[row[0]].append(row)
    return grouped


def _answer(
    track: tuple[Any, ...],
    rows: list[Any],
    snapshots: list[Any],
    charts: list[Any],
    batch_week: dt.date | None,
    methods: dict[str, tuple[str, float | None]],
) -> dict[str, Any] | None:
    """One song's `TrackForecast` as a dict, None when it has no up-to-date batch forecast
    (`tracks.SongData.stored_is_current`)."""
    track_id, name, artists, album_id, release_date, demo = track
    if not rows:
        return None
    week = rows[0][0]
    points, latest = _points(snapshots, charts)
    if not (latest is None or week >= latest or week == batch_week):
        return None
    predictions = _predictions(track, rows, methods)
    if len(predictions) > 1:
        predictions.sort(key=_shown_first)
    return {
        "track": {
            "id": track_id, "name": name, "artists": artists, "album_id": album_id,
            "release_date": release_date, "demo": bool(demo),
        },
        "predictions": predictions,
        "history": points,
        "data_refreshed_at": max((row[4] for row in snapshots if row[4] is not None), default=None),
        "source": "batch",
        "cold_start": any(f["cold_start"] for p in predictions for f in p["forecasts"]),
    }  # fmt: skip


def _shown_first(prediction: dict[str, Any]) -> tuple[bool, str]:
    """The answer's order of its predictions: popularity first, then by region."""
    return prediction["signal"] != Signal.POPULARITY, prediction["region"]


def _points(snapshots: list[Any], charts: list[Any]) -> tuple[list[dict[str, Any]], dt.date | None]:
    """The song's `merged_points` and the latest week of data a forecast uses (a known popularity or a
    chart rank); for a song that never charted (most songs) the same points made straight from its
    snapshot rows, one per week, in week order."""
    if charts:
        points = merged_points(
            [{"week": w, "popularity": p, "trending": t} for _, w, p, t, _ in snapshots],
            [{"week": w, "region": r, "rank": n, "streams": s} for _, w, r, n, s in charts],
        )
        used = (p["week"] for p in points if p["popularity"] is not None or p["rank"] is not None)
        return points, max(used, default=None)
    ordered = sorted(snapshots, key=WEEK_OF)
    points = [
        {"week": w, "popularity": p, "trending": bool(t), "region": None, "rank": None, "streams": None}
        for _, w, p, t, _ in ordered
    ]  # fmt: skip
    return points, max((row[1] for row in ordered if row[2] is not None), default=None)


WEEK_OF = operator.itemgetter(1)  # a snapshot row's week


def _predictions(
    track: tuple[Any, ...], rows: list[Any], methods: dict[str, tuple[str, float | None]]
) -> list[dict[str, Any]]:
    """The song's prediction rows (ordered by signal, region, horizon) as `TrackPrediction` dicts."""
    track_id, name, artists, _, _, demo = track
    out: list[dict[str, Any]] = []
    last: tuple[str, str] | None = None
    for week, signal, region, horizon, current, value, lower, upper, p_chart, version, cold_start in rows:
        if (signal, region) != last:
            last = (signal, region)
            out.append({
                "track_id": track_id, "name": name or "", "artists": artists or "", "week": week,
                "signal": signal, "region": region, "rank": None, "current": _float(current),
                "forecasts": [], "demo": bool(demo),
            })  # fmt: skip
        method, skill = methods[version]
        out[-1]["forecasts"].append({
            "horizon_weeks": horizon, "value": float(value), "lower": _float(lower), "upper": _float(upper),
            "p_chart": _float(p_chart), "model_version": version, "cold_start": bool(cold_start),
            "method": method, "skill": skill,
        })  # fmt: skip
    return out


def as_json(answer: dict[str, Any]) -> bytes:
    """JSON as `model_dump_json` writes it: compact, floats in their shortest form, non-finite ones as null
    (the models' default), UTC stamps with `Z`. orjson writes the same bytes as pydantic-core's encoder (all
    100,000 answers of the bench-scale database, 400,000 random doubles, the awkward values of the tests) in
    two thirds of its time."""
    return orjson.dumps(answer, option=orjson.OPT_UTC_Z)


def _utc(stamp: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
    """The newest write stamp as the plain read gives every stamp (an aware UTC datetime)."""
    return None if stamp is None else STAMP.process_result_value(stamp, dialect)


def _float(value: Any) -> float | None:
    """A float field's value as pydantic validates it (an int becomes a float: `71.0`, not `71`)."""
    return None if value is None else float(value)
