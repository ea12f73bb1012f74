"""Per-song forecasts for the REST API: the stored batch forecast when it is up to date with the song's
data, otherwise one computed on the spot (a song asked for by id that was never scored, or a cold start).

Reads are two statements over the song ids (`IN`), so one song and a batch of 100 share one code path
and cost the same two round trips.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Integer,
    Select,
    String,
    bindparam,
    func,
    literal,
    select,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.events import Forecast, TrackPrediction
from shared.models import ChartEntry, Prediction, Snapshot, Track
from shared.weeks import current_week

from .deps import Clients
from .reader import with_retry_on_dropped_connection
from .schemas import HistoryPoint, TrackForecast, TrackInfo
from .service import UnknownTracks, ensure_tracks, forecast
from .settings import PredictorSettings


@dataclass
class SongData:
    """What the database holds about one song, gathered by `load_songs`."""

    info: TrackInfo
    stored: list[TrackPrediction] = field(default_factory=list)
    history: list[HistoryPoint] = field(default_factory=list)
    refreshed_at: dt.datetime | None = None
    latest_week: dt.date | None = None

    @property
    def stored_is_current(self) -> bool:
        """True when a batch forecast exists from the song's latest data week."""
        if not self.stored:
            return False
        return self.latest_week is None or self.stored[0].week >= self.latest_week


def _songs_with_latest_predictions() -> Select[Any]:
    """Each song with its batch predictions of its most recent anchor week (none: one row of NULLs).

    The latest week is a correlated subquery, so the unique (track_id, week, ...) index serves it; a
    GROUP BY derived table would make MariaDB scan a whole week of predictions per request.
    """
    p, q = Prediction.__table__.alias("p"), Prediction.__table__.alias("q")  # type: ignore[attr-defined]
    latest_week = select(func.max(q.c.week)).where(q.c.track_id == col(Track.id)).scalar_subquery()
    return (
        select(
            col(Track.id),
            col(Track.name),
            col(Track.artist_names),
            col(Track.album_id),
            col(Track.release_date),
            col(Track.is_demo),
            p.c.week,
            p.c.signal,
            p.c.region,
            p.c.horizon_weeks,
            p.c.current,
            p.c.value,
            p.c.lower,
            p.c.upper,
            p.c.p_chart,
            p.c.model_version,
            p.c.cold_start,
        )  # fmt: skip
        .outerjoin(p, (p.c.track_id == col(Track.id)) & (p.c.week == latest_week))
        .where(col(Track.id).in_(bindparam("ids", expanding=True)))
        .order_by(col(Track.id), p.c.signal, p.c.region, p.c.horizon_weeks)
    )


def _history_rows() -> Any:
    """Snapshots and chart entries of the songs in one statement (kind 0: snapshot, 1: chart entry)."""
    snapshots = select(
        col(Snapshot.track_id), col(Snapshot.week), col(Snapshot.popularity), col(Snapshot.trending),
        col(Snapshot.updated_at),
        literal(None, String).label("region"), literal(None, Integer).label("rank"),
        literal(None, BigInteger).label("streams"), literal(0, Integer).label("kind"),
    ).where(col(Snapshot.track_id).in_(bindparam("ids", expanding=True)))  # fmt: skip
    charts = select(
        col(ChartEntry.track_id), col(ChartEntry.week), literal(None, Integer), literal(None, Boolean),
        literal(None, DateTime), col(ChartEntry.region), col(ChartEntry.rank), col(ChartEntry.streams),
        literal(1, Integer),
    ).where(col(ChartEntry.track_id).in_(bindparam("ids", expanding=True)))  # fmt: skip
    return union_all(snapshots, charts)


# Built once: constructing these statements costs more than running them.
SONGS_QUERY = _songs_with_latest_predictions()
HISTORY_QUERY = _history_rows()


def _song(row: Any) -> SongData:
    info = TrackInfo(
        id=row[0], name=row[1], artists=row[2], album_id=row[3], release_date=row[4], demo=bool(row[5])
    )
    return SongData(info=info)


def _add_prediction(song: SongData, row: Any) -> None:
    """Add one stored prediction row (one horizon) to the song's per-signal predictions."""
    (week, signal, region, horizon, current, value, lower, upper, p_chart, version, cold) = row[6:]
    if not song.stored or (song.stored[-1].signal, song.stored[-1].region) != (signal, region):
        song.stored.append(
            TrackPrediction(
                track_id=song.info.id,
                name=song.info.name,
                artists=song.info.artists,
                week=week,
                signal=signal,
                region=region,
                current=current,
                forecasts=[],
                demo=song.info.demo,
            )  # fmt: skip
        )
    song.stored[-1].forecasts.append(
        Forecast(
            horizon_weeks=horizon,
            value=value,
            lower=lower,
            upper=upper,
            p_chart=p_chart,
            model_version=version,
            cold_start=bool(cold),
        )  # fmt: skip
    )


