"""Per-song forecasts for the REST API: the stored batch forecast when it is up to date with the song's
data, otherwise one computed on the spot (a song asked for by id that was never scored, or a cold start).

Reads are two statements over the song ids (`IN`), so one song and a batch of 100 share one code path
and cost the same two round trips.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from isal import igzip
from sqlalchemy import (
    BindParameter,
    Integer,
    Select,
    bindparam,
    func,
    literal,
    null,
    select,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel import SQLModel, col
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.events import TrackPrediction
from shared.gcpause import gc_paused
from shared.ids import TRACK_ID
from shared.models import ChartEntry, Prediction, Snapshot, Track
from shared.mqtt import topics
from shared.predictions import (
    LATEST_BATCH_WEEK,
    PREDICTION_FIELDS,
    SONG_KEY_ONLY,
    SONG_WEEKS_ONLY,
    HistoryPoint,
    merge_history,
    predictions_from_rows,
    serving_by_version,
)
from shared.signals import Signal
from shared.unknown_tracks import recently_unknown
from shared.weeks import current_week

from . import batch_answers
from .batch_answers import ScoredWeek
from .cache import RESIDENT_HITS, changed_songs, data_version, left_the_batch
from .deps import Clients
from .fastpath.bodies import gzipped_bodies
from .reader import with_retry_on_dropped_connection
from .schemas import TrackForecast, TrackInfo
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


# ISA-L's gzip at its level 1: 2.6x smaller JSON (516 B for 1,340 in bench-scale's answers) in ~8 us an
# answer, where zlib's level 5 took ~17 us for 506 B (and its level 1 ~15 us for 523 B): measured, issue 14.
GZIP_LEVEL = 1
SONG, SNAPSHOT, CHART = 0, 1, 2  # the kinds of row `SONG_ROWS` returns


# Every column of `SONG_ROWS` by name: each kind of row fills its own and leaves the others NULL. `week`
# and `region` are the row's own (prediction, snapshot or chart entry).
ROW_COLUMNS = (
    "kind", "track_id", "name", "artists", "album_id", "release_date", "demo", "batch_week",
    *PREDICTION_FIELDS[1:], "popularity", "trending", "updated_at", "rank", "streams",
)  # fmt: skip
# A plain NULL costs nothing to read back; only `updated_at` keeps its type where it is NULL: a union's
# columns take the first select's types, and it must read back as a UTC datetime (serialised with its `Z`).
_NULLS = {"updated_at": literal(None, SQLModel.metadata.tables["snapshot"].c.updated_at.type)}


def _part(kind: int, columns: dict[str, Any]) -> Select[Any]:
    """One kind of `SONG_ROWS`: every column of `ROW_COLUMNS` by name, NULL where this kind has none."""
    values = {"kind": literal(kind, Integer), **columns}
    return select(*(values.get(name, _NULLS.get(name, null())).label(name) for name in ROW_COLUMNS))


def _song_rows() -> tuple[Any, Any, Any]:
    """Everything a forecast response needs, as three selects over the song ids, rows of `ROW_COLUMNS`:

    - kind SONG: the song and its batch predictions of its latest anchor week, one row per signal,
      region and horizon (one row of NULL predictions when it has none), with the latest batch's week
      (served by the primary key, week first). The song's latest week is a correlated subquery,
      answered by the index on track_id per song (forced: `SONG_WEEKS_ONLY`), its rows by one lookup of
      the key (`SONG_KEY_ONLY`): a plan the optimizer cannot get wrong. (A GROUP BY derived table was
      ~20% faster for a bulk read of 500 songs with fresh table statistics, but right after a bulk
      write MariaDB sorted whole derived tables for minutes per statement, issue 14.)
    - kind SNAPSHOT: week, popularity, trending, updated_at;
    - kind CHART: week, region, rank, streams.
    """
    p, q = Prediction.__table__.alias("p"), Prediction.__table__.alias("q")  # type: ignore[attr-defined]
    ids: BindParameter[list[str]] = bindparam("ids", expanding=True)
    songs = _part(SONG, {
        "track_id": col(Track.id), "name": col(Track.name), "artists": col(Track.artist_names),
        "album_id": col(Track.album_id), "release_date": col(Track.release_date), "demo": col(Track.is_demo),
        "batch_week": LATEST_BATCH_WEEK.scalar_subquery(),
        **{name: p.c[name] for name in PREDICTION_FIELDS[1:]},
    }).where(col(Track.id).in_(ids))  # fmt: skip
    latest_week = (
        select(func.max(q.c.week))
        .where(q.c.track_id == col(Track.id))
        .with_hint(q, SONG_WEEKS_ONLY, "mysql")
        .scalar_subquery()
    )
    songs = songs.outerjoin(p, (p.c.track_id == col(Track.id)) & (p.c.week == latest_week)).with_hint(
        p, SONG_KEY_ONLY, "mysql"
    )
    snapshots = _part(SNAPSHOT, {
        "track_id": col(Snapshot.track_id), "week": col(Snapshot.week),
        "popularity": col(Snapshot.popularity), "trending": col(Snapshot.trending),
        "updated_at": col(Snapshot.updated_at),
    }).where(col(Snapshot.track_id).in_(ids))  # fmt: skip
    charts = _part(CHART, {
        "track_id": col(ChartEntry.track_id), "week": col(ChartEntry.week), "region": col(ChartEntry.region),
        "rank": col(ChartEntry.rank), "streams": col(ChartEntry.streams),
    }).where(col(ChartEntry.track_id).in_(ids))  # fmt: skip
    return songs, snapshots, charts


# Built once: constructing the statements costs more than running them.
# A request's read is ONE statement: a round trip is what it costs most.
SONG_ROWS = union_all(*_song_rows()).order_by("kind", "track_id", "signal", "region", "horizon_weeks")


async def load_songs(*, reader: AsyncEngine, track_ids: Sequence[str]) -> dict[str, SongData]:
    """Stored facts about the songs the database holds (unknown ids are absent): one statement."""
    return await with_retry_on_dropped_connection(lambda: _load_songs(reader, track_ids))


async def _load_songs(reader: AsyncEngine, track_ids: Sequence[str]) -> dict[str, SongData]:
    async with reader.connect() as connection:
        rows = (await connection.execute(SONG_ROWS, {"ids": list(track_ids)})).all()
        return await _songs_from_rows(connection, rows)


def _song(row: Mapping[str, Any]) -> SongData:
    info = TrackInfo(
        id=row["track_id"], name=row["name"], artists=row["artists"], album_id=row["album_id"],
        release_date=row["release_date"], demo=bool(row["demo"]),
    )  # fmt: skip
    return SongData(info=info, batch_week=row["batch_week"])


async def _songs_from_rows(connection: AsyncConnection, rows: Sequence[Any]) -> dict[str, SongData]:
    """The songs of `SONG_ROWS` rows (the SONG rows first, in order, then the others), their stored
    forecasts stamped with the method that serves them (read on the same connection)."""
    songs: dict[str, SongData] = {}
    stored: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    snapshots: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    charts: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in (r._mapping for r in rows):
        track_id, kind = row["track_id"], row["kind"]
        if kind == SONG:
            if track_id not in songs:
                songs[track_id] = _song(row)
            if row["week"] is not None:
                stored[track_id].append(row)
        elif track_id in songs:
            (snapshots if kind == SNAPSHOT else charts)[track_id].append(row)
    versions = {row["model_version"] for song_rows in stored.values() for row in song_rows}
    serving = await serving_by_version(connection, versions) if versions else {}
    for track_id, song in songs.items():
        song.stored = predictions_from_rows(stored[track_id], serving)
        song.history = merge_history(snapshots[track_id], charts[track_id])
        song.latest_week = max((p.week for p in song.history if p.forecastable), default=None)
        stamps = [row["updated_at"] for row in snapshots[track_id] if row["updated_at"] is not None]
        song.refreshed_at = max(stamps, default=None)
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
        predictions=sorted(predictions, key=lambda p: (p.signal != Signal.POPULARITY, p.region)),
        history=song.history,
        data_refreshed_at=song.refreshed_at,
        source="batch" if batch else "on_demand",
        cold_start=not predictions or any(f.cold_start for p in predictions for f in p.forecasts),
    )


def _gzipped(forecast: TrackForecast) -> bytes:
    return _gzipped_json(forecast.model_dump_json().encode())


def _gzipped_json(body: bytes) -> bytes:
    return igzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)


RESIDENT_CHUNK = 500  # songs read per statement by a resident build (larger: faster, longer pauses)
RESIDENT_PARALLEL = 2  # chunks read at once: the database works on one while this process builds another


async def build_answers(
    *, reader: AsyncEngine, track_ids: Sequence[str], fast: bool, batch: ScoredWeek | None = None
) -> dict[str, bytes]:
    """The gzipped answers of those songs whose batch forecast is up to date (the others have none: their
    answer is computed on request). `fast`: built from the rows without pydantic objects (the same bytes),
    the predictions of the songs of `batch` (this process's stored batch) taken from it."""
    if fast:
        return await gzipped_bodies(reader=reader, track_ids=track_ids, gzipped=_gzipped_json, batch=batch)
    songs = await load_songs(reader=reader, track_ids=track_ids)
    # only ids the route accepts as they are: the fast path looks answers up by the id in the path
    kept = [s for i, s in songs.items() if s.stored_is_current and TRACK_ID.match(i)]
    return {song.info.id: _gzipped(_answer(song, [])) for song in kept}


async def apply_changes(*, clients: Clients) -> None:
    """When the data version (the outbox id) moved (read at most once per `check_seconds`, or at once when
    woken), drop the answers of the songs the new outbox rows name and queue them for a rebuild."""
    resident, cache = clients.resident, clients.cache
    if time.monotonic() - resident.checked_at < cache.check_seconds and not resident.wake.is_set():
        return
    resident.wake.clear()
    version = await data_version(clients.reader)  # before the look: what commits later moves it again
    if version != resident.version:
        changed, resident.applied = await changed_songs(
            clients.reader, resident.applied, topics(clients.settings)
        )
        resident.batch = standing_batch(resident.batch, resident.applied.predictions)
        left, resident.batch_week = await left_the_batch(clients.reader, resident.batch_week)
        resident.drop(changed | left)
        resident.version = version
    resident.checked_at = time.monotonic()


def standing_batch(
    batch: ScoredWeek | None, written: tuple[tuple[int, str], ...] | None
) -> ScoredWeek | None:
    """The stored batch whose rows are the database's predictions once the outbox rows just applied are:
    `batch` when they wrote no prediction (`written`: their prediction rows, (id, event id)), this
    process's batch (`batch_answers`) when its songs' row is the only one; else none (read back)."""
    if written is None or len(written) > 1:
        return None
    return batch_answers.take(written[0]) if written else batch


async def refresh_resident(*, clients: Clients) -> None:
    """Bring the resident answers up to date: apply data changes, then rebuild what is pending a few
    chunks at a time, looking for newer changes in between. Songs are taken in id order: neighbours share
    index pages, and a chunk of them reads in about two thirds of the time of ids at random. While this
    process stores a batch, the rebuild waits for it (`batch_answers.storing`; its commit wakes the
    warmer): it replaces the predictions the songs would be built from."""
    with gc_paused():
        await _rebuild_pending(clients)


async def _rebuild_pending(clients: Clients) -> None:
    resident = clients.resident
    await apply_changes(clients=clients)
    step = RESIDENT_CHUNK * RESIDENT_PARALLEL
    # Checked before the queue is ordered: the warmer looks in every second or so while a batch is stored,
    # and ordering 1,000,000 pending ids each time took 20 s of the handling's CPU (bench-scale).
    while resident.pending and not batch_answers.is_storing():
        queue = build_order(resident.pending)
        for start in range(0, len(queue), step):
            if batch_answers.is_storing():
                return
            await _build(clients, [i for i in queue[start : start + step] if i in resident.pending])
            await apply_changes(clients=clients)
    if not resident.pending:
        resident.batch = None  # every answer built: its rows are no longer needed


def build_order(pending: set[str]) -> list[str]:
    """The pending songs in the order they are built: by id."""
    return sorted(pending)


async def _build(clients: Clients, taken: list[str]) -> None:
    """Build the answers of these pending songs, `RESIDENT_PARALLEL` chunks at once."""
    resident = clients.resident
    resident.pending.difference_update(taken)  # a change while building queues them again
    resident.building += len(taken)
    chunks = [taken[k : k + RESIDENT_CHUNK] for k in range(0, len(taken), RESIDENT_CHUNK)]
    fast = clients.settings.predictor_fastpath
    try:
        built = await asyncio.gather(
            *(
                build_answers(reader=clients.reader, track_ids=chunk, fast=fast, batch=resident.batch)
                for chunk in chunks
            )
        )
        for answers in built:
            for track_id, body in answers.items():
                resident.put(track_id, body)
    except BaseException:  # the database went away, or the app stops: the next pass builds them
        resident.pending.update(taken)
        raise
    finally:
        resident.building -= len(taken)


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
