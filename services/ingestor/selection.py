"""Which songs a run asks Spotify for: only what changes. Songs never enriched (new chart entries, songs
an earlier run left behind), the ids a paused run had left, and (where popularity is available) every
song followed for its weekly snapshot, minus those Spotify did not know lately or this week's run has."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import func
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.charts import TRACK_ID_RE, Chart
from shared.db import in_chunks
from shared.ids import SPOTIFY_ID_LENGTH
from shared.models import Album, Snapshot, SnapshotStage, Track
from shared.spotify import models as sp
from shared.unknown_tracks import recently_unknown
from shared.weeks import add_weeks

from .report import RunReport
from .runs import paused_resume_ids
from .settings import IngestorSettings


async def tracks_to_fetch(
    *,
    sessions: async_sessionmaker[AsyncSession],
    settings: IngestorSettings,
    report: RunReport,
    mode: sp.AccessMode,
    charts: Sequence[Chart],
    trending: set[str],
) -> list[str]:
    """Only what changes: songs never enriched, plus (with popularity available) every followed song."""
    charted = {row.track_id for c in charts for row in c.rows if row.track_id}
    async with sessions() as session:
        resume = await paused_resume_ids(session=session)
        # Songs stored from charts by an earlier run that stopped before enriching them.
        left_behind = await never_enriched(session=session)
        candidates = sorted(charted | trending | set(resume) | left_behind)
        enriched = await known_enriched(session=session, ids=candidates)
        # Ids Spotify did not know lately are not asked for again (each would cost a request every run).
        unknown = await recently_unknown(session, candidates, retry_days=settings.spotify_unknown_retry_days)
        if unknown:
            report.counts.tracks_skipped_unknown += len(unknown)
        wanted = [i for i in candidates if i not in enriched and i not in unknown]
        if mode is sp.AccessMode.extended:
            followed = await followed_track_ids(
                session=session, week=report.week, follow_weeks=settings.follow_weeks
            )
            wanted = sorted(set(wanted) | set(followed) | trending)
            # A resumed run of the same week: songs whose popularity it already has are done.
            done = await fetched_this_week(session=session, week=report.week, ids=wanted)
            wanted = [i for i in wanted if i not in done]
    # A resumed run fetches first what the paused run had left.
    wanted_set, resume_set = set(wanted), set(resume)
    return [i for i in resume if i in wanted_set] + [i for i in wanted if i not in resume_set]


async def fetched_this_week(*, session: AsyncSession, week: dt.date, ids: Sequence[str]) -> set[str]:
    """Songs with a popularity from the API for `week` already (staged by a paused run, or published)."""
    found: set[str] = set()
    for model in (SnapshotStage, Snapshot):
        for part in in_chunks(ids):
            query = select(col(model.track_id)).where(
                model.week == week,
                model.popularity_source == "api",
                model.track_id.in_(part),  # type: ignore[attr-defined]
            )
            found.update((await session.exec(query)).all())
    return found


async def never_enriched(*, session: AsyncSession) -> set[str]:
    """Stored songs with a Spotify id whose metadata was never fetched (no album stored)."""
    query = (
        select(col(Track.id))
        .outerjoin(Album, col(Album.id) == col(Track.album_id))
        .where(col(Album.id).is_(None), func.length(col(Track.id)) == SPOTIFY_ID_LENGTH)
    )
    return set((await session.exec(query)).all())


async def known_enriched(*, session: AsyncSession, ids: Sequence[str]) -> set[str]:
    """Tracks whose metadata came from the API already (their album is stored too)."""
    found: set[str] = set()
    for part in in_chunks(ids):
        with_album = select(col(Track.id)).join(Album, col(Album.id) == col(Track.album_id))
        query = with_album.where(col(Track.id).in_(part))
        found.update((await session.exec(query)).all())
    return found


async def followed_track_ids(*, session: AsyncSession, week: dt.date, follow_weeks: int) -> list[str]:
    """Songs that trended in the last `follow_weeks` weeks: their popularity is snapshotted weekly.

    Songs known only from imported history (synthetic ids) cannot be asked from Spotify and are left out.
    """
    since = add_weeks(week, -follow_weeks)
    trended = select(col(Snapshot.track_id)).where(col(Snapshot.trending), col(Snapshot.week) >= since)
    query = trended.distinct()
    ids = (await session.exec(query)).all()
    return sorted(i for i in ids if TRACK_ID_RE.match(i))
