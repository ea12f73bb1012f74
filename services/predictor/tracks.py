"""Per-song forecasts for the REST API: the stored batch forecast when it is up to date with the song's
data, otherwise one computed on the spot (a song asked for by id that was never scored, or a cold start).

Reads are two statements over the song ids (`IN`), so one song and a batch of 100 share one code path
and cost the same two round trips.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    BindParameter,
    Integer,
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
from shared.ids import TRACK_ID
from shared.models import ChartEntry, Prediction, Snapshot, Track
from shared.unknown_tracks import recently_unknown
from shared.weeks import current_week

from .cache import RESIDENT_HITS, changed_songs, data_version, left_the_batch
from .deps import Clients
from .reader import with_retry_on_dropped_connection
from .schemas import HistoryPoint, TrackForecast, TrackInfo
from .service import UnknownTracks, ensure_tracks, forecast_at
from .settings import PredictorSettings


@dataclass
class SongData:
    """What the database holds about one song, gathered by `load_songs`."""

    info: TrackInfo
    stored: list[TrackPrediction] = field(default_factory=list)
    history: list[HistoryPoint] = field(default_factory=list)
    refreshed_at: dt.datetime | None = None
    latest_week: dt.date | None = None  # of the data a forecast uses: chart entries, known popularity
    batch_week: dt.date | None = None  # of the latest batch (`/v1/trending`), for every song

    @property
    def stored_is_current(self) -> bool:
        """True when a batch forecast exists from the song's latest data week, or from the latest batch:
        a trending song's answer is its `/v1/trending` row, even when data of a later week came in since
        (Extended Quota's popularity of the current week, after last week's chart), until the next batch."""
        if not self.stored:
            return False
        week = self.stored[0].week
        return self.latest_week is None or week >= self.latest_week or week == self.batch_week


GZIP_LEVEL = 5  # ~5x smaller JSON for ~30 us per answer built
SONG, SNAPSHOT, CHART = 0, 1, 2  # the kinds of row `SONG_ROWS` returns
# A union's columns take the first select's types: the SONG rows' empty updated_at must have the snapshot
# column's type, so that `data_refreshed_at` reads back as UTC (serialised with its `Z`).
UPDATED_AT_TYPE = Snapshot.__table__.c.updated_at.type  # type: ignore[attr-defined]


# Right after a bulk write the table's statistics can say "nearly empty" until InnoDB recounts them, and
# MariaDB then scanned the whole prediction table once per song (12 s for 500 songs at 10,000 songs):
# the lookups by song go through the unique (track_id, week, ...) index whatever the statistics say.
UNIQUE_KEY_ONLY = "FORCE INDEX (uq_prediction_key)"


def _latest_batch_week() -> Any:
    latest = Prediction.__table__.alias("latest")  # type: ignore[attr-defined]
    return select(func.max(latest.c.week)).scalar_subquery()


def _song_rows() -> tuple[Any, Any, Any]:
    """Everything a forecast response needs, as three selects over the song ids with one column layout:

    - kind SONG: the song and its batch predictions of its latest anchor week, one row per signal,
      region and horizon (one row of NULL predictions when it has none). The latest week is a correlated
      subquery, answered by the unique (track_id, week, ...) index per song (forced: `UNIQUE_KEY_ONLY`),
      a plan the optimizer cannot get wrong. (A GROUP BY derived table was ~20% faster for a bulk read of
      500 songs with fresh table statistics, but right after a bulk write MariaDB sorted whole derived
      tables for minutes per statement, issue 14.)
    - kind SNAPSHOT: week, popularity (column 9), trending (16), updated_at (17);
    - kind CHART: week, region (8), rank (9), streams (10).

    Column 19 of the SONG rows is the week of the latest batch (served by the index on the week).
    """
    p, q = Prediction.__table__.alias("p"), Prediction.__table__.alias("q")  # type: ignore[attr-defined]
    ids: BindParameter[list[str]] = bindparam("ids", expanding=True)
    songs = select(
        col(Track.id).label("track_id"), col(Track.name), col(Track.artist_names), col(Track.album_id),
        col(Track.release_date), col(Track.is_demo), p.c.week, p.c.signal, p.c.region,
        p.c.horizon_weeks.label("number"), p.c.current, p.c.value, p.c.lower, p.c.upper, p.c.p_chart,
        p.c.model_version, p.c.cold_start.label("flag"), literal(None, UPDATED_AT_TYPE).label("updated_at"),
        literal(SONG, Integer).label("kind"), _latest_batch_week().label("batch_week"),
    ).where(col(Track.id).in_(ids))  # fmt: skip
    latest_week = (
        select(func.max(q.c.week))
        .where(q.c.track_id == col(Track.id))
        .with_hint(q, UNIQUE_KEY_ONLY, "mysql")
        .scalar_subquery()
    )
    songs = songs.outerjoin(p, (p.c.track_id == col(Track.id)) & (p.c.week == latest_week)).with_hint(
        p, UNIQUE_KEY_ONLY, "mysql"
    )
    blank = [literal(None)] * 5
    snapshots = select(
        col(Snapshot.track_id), *blank, col(Snapshot.week), literal(None), literal(None),
        col(Snapshot.popularity), *blank, literal(None), col(Snapshot.trending), col(Snapshot.updated_at),
        literal(SNAPSHOT, Integer), literal(None),
    ).where(col(Snapshot.track_id).in_(ids))  # fmt: skip
    charts = select(
        col(ChartEntry.track_id), *blank, col(ChartEntry.week), literal(None), col(ChartEntry.region),
        col(ChartEntry.rank), col(ChartEntry.streams), *blank[:4], literal(None), literal(None),
        literal(None), literal(CHART, Integer), literal(None),
    ).where(col(ChartEntry.track_id).in_(ids))  # fmt: skip
    return songs, snapshots, charts


# Built once: constructing the statements costs more than running them.
# A request's read is ONE statement: a round trip is what it costs most.
SONG_ROWS = union_all(*_song_rows()).order_by("kind", "track_id", "signal", "region", "number")
# A bulk read (resident answers) runs the parts one by one: for a thousand songs MariaDB answers them in
# about half the union's time (no sort of the whole result; measured on the bench-api database).
_BULK_SONGS, _BULK_SNAPSHOTS, _BULK_CHARTS = _song_rows()
BULK_SONG_ROWS = (
    _BULK_SONGS.order_by("track_id", "signal", "region", "number"),
    _BULK_SNAPSHOTS,
    _BULK_CHARTS,
)


def _song(row: Any) -> SongData:
    info = TrackInfo(
        id=row[0], name=row[1], artists=row[2], album_id=row[3], release_date=row[4], demo=bool(row[5])
    )
    return SongData(info=info, batch_week=row[19])


def _add_prediction(song: SongData, row: Any) -> None:
    """Add one stored prediction row (one horizon) to the song's per-signal predictions."""
    (week, signal, region, horizon, current, value, lower, upper, p_chart, version, cold) = row[6:17]
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
    """Merge snapshot and chart rows into one list per song: a charted week's point carries both its
    popularity and its rank and streams (one point per region)."""
    points: dict[str, dict[tuple[dt.date, str | None], dict[str, Any]]] = defaultdict(dict)
    for row in rows:  # snapshots come before chart entries (ordered by kind)
        track_id, week, kind = row[0], row[6], row[18]
        if kind == SNAPSHOT:
            points[track_id][(week, None)] = {"week": week, "popularity": row[9], "trending": bool(row[16])}
            song, updated_at = songs[track_id], row[17]
            if updated_at is not None and (song.refreshed_at is None or updated_at > song.refreshed_at):
                song.refreshed_at = updated_at
        elif kind == CHART:
            song_points = points[track_id]
            base = song_points.pop((week, None), None) or {"week": week, "popularity": None, "trending": True}
            streams = None if row[10] is None else int(row[10])
            song_points[(week, row[8])] = {**base, "region": row[8], "rank": row[9], "streams": streams}
    for track_id, song_points in points.items():
        ordered = sorted(song_points.values(), key=lambda p: (p["week"], p.get("region") or ""))
        songs[track_id].history = [HistoryPoint(**p) for p in ordered]
        songs[track_id].latest_week = max((p["week"] for p in ordered if _forecastable(p)), default=None)