def _add_history(songs: dict[str, SongData], rows: Sequence[Any]) -> None:
    """Merge snapshots and chart entries into one list per song: a charted week's point carries both
    its popularity and its rank and streams (one point per region)."""
    points: dict[str, dict[tuple[dt.date, str | None], dict[str, Any]]] = defaultdict(dict)
    for track_id, week, popularity, trending, updated_at, _, _, _, kind in rows:
        if kind == 0:
            points[track_id][(week, None)] = {"week": week, "popularity": popularity, "trending": trending}
            song = songs[track_id]
            if updated_at is not None and (song.refreshed_at is None or updated_at > song.refreshed_at):
                song.refreshed_at = updated_at
    for track_id, week, _, _, _, region, rank, streams, kind in rows:
        if kind == 1:
            song_points = points[track_id]
            base = song_points.pop((week, None), None) or {"week": week, "popularity": None, "trending": True}
            song_points[(week, region)] = {**base, "region": region, "rank": rank, "streams": streams}
    for track_id, song_points in points.items():
        ordered = sorted(song_points.values(), key=lambda p: (p["week"], p.get("region") or ""))
        songs[track_id].history = [HistoryPoint(**p) for p in ordered]
        songs[track_id].latest_week = ordered[-1]["week"] if ordered else None


async def load_songs(*, reader: AsyncEngine, track_ids: Sequence[str]) -> dict[str, SongData]:
    """Stored facts about the songs the database holds (unknown ids are absent): two statements."""
    return await with_retry_on_dropped_connection(lambda: _load_songs(reader, track_ids))


async def _load_songs(reader: AsyncEngine, track_ids: Sequence[str]) -> dict[str, SongData]:
    songs: dict[str, SongData] = {}
    async with reader.connect() as connection:
        for row in (await connection.execute(SONGS_QUERY, {"ids": list(track_ids)})).all():
            song = songs.get(row[0]) or songs.setdefault(row[0], _song(row))
            if row[6] is not None:
                _add_prediction(song, row)
        if songs:
            _add_history(songs, (await connection.execute(HISTORY_QUERY, {"ids": list(songs)})).all())
    return songs


async def compute_on_demand(
    *, session: AsyncSession, settings: PredictorSettings, songs: Sequence[SongData]
) -> dict[str, list[TrackPrediction]]:
    """Forecasts computed now for songs without an up-to-date batch forecast, anchored at each song's
    latest data week (songs are grouped by that week: one model call per group)."""
    by_week: dict[dt.date, list[str]] = defaultdict(list)
    for song in songs:
        by_week[song.latest_week or current_week()].append(song.info.id)
    result: dict[str, list[TrackPrediction]] = defaultdict(list)
    for week, ids in by_week.items():
        for prediction in await forecast(session=session, settings=settings, week=week, track_ids=ids):
            result[prediction.track_id].append(prediction)
    return result


async def forecasts_for(*, clients: Clients, track_ids: Sequence[str]) -> list[TrackForecast]:
    """Full forecasts (current values, 26/52-week forecasts with intervals, history) of stored songs,
    in the order asked; ids the database does not hold are skipped."""
    songs = await load_songs(reader=clients.reader, track_ids=track_ids)
    stale = [song for song in songs.values() if not song.stored_is_current]
    fresh: dict[str, list[TrackPrediction]] = {}
    if stale:
        async with clients.sessions() as session:
            fresh = await compute_on_demand(session=session, settings=clients.settings, songs=stale)
    result = []
    for track_id in track_ids:
        song = songs.get(track_id)
        if song is None:
            continue
        on_demand = not song.stored_is_current
        predictions = fresh.get(track_id, []) if on_demand else song.stored
        result.append(
            TrackForecast(
                track=song.info,
                predictions=sorted(predictions, key=lambda p: (p.signal != "popularity", p.region)),
                history=song.history,
                data_refreshed_at=song.refreshed_at,
                source="on_demand" if on_demand else "batch",
                cold_start=not predictions or any(f.cold_start for p in predictions for f in p.forecasts),
            )
        )
    return result


async def _forecasts(*, clients: Clients, track_ids: list[str]) -> tuple[list[TrackForecast], list[str]]:
    """Forecasts of `track_ids` (songs never seen are fetched from Spotify and stored first) and the ids
    Spotify does not know."""
    found = await forecasts_for(clients=clients, track_ids=track_ids)
    missing = [i for i in track_ids if i not in {f.track.id for f in found}]
    if not missing:
        return found, []
    try:
        await ensure_tracks(
            sessions=clients.sessions,
            spotify=clients.spotify,
            track_ids=missing,
            demo=clients.settings.uses_emulator,
        )
        not_found: list[str] = []
    except UnknownTracks as exc:
        not_found = exc.ids
    fetched = [i for i in missing if i not in set(not_found)]
    if fetched:
        found += await forecasts_for(clients=clients, track_ids=fetched)
    return found, not_found


async def forecast_bodies(*, clients: Clients, track_ids: list[str]) -> tuple[list[bytes], list[str]]:
    """The JSON `TrackForecast` of each song Spotify knows, in the order asked (from the cache when it
    holds them), and the ids Spotify does not know."""
    cache = clients.cache
    version = await cache.current_version()
    bodies = {i: body for i in track_ids if (body := cache.get(i)) is not None}
    wanted = [i for i in track_ids if i not in bodies]
    not_found: list[str] = []
    if wanted:
        found, not_found = await _forecasts(clients=clients, track_ids=wanted)
        for forecast in found:
            body = forecast.model_dump_json().encode()
            bodies[forecast.track.id] = body
            cache.put(forecast.track.id, body, built_at_version=version)
    return [bodies[i] for i in track_ids if i in bodies], not_found
