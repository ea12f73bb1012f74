"""Storing Spotify objects: tracks with their albums, artists and this week's snapshot.

Used by the ingestor's runs and by the predictor when it is asked about a song it has never seen.
Albums and artists are immutable enough to be fetched once: only those not stored yet are requested.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.db import MergeRule, session_scope, upsert
from shared.models import Album, Artist, Snapshot, Track, TrackArtist, utcnow
from shared.spotify import models as sp
from shared.spotify.client import SpotifyClient

# Several sources write the same (song, week): a chart says it trended, the API gives its popularity.
# Neither may erase the other: known popularity is kept, and "trended" once means trended that week.
SNAPSHOT_MERGE: dict[str, MergeRule] = {
    "popularity": "keep_known",
    "popularity_source": "keep_known",
    "trending": "or",
    "updated_at": "replace",
}
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
    for start in range(0, len(ids), 1000):
        part = ids[start : start + 1000]
        found.update((await session.exec(select(column).where(column.in_(part)))).scalars().all())  # type: ignore[call-overload]
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
) -> dict[str, int]:
    """Store tracks, the albums and artists not stored yet (immutable metadata is fetched once), and
    this week's snapshot of each track."""
    if not tracks:
        return {}
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
            update=["name", "followers", "popularity", "updated_at"],
        )
        await upsert(
            session=session,
            model=Album,
            rows=album_rows(albums.values()),
            keys=["id"],
            update=[
                "name",
                "album_type",
                "total_tracks",
                "release_date",
                "release_date_precision",
                "label",
                "updated_at",
            ],
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
        await upsert(
            session=session, model=Snapshot, rows=snapshots, keys=["track_id", "week"], update=SNAPSHOT_MERGE
        )
    return {
        "tracks": len(tracks),
        "albums": len(albums),
        "artists": len(artists),
        "snapshots": len(snapshots),
    }


async def fetch_missing_dimensions(
    *, sessions: async_sessionmaker[AsyncSession], spotify: SpotifyClient, tracks: Iterable[sp.Track]
) -> tuple[dict[str, sp.Album], dict[str, sp.Artist]]:
    """Albums and artists referenced by `tracks` that the database does not hold yet."""
    tracks = list(tracks)
    album_ids = sorted({t.album.id for t in tracks if t.album and t.album.id})
    artist_ids = sorted({a.id for t in tracks for a in t.artists if a.id})
    async with sessions() as session:
        album_ids = [i for i in album_ids if i not in await known_ids(session, Album.id, album_ids)]
        artist_ids = [i for i in artist_ids if i not in await known_ids(session, Artist.id, artist_ids)]
    albums = await spotify.get_albums(album_ids) if album_ids else {}
    # Albums embedded in track objects are complete enough when the album endpoint lacks one.
    for t in tracks:
        if t.album and t.album.id in album_ids and t.album.id not in albums:
            albums[t.album.id] = t.album
    artists = await spotify.get_artists(artist_ids) if artist_ids else {}
    return albums, artists