def _forecastable(point: dict[str, Any]) -> bool:
    """Whether a forecast uses this week's point. A snapshot without popularity (Development Mode's
    enrichment of a song, written at the current week) changes no forecast: counting it would make the
    batch forecast of the chart week look out of date, and the on-demand one at a week without data
    would be empty."""
    return point["popularity"] is not None or "rank" in point


async def load_songs(*, reader: AsyncEngine, track_ids: Sequence[str]) -> dict[str, SongData]:
    """Stored facts about the songs the database holds (unknown ids are absent): one statement."""
    return await with_retry_on_dropped_connection(lambda: _load_songs(reader, track_ids))


async def _load_songs(reader: AsyncEngine, track_ids: Sequence[str]) -> dict[str, SongData]:
    async with reader.connect() as connection:
        rows = (await connection.execute(SONG_ROWS, {"ids": list(track_ids)})).all()
    return _songs_from_rows(rows)


async def load_songs_in_bulk(*, reader: AsyncEngine, track_ids: Sequence[str]) -> dict[str, SongData]:
    """`load_songs` for a thousand songs or so: the same rows, read part by part."""

    async def read() -> list[Any]:
        rows: list[Any] = []
        async with reader.connect() as connection:
            for part in BULK_SONG_ROWS:
                rows += (await connection.execute(part, {"ids": list(track_ids)})).all()
        return rows

    return _songs_from_rows(await with_retry_on_dropped_connection(read))


