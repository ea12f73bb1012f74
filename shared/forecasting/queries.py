"""The SQL of forecasting: panels loaded through the ORM (every row, or only the rows some songs' features
read) and the songs' names. (The latest week and the trending songs are the read model's:
`shared.predictions`.)

The predictor's batch scoring reads its panels from a resident `PanelStore` (`store.py`) instead; the
panels built here and there are the same (`tests/test_forecasting_store.py`).
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Sequence
from typing import Any

from sqlalchemy import case, func, select
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.db import in_chunks
from shared.forecasting.panel import (
    ChartPanel,
    PopularityPanel,
    artist_key,
    chart_panel_from_rows,
    chart_panel_with_floors,
    popularity_panel_from_rows,
)
from shared.models import Album, ChartEntry, Snapshot, Track


async def load_chart_panel(
    session: AsyncSession, *, max_week: dt.date | None = None, demo: bool = False
) -> ChartPanel:
    """Every chart entry (up to `max_week`) with its song's name and first artist."""
    return chart_panel_from_rows(await _chart_rows(session, max_week=max_week, demo=demo))


async def _chart_rows(
    session: AsyncSession, *, max_week: dt.date | None, demo: bool, tracks: Sequence[str] | None = None
) -> list[tuple[str, str, dt.date, int, int | None, str, str]]:
    """Chart entries as `chart_panel_from_rows` takes them: all of them, or only those of `tracks`."""
    query = select(
        col(ChartEntry.track_id),
        col(ChartEntry.region),
        col(ChartEntry.week),
        col(ChartEntry.rank),
        col(ChartEntry.streams),
        col(Track.artist_names),
        col(Track.name),
    ).join(Track, Track.id == ChartEntry.track_id, isouter=True)  # type: ignore[arg-type]
    if max_week is not None:
        query = query.where(ChartEntry.week <= max_week)  # type: ignore[arg-type]
    if not demo:
        query = query.where(ChartEntry.is_demo.is_(False))  # type: ignore[attr-defined]
    rows: list[Any] = []
    for part in _parts(tracks):
        scoped = query if part is None else query.where(col(ChartEntry.track_id).in_(part))
        rows += (await session.execute(scoped)).all()
    return [
        (t, r, w, rank, streams, (artists or "").split(",")[0].strip(), name or "")
        for t, r, w, rank, streams, artists, name in rows
    ]


def _parts(ids: Sequence[str] | None) -> list[list[str] | None]:
    """`ids` in IN-list slices; [None] (no filter) when `ids` is None."""
    return [None] if ids is None else list(in_chunks(ids))


async def load_popularity_panel(
    session: AsyncSession, *, max_week: dt.date | None = None, demo: bool = False
) -> tuple[PopularityPanel, float]:
    """Every known weekly popularity (up to `max_week`) and the songs' attributes; also the share of those
    values imported from history files rather than observed by this installation."""
    return await _popularity_panel_of(session, max_week=max_week, demo=demo)


async def _popularity_panel_of(
    session: AsyncSession, *, max_week: dt.date | None, demo: bool, tracks: Sequence[str] | None = None
) -> tuple[PopularityPanel, float]:
    """The popularity panel of all songs, or only of `tracks`, and its imported share."""
    query = select(
        col(Snapshot.track_id), col(Snapshot.week), col(Snapshot.popularity), col(Snapshot.popularity_source)
    ).where(
        Snapshot.popularity.is_not(None)  # type: ignore[union-attr]
    )
    if max_week is not None:
        query = query.where(Snapshot.week <= max_week)  # type: ignore[arg-type]
    if not demo:
        query = query.where(Snapshot.is_demo.is_(False))  # type: ignore[attr-defined]
    obs: list[Any] = []
    for part in _parts(tracks):
        scoped = query if part is None else query.where(col(Snapshot.track_id).in_(part))
        obs += (await session.execute(scoped)).all()
    imported = sum(1 for *_, source in obs if source == "history") / len(obs) if obs else 0.0
    ids = {o[0] for o in obs}
    songs_query = select(
        col(Track.id),
        col(Track.release_date),
        col(Track.duration_ms),
        col(Track.explicit),
        col(Album.album_type),
        col(Album.total_tracks),
        col(Track.artist_names),
        col(Track.name),
    ).join(Album, Album.id == Track.album_id, isouter=True)  # type: ignore[arg-type]
    songs: list[Any] = []
    for part in _parts(None if tracks is None else sorted(ids)):
        songs_part = songs_query if part is None else songs_query.where(col(Track.id).in_(part))
        songs += [row for row in (await session.execute(songs_part)).all() if row[0] in ids]
    panel = popularity_panel_from_rows(
        ((t, w, p) for t, w, p, _ in obs),
        (
            (i, r, d, e, a, n, (arts or "").split(",")[0].strip(), name or "", arts or "")
            for i, r, d, e, a, n, arts, name in songs
        ),
    )
    return panel, imported


