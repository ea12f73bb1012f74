"""Storing Spotify objects: tracks with their albums, artists and this week's snapshot.

Used by the ingestor's runs and by the predictor when it is asked about a song it has never seen.
Albums and artists are immutable enough to be fetched once: only those not stored yet are requested.
Ingest runs write their snapshot rows to `snapshot_stage` (`staged=True`) and publish them all at once
with `publish_staged_snapshots` in the transaction that finishes the run.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.db import MergeRule, _merged, in_chunks, session_scope, upsert
from shared.models import Album, Artist, Snapshot, SnapshotStage, Track, TrackArtist, utcnow
from shared.spotify import models as sp
from shared.spotify.client import SpotifyClient
from shared.spotify.errors import SpotifyPaused

# Several sources write the same (song, week): a chart says it trended, the API gives its popularity.
# Neither may erase the other: known popularity is kept, and "trended" once means trended that week.
# A row touched by emulated data (an emulator's popularity on a real chart's song) counts as demo.
SNAPSHOT_MERGE: dict[str, MergeRule] = {
    "popularity": "keep_known",
    "popularity_source": "keep_known",
    "trending": "or",
    "is_demo": "or",
    "updated_at": "replace",
}
ARTIST_UPDATE = ["name", "followers", "popularity", "updated_at"]
ALBUM_UPDATE = [
    "name", "album_type", "total_tracks", "release_date", "release_date_precision", "label", "updated_at",
]  # fmt: skip
TRACK_UPDATE = [
    "name",
    "artist_names",
    "album_id",
    "duration_ms",
    "explicit",
    "isrc",
    "release_date",
    "updated_at",
]


@dataclass(frozen=True)
class StoredRows:
    """How many rows of each kind a write stored."""

    tracks: int = 0
    albums: int = 0
    artists: int = 0
    snapshots: int = 0


def artist_rows(artists: Iterable[sp.Artist]) -> list[dict[str, Any]]:
    now = utcnow()
    return [
        {
            "id": a.id,
            "name": a.name[:512],
            "followers": a.followers,
            "popularity": a.popularity,
            "updated_at": now,
        }
        for a in artists
    ]


def album_rows(albums: Iterable[sp.Album]) -> list[dict[str, Any]]:
    now = utcnow()
    return [
        {
            "id": a.id,
            "name": a.name[:512],
            "album_type": a.album_type,
            "total_tracks": a.total_tracks,
            "release_date": a.release_date,
            "release_date_precision": a.release_date_precision,
            "label": a.label,
            "updated_at": now,
        }
        for a in albums
    ]


def track_rows(tracks: Iterable[sp.Track], *, demo: bool) -> list[dict[str, Any]]:
    now = utcnow()
    return [
        {
            "id": t.id,
            "name": t.name[:512],
            "artist_names": ", ".join(a.name for a in t.artists)[:1024],
            "album_id": t.album.id if t.album else None,
            "duration_ms": t.duration_ms,
            "explicit": t.explicit,
            "isrc": t.isrc,
            "release_date": t.album.release_date if t.album else None,
            "is_demo": demo,
            "updated_at": now,
        }
        for t in tracks
    ]


def track_artist_rows(tracks: Iterable[sp.Track]) -> list[dict[str, Any]]:
    return [
        {"track_id": t.id, "artist_id": a.id, "position": i}
        for t in tracks
        for i, a in enumerate(t.artists)
        if a.id
    ]


async def known_ids(session: AsyncSession, column: Any, ids: Sequence[str]) -> set[str]:
    """Which of `ids` are already stored in `column` (chunked IN queries)."""
    found: set[str] = set()
    for part in in_chunks(ids):
        found.update((await session.exec(select(column).where(column.in_(part)))).all())
    return found


def snapshot_rows(
    tracks: Iterable[sp.Track], *, week: dt.date, trending: set[str], demo: bool
) -> list[dict[str, Any]]:
    """This week's snapshot of each track: its popularity where the access mode gives one."""
    now = utcnow()
    return [
        {
            "track_id": t.id,
            "week": week,
            "popularity": t.popularity,
            "popularity_source": "api" if t.popularity is not None else None,
            "trending": t.id in trending,
            "is_demo": demo,
            "updated_at": now,
        }
        for t in tracks
    ]


async def write_tracks(
    *,
    sessions: async_sessionmaker[AsyncSession],
    spotify: SpotifyClient | None,
    tracks: dict[str, sp.Track],
    week: dt.date,
    trending: set[str],
    demo: bool,
    staged: bool = False,
) -> StoredRows:
    """Store tracks, the albums and artists not stored yet (immutable metadata is fetched once), and
    this week's snapshot of each track (into `snapshot_stage` when `staged`, published when the run ends)."""
    if not tracks:
        return StoredRows()
    albums: dict[str, sp.Album] = {}
    artists: dict[str, sp.Artist] = {}
    if spotify is not None:
        albums, artists = await fetch_missing_dimensions(
            sessions=sessions, spotify=spotify, tracks=tracks.values()
        )
    snapshots = snapshot_rows(tracks.values(), week=week, trending=trending, demo=demo)
    async with session_scope(sessions) as session:
        await upsert(
            session=session,
            model=Artist,
            rows=artist_rows(artists.values()),
            keys=["id"],
            update=ARTIST_UPDATE,
        )
        await upsert(
            session=session,
            model=Album,
            rows=album_rows(albums.values()),
            keys=["id"],
            update=ALBUM_UPDATE,
        )
        await upsert(
            session=session,
            model=Track,
            rows=track_rows(tracks.values(), demo=demo),
            keys=["id"],
            update=TRACK_UPDATE,
        )
        await upsert(
            session=session,
            model=TrackArtist,
            rows=track_artist_rows(tracks.values()),
            keys=["track_id", "artist_id"],
            update=["position"],
        )
        await upsert_snapshots(session=session, rows=snapshots, staged=staged)
    return StoredRows(tracks=len(tracks), albums=len(albums), artists=len(artists), snapshots=len(snapshots))


