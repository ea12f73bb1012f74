"""Ids Spotify does not know, remembered for `spotify_unknown_retry_days`: the REST API and the weekly
run skip them instead of spending a request on each, every time they come up."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.db import in_chunks, upsert
from shared.models import UnknownTrack, utcnow


async def remember_unknown(session: AsyncSession, track_ids: Iterable[str]) -> int:
    """Record that Spotify answered "not found" for these ids now (the caller commits)."""
    now = utcnow()
    rows = [{"track_id": i, "checked_at": now} for i in sorted(set(track_ids))]
    return await upsert(
        session=session, model=UnknownTrack, rows=rows, keys=["track_id"], update=["checked_at"]
    )


async def recently_unknown(session: AsyncSession, track_ids: Sequence[str], *, retry_days: float) -> set[str]:
    """Those of `track_ids` Spotify did not know within the last `retry_days`."""
    since = utcnow() - dt.timedelta(days=retry_days)
    found: set[str] = set()
    ids = list(dict.fromkeys(track_ids))
    for part in in_chunks(ids):
        query = select(col(UnknownTrack.track_id)).where(
            col(UnknownTrack.track_id).in_(part), col(UnknownTrack.checked_at) >= since
        )
        found.update((await session.exec(query)).all())
    return found