def _songs_from_rows(rows: Sequence[Any]) -> dict[str, SongData]:
    """The songs of `SONG_ROWS`-shaped rows: the SONG rows first, in order, then the others."""
    songs: dict[str, SongData] = {}
    for row in rows:
        if row[18] != SONG:
            break
        song = songs.get(row[0]) or songs.setdefault(row[0], _song(row))
        if row[6] is not None:
            _add_prediction(song, row)
    _add_history(songs, [row for row in rows if row[18] != SONG and row[0] in songs])
    return songs


async def compute_on_demand(
    *, session: AsyncSession, settings: PredictorSettings, songs: Sequence[SongData]
) -> dict[str, list[TrackPrediction]]:
    """Forecasts computed now for songs without an up-to-date batch forecast, anchored at each song's
    latest data week (one load and one scoring pass for all of them: `service.forecast_at`)."""
    anchors = {song.info.id: song.latest_week or current_week() for song in songs}
    result: dict[str, list[TrackPrediction]] = defaultdict(list)
    for prediction in await forecast_at(session=session, settings=settings, anchors=anchors):
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
        if song is not None:
            result.append(_answer(song, fresh.get(track_id, [])))
    return result


def _answer(song: SongData, on_demand: list[TrackPrediction]) -> TrackForecast:
    """The response for `song`: its batch forecast when current, else the one computed for it now."""
    # The batch forecast also stands when the newer data gave no forecast: never an empty answer for it.
    batch = song.stored_is_current or (bool(song.stored) and not on_demand)
    predictions = song.stored if batch else on_demand
    return TrackForecast(
        track=song.info,
        predictions=sorted(predictions, key=lambda p: (p.signal != "popularity", p.region)),
        history=song.history,
        data_refreshed_at=song.refreshed_at,
        source="batch" if batch else "on_demand",
        cold_start=not predictions or any(f.cold_start for p in predictions for f in p.forecasts),
    )


def _gzipped(forecast: TrackForecast) -> bytes:
    return gzip.compress(forecast.model_dump_json().encode(), compresslevel=GZIP_LEVEL, mtime=0)


RESIDENT_CHUNK = 500  # songs read per statement by a resident build (larger: faster, longer pauses)
RESIDENT_PARALLEL = 2  # chunks read at once: the database works on one while this process builds another


async def build_answers(*, reader: AsyncEngine, track_ids: Sequence[str]) -> dict[str, bytes]:
    """The gzipped answers of those songs whose batch forecast is up to date (the others have none: their
    answer is computed on request)."""
    songs = await load_songs_in_bulk(reader=reader, track_ids=track_ids)
    # only ids the route accepts as they are: the fast path looks answers up by the id in the path
    kept = [s for i, s in songs.items() if s.stored_is_current and TRACK_ID.match(i)]
    return {song.info.id: _gzipped(_answer(song, [])) for song in kept}


