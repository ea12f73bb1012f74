"""Songs' metadata and popularity from Spotify, in batches of `FETCH_BATCH` (one transaction each), with
the albums and artists not stored yet. A Spotify pause keeps everything fetched so far and says which
songs the next run must fetch first."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.catalog import artists_from_tracks, write_dimensions, write_tracks
from shared.db import session_scope
from shared.models import Album, Artist, Track, TrackArtist
from shared.spotify import models as sp
from shared.spotify.client import SpotifyClient
from shared.spotify.errors import SpotifyPaused
from shared.unknown_tracks import remember_unknown

from .report import Progress, RunReport
from .runs import paused_resume_ids, record_progress

FETCH_BATCH = 500  # tracks per fetch-and-commit batch: a pause or crash loses at most one batch


class EnrichmentPaused(Exception):
    """Spotify paused the run while songs were being fetched: what was fetched is stored, and
    `resume_ids` are the songs the next run must fetch first."""

    def __init__(self, pause: SpotifyPaused, resume_ids: Sequence[str]) -> None:
        super().__init__(str(pause))
        self.pause, self.resume_ids = pause, list(resume_ids)


async def fetch_and_write(
    *,
    sessions: async_sessionmaker[AsyncSession],
    spotify: SpotifyClient,
    track_ids: Sequence[str],
    week: dt.date,
    trending: set[str],
    report: RunReport,
    demo: bool,
    progress: Progress | None = None,
) -> None:
    """Fetch tracks in batches with their unknown albums and artists; one transaction per batch.

    On SpotifyPaused, stores what the interrupted batch had fetched and raises EnrichmentPaused with the
    ids the next run must fetch.
    """
    for start in range(0, len(track_ids), FETCH_BATCH):
        batch = list(track_ids[start : start + FETCH_BATCH])
        tracks: dict[str, sp.Track] = {}
        try:
            tracks = await spotify.get_tracks(batch)
            stored = await write_tracks(
                sessions=sessions,
                spotify=spotify,
                tracks=tracks,
                week=week,
                trending=trending,
                demo=demo,
                staged=True,
            )
        except SpotifyPaused as paused:
            tracks = tracks or {k: v for k, v in paused.partial.items() if isinstance(v, sp.Track)}
            await _keep_fetched(
                sessions=sessions, spotify=spotify, paused=paused, tracks=tracks, week=week,
                trending=trending, report=report, demo=demo,
            )  # fmt: skip
            remaining = [i for i in track_ids[start:] if i not in tracks]
            raise EnrichmentPaused(paused, remaining) from paused
        report.counts.add_stored(stored)
        unknown = set(batch) - set(tracks)
        report.counts.tracks_unknown_to_spotify += len(unknown)
        async with session_scope(sessions) as session:
            await remember_unknown(session, unknown)
            await record_progress(session=session, report=report)
        if progress:
            progress("songs", min(start + FETCH_BATCH, len(track_ids)), len(track_ids))


async def _keep_fetched(
    *,
    sessions: async_sessionmaker[AsyncSession],
    spotify: SpotifyClient,
    paused: SpotifyPaused,
    tracks: dict[str, sp.Track],
    week: dt.date,
    trending: set[str],
    report: RunReport,
    demo: bool,
) -> None:
    """Store all a paused batch fetched: the tracks, and the albums and artists got before the pause
    (the next run asks only for the dimensions still missing, see complete_dimensions)."""
    kept = list(paused.partial.values())
    if spotify.access_mode is sp.AccessMode.development:  # a track's album and artists suffice
        kept += [t.album for t in tracks.values() if t.album]
        kept += list(artists_from_tracks(tracks.values()).values())
    report.counts.add_stored(await write_dimensions(sessions=sessions, objects=kept))
    stored = await write_tracks(
        sessions=sessions,
        spotify=None,
        tracks=tracks,
        week=week,
        trending=trending,
        demo=demo,
        staged=True,
    )
    report.counts.add_stored(stored)


async def complete_dimensions(
    *, sessions: async_sessionmaker[AsyncSession], spotify: SpotifyClient, report: RunReport
) -> None:
    """Fetch the albums and artists stored tracks refer to but the database lacks (a run paused between a
    track and its album); the tracks themselves are not asked for again."""
    async with sessions() as session:
        album_ids, artist_ids = await missing_dimensions(session=session)
    fetched: dict[str, object] = {}
    try:
        if album_ids:
            fetched.update(await spotify.get_albums(album_ids))
        if artist_ids:
            fetched.update(await spotify.get_artists(artist_ids))
    except SpotifyPaused as paused:
        kept = [*fetched.values(), *paused.partial.values()]
        report.counts.add_stored(await write_dimensions(sessions=sessions, objects=kept))
        async with sessions() as session:  # the paused run's leftovers stay the next run's work
            leftovers = await paused_resume_ids(session=session)
        raise EnrichmentPaused(paused, leftovers) from paused
    report.counts.add_stored(await write_dimensions(sessions=sessions, objects=fetched.values()))


async def missing_dimensions(*, session: AsyncSession) -> tuple[list[str], list[str]]:
    """Ids of the albums and of the artists that stored tracks refer to but the database lacks."""
    album_query = (
        select(col(Track.album_id))
        .outerjoin(Album, col(Album.id) == col(Track.album_id))
        .where(col(Track.album_id).is_not(None), col(Album.id).is_(None))
        .distinct()
    )
    artist_query = (
        select(col(TrackArtist.artist_id))
        .outerjoin(Artist, col(Artist.id) == col(TrackArtist.artist_id))
        .where(col(Artist.id).is_(None))
        .distinct()
    )
    album_ids = sorted(album for album in (await session.exec(album_query)).all() if album)
    artist_ids = sorted((await session.exec(artist_query)).all())
    return album_ids, artist_ids