SCOPED_MAX_SONGS = 2000  # beyond this many songs one scan of the tables beats the per-song queries


@functools.lru_cache(maxsize=1 << 16)
def _first_artist_key(artist_names: str) -> str:
    """The artist key the panels give a song (its first artist, normalised)."""
    return artist_key(artist_names.split(",")[0].strip())


async def _same_artist_songs(
    session: AsyncSession, ids: Sequence[str], names: dict[str, tuple[str, str]]
) -> list[str] | None:
    """The songs and every song sharing a first artist with one of them (the cross-song features read
    those); None when a song has no artist (it would share the key of every unknown song)."""
    keys = {_first_artist_key(names.get(i, ("", ""))[1]) for i in ids}
    if "" in keys:
        return None
    spellings = (await session.execute(select(col(Track.artist_names)).distinct())).scalars().all()
    # The IN below compares with the column's collation (case- and accent-insensitive): it may add songs
    # of other artists, which only form groups of their own, never drop one of these artists' songs.
    matching = [a for a in spellings if a and _first_artist_key(a) in keys]
    scope = dict.fromkeys(ids)
    for part in in_chunks(matching):
        found = await session.execute(select(col(Track.id)).where(col(Track.artist_names).in_(part)))
        scope.update(dict.fromkeys(found.scalars().all()))
    return list(scope)


async def _chart_floors(
    session: AsyncSession, until: dt.date, demo: bool
) -> list[tuple[str, dt.date, int | None]]:
    """Every chart up to `until` (region, week) with its smallest positive streams (its floor), grouped by
    MariaDB: features count the charts that exist (the files of the last year, the share of the files
    since a song's first entry, the charts between two of its entries), so all of them are needed."""
    regions = (await session.execute(select(col(ChartEntry.region)).distinct())).scalars().all()
    positive = case((col(ChartEntry.streams) > 0, col(ChartEntry.streams)))
    query = (
        # region IN: ranges of the (region, week) index
        select(col(ChartEntry.region), col(ChartEntry.week), func.min(positive))
        .where(col(ChartEntry.region).in_(regions), col(ChartEntry.week) <= until)
        .group_by(col(ChartEntry.region), col(ChartEntry.week))
    )
    if not demo:
        query = query.where(col(ChartEntry.is_demo).is_(False))
    return [(r, w, f) for r, w, f in (await session.execute(query)).all()] if regions else []


async def scoped_panels(
    session: AsyncSession,
    anchor: dt.date,
    ids: Sequence[str],
    names: dict[str, tuple[str, str]],
    demo: bool,
) -> tuple[ChartPanel, PopularityPanel] | None:
    """Panels holding only what the songs' features at `anchor` (or earlier) read: their own rows, their
    artists' other songs' rows, and every chart with its floor; None when a full load is needed or cheaper.

    Every other feature is a lookup or running aggregate over the song's own rows, so the features of
    these songs come out identical to those computed on the full panels.
    """
    if len(ids) > SCOPED_MAX_SONGS:
        return None
    scope = await _same_artist_songs(session, ids, names)
    if scope is None:
        return None
    rows = await _chart_rows(session, max_week=anchor, demo=demo, tracks=scope)
    chart_panel = chart_panel_with_floors(rows, await _chart_floors(session, anchor, demo))
    popularity, _ = await _popularity_panel_of(session, max_week=anchor, demo=demo, tracks=scope)
    return chart_panel, popularity


async def song_names(session: AsyncSession, ids: Sequence[str]) -> dict[str, tuple[str, str]]:
    """Name and artists of each stored song among `ids`."""
    names: dict[str, tuple[str, str]] = {}
    for part in in_chunks(ids):
        rows = (
            await session.execute(
                select(col(Track.id), col(Track.name), col(Track.artist_names)).where(col(Track.id).in_(part))
            )
        ).all()
        names.update({i: (n or "", a or "") for i, n, a in rows})
    return names