async def apply_changes(*, clients: Clients) -> None:
    """When the data version moved (read at most once per `check_seconds`, or at once when woken), drop
    the answers of the songs whose rows changed and queue them for a rebuild."""
    resident, cache = clients.resident, clients.cache
    if time.monotonic() - resident.checked_at < cache.check_seconds and not resident.wake.is_set():
        return
    resident.wake.clear()
    version = await data_version(clients.reader)  # before the look: what commits later moves it again
    if version != resident.version:
        changed, resident.watermark = await changed_songs(clients.reader, resident.watermark)
        left, resident.batch_week = await left_the_batch(clients.reader, resident.batch_week)
        resident.drop(changed | left)
        resident.version = version
    resident.checked_at = time.monotonic()


async def refresh_resident(*, clients: Clients) -> None:
    """Bring the resident answers up to date: apply data changes, then rebuild what is pending a few
    chunks at a time, looking for newer changes in between."""
    resident = clients.resident
    await apply_changes(clients=clients)
    while resident.pending:
        chunks = [_take(resident.pending, RESIDENT_CHUNK) for _ in range(RESIDENT_PARALLEL)]
        try:
            built = await asyncio.gather(
                *(build_answers(reader=clients.reader, track_ids=chunk) for chunk in chunks if chunk)
            )
        except BaseException:  # the database went away, or the app stops: the next pass builds them
            resident.pending.update(track_id for chunk in chunks for track_id in chunk)
            raise
        for answers in built:
            for track_id, body in answers.items():
                resident.put(track_id, body)
        await apply_changes(clients=clients)


def _take(pending: set[str], n: int) -> list[str]:
    return [pending.pop() for _ in range(min(n, len(pending)))]


async def _forecasts(
    *, clients: Clients, track_ids: list[str], caller: str
) -> tuple[list[TrackForecast], list[str]]:
    """Forecasts of `track_ids` (songs never seen are fetched from Spotify and stored first, within the
    caller's allowance) and the ids Spotify does not know (now, or when last asked)."""
    found = await forecasts_for(clients=clients, track_ids=track_ids)
    missing = [i for i in track_ids if i not in {f.track.id for f in found}]
    if not missing:
        return found, []
    async with clients.sessions() as session:
        retry_days = clients.settings.spotify_unknown_retry_days
        not_found = sorted(await recently_unknown(session, missing, retry_days=retry_days))
    to_fetch = [i for i in missing if i not in set(not_found)]
    clients.allowance.take(caller, len(to_fetch))
    try:
        await ensure_tracks(
            sessions=clients.sessions,
            spotify=clients.spotify,
            track_ids=to_fetch,
            demo=clients.settings.uses_emulator,
        )
    except UnknownTracks as exc:
        not_found += exc.ids
    fetched = [i for i in missing if i not in set(not_found)]
    if fetched:
        found += await forecasts_for(clients=clients, track_ids=fetched)
    return found, not_found


async def gzipped_forecasts(
    *, clients: Clients, track_ids: list[str], caller: str
) -> tuple[list[bytes], list[str]]:
    """The gzipped JSON `TrackForecast` of each song Spotify knows, in the order asked (from the cache
    when it holds them), and the ids Spotify does not know. Bodies are kept gzipped: a fifth of the
    memory, so more songs fit, and sent as they are to clients that accept gzip (most do)."""
    resident, cache = clients.resident, clients.cache
    version = await cache.current_version()
    bodies = {i: body for i in track_ids if (body := resident.get(i)) is not None}
    RESIDENT_HITS.inc(len(bodies))
    bodies.update((i, body) for i in track_ids if i not in bodies and (body := cache.get(i)) is not None)
    wanted = [i for i in track_ids if i not in bodies]
    not_found: list[str] = []
    if wanted:
        found, not_found = await _forecasts(clients=clients, track_ids=wanted, caller=caller)
        for forecast in found:
            body = _gzipped(forecast)
            bodies[forecast.track.id] = body
            cache.put(forecast.track.id, body, built_at_version=version)
    return [bodies[i] for i in track_ids if i in bodies], not_found