async def fetch_missing_dimensions(
    *, sessions: async_sessionmaker[AsyncSession], spotify: SpotifyClient, tracks: Iterable[sp.Track]
) -> tuple[dict[str, sp.Album], dict[str, sp.Artist]]:
    """Albums and artists referenced by `tracks` that the database does not hold yet."""
    tracks = list(tracks)
    album_ids = sorted({t.album.id for t in tracks if t.album and t.album.id})
    artist_ids = sorted({a.id for t in tracks for a in t.artists if a.id})
    async with sessions() as session:
        stored_albums = await known_ids(session, Album.id, album_ids)
        stored_artists = await known_ids(session, Artist.id, artist_ids)
    album_ids = [i for i in album_ids if i not in stored_albums]
    artist_ids = [i for i in artist_ids if i not in stored_artists]
    # In Development Mode the album endpoint returns nothing the album inside a track lacks (no label,
    # no popularity there): one request per album saved.
    fetch_albums = bool(album_ids) and spotify.access_mode is not sp.AccessMode.development
    albums = await spotify.get_albums(album_ids) if fetch_albums else {}
    # Albums embedded in track objects are complete enough when the album endpoint lacks one.
    missing = set(album_ids)
    for t in tracks:
        if t.album and t.album.id in missing and t.album.id not in albums:
            albums[t.album.id] = t.album
    if spotify.access_mode is sp.AccessMode.development:
        # Nor does the artist endpoint: no followers or popularity there, and genres are not stored.
        return albums, artists_from_tracks(tracks, artist_ids)
    try:
        artists = await spotify.get_artists(artist_ids) if artist_ids else {}
    except SpotifyPaused as paused:  # the albums fetched already travel with the pause, to be stored
        raise paused.with_partial({**albums, **paused.partial}) from None
    return albums, artists


def artists_from_tracks(tracks: Iterable[sp.Track], ids: Iterable[str] | None = None) -> dict[str, sp.Artist]:
    """Artists as named inside track objects (all Development Mode's artist endpoint would add is genres)."""
    wanted = None if ids is None else set(ids)
    return {
        a.id: sp.Artist(id=a.id, name=a.name)
        for t in tracks
        for a in t.artists
        if a.id and (wanted is None or a.id in wanted)
    }


async def write_dimensions(
    *, sessions: async_sessionmaker[AsyncSession], objects: Iterable[object]
) -> StoredRows:
    """Store the albums and artists among `objects` (what a paused fetch got), so none is asked again."""
    objects = list(objects)
    albums = [o for o in objects if isinstance(o, sp.Album)]
    artists = [o for o in objects if isinstance(o, sp.Artist)]
    if not albums and not artists:
        return StoredRows()
    async with session_scope(sessions) as session:
        await upsert(
            session=session, model=Artist, rows=artist_rows(artists), keys=["id"], update=ARTIST_UPDATE
        )
        await upsert(session=session, model=Album, rows=album_rows(albums), keys=["id"], update=ALBUM_UPDATE)
    return StoredRows(albums=len(albums), artists=len(artists))


async def upsert_snapshots(*, session: AsyncSession, rows: Sequence[dict[str, Any]], staged: bool) -> int:
    """Write snapshot rows with the merge rules, to `snapshot` or (staged) to `snapshot_stage`."""
    model = SnapshotStage if staged else Snapshot
    keys = ["track_id", "week"]
    return await upsert(session=session, model=model, rows=rows, keys=keys, update=SNAPSHOT_MERGE)


async def publish_staged_snapshots(*, session: AsyncSession) -> int:
    """Move every staged snapshot row into `snapshot` (merge rules applied) in the caller's transaction.

    Rows staged by earlier runs that died are published too: their batches were committed and are valid.
    Returns the number of rows moved.
    """
    query = select(func.count(), func.max(col(SnapshotStage.id)))
    count, last_id = (await session.exec(query)).one()
    if not count:
        return 0
    columns = ["track_id", "week", "popularity", "popularity_source", "trending", "is_demo", "updated_at"]
    stage = SnapshotStage.__table__  # type: ignore[attr-defined]
    target = Snapshot.__table__  # type: ignore[attr-defined]
    source = stage.select().with_only_columns(*(stage.c[c] for c in columns)).where(stage.c.id <= last_id)
    stmt: Any
    if (await session.connection()).dialect.name == "mysql":
        stmt = mysql_insert(target).from_select(columns, source)
        stmt = stmt.on_duplicate_key_update(
            {c: _merged(rule, target.c[c], stmt.inserted[c]) for c, rule in SNAPSHOT_MERGE.items()}
        )
    else:
        stmt = sqlite_insert(target).from_select(columns, source)
        stmt = stmt.on_conflict_do_update(
            index_elements=["track_id", "week"],
            set_={c: _merged(r, target.c[c], stmt.excluded[c]) for c, r in SNAPSHOT_MERGE.items()},
        )
    await session.exec(stmt)
    await session.exec(delete(SnapshotStage).where(col(SnapshotStage.id) <= last_id))
    return int(count)
