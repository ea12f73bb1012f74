"""Per-song forecasts for the REST API: the stored batch forecast when it is up to date with the song's
data, otherwise one computed on the spot (a song asked for by id that was never scored, or a cold start).

Reads use a few set queries over the song ids (`IN`), so one song and a batch of 100 share one code path
and a batch costs a handful of round trips, not hundreds.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from shared import forecasting
from shared.events import Forecast, TrackPrediction
from shared.models import ChartEntry, Prediction, Snapshot, Track
from shared.weeks import current_week

from .schemas import HistoryPoint, TrackForecast, TrackInfo
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


async def _track_infos(session: AsyncSession, ids: Sequence[str]) -> dict[str, TrackInfo]:
    query = select(
        Track.id, Track.name, Track.artist_names, Track.album_id, Track.release_date, Track.is_demo
    ).where(col(Track.id).in_(ids))
    return {
        row[0]: TrackInfo(
            id=row[0], name=row[1], artists=row[2], album_id=row[3], release_date=row[4], demo=row[5]
        )
        for row in (await session.exec(query)).all()
    }


async def _stored_predictions(
    session: AsyncSession, ids: Sequence[str], infos: dict[str, TrackInfo]
) -> dict[str, list[TrackPrediction]]:
    """Each song's batch predictions of its most recent anchor week, one per signal and region."""
    latest = (
        select(Prediction.track_id, func.max(Prediction.week).label("week"))
        .where(col(Prediction.track_id).in_(ids))
        .group_by(Prediction.track_id)
        .subquery()
    )
    query = (
        select(Prediction)
        .join(latest, (Prediction.track_id == latest.c.track_id) & (Prediction.week == latest.c.week))
        .order_by(Prediction.track_id, Prediction.signal, Prediction.region, Prediction.horizon_weeks)
    )
    grouped: dict[tuple[str, str, str], TrackPrediction] = {}
    for row in (await session.exec(query)).all():
        key = (row.track_id, row.signal, row.region)
        if key not in grouped:
            info = infos.get(row.track_id)
            grouped[key] = TrackPrediction(
                track_id=row.track_id,
                name=info.name if info else "",
                artists=info.artists if info else "",
                week=row.week,
                signal=row.signal,  # type: ignore[arg-type]
                region=row.region,
                current=row.current,
                forecasts=[],
                demo=bool(info and info.demo),
            )
        grouped[key].forecasts.append(
            Forecast(
                horizon_weeks=row.horizon_weeks,
                value=row.value,
                lower=row.lower,
                upper=row.upper,
                p_chart=row.p_chart,
                model_version=row.model_version,
                cold_start=row.cold_start,
            )
        )
    result: dict[str, list[TrackPrediction]] = defaultdict(list)
    for prediction in grouped.values():
        result[prediction.track_id].append(prediction)
    return result


async def _histories(session: AsyncSession, ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """Each song's weekly popularity and chart positions merged into one list per song, oldest first."""
    snaps = select(
        Snapshot.track_id, Snapshot.week, Snapshot.popularity, Snapshot.trending, Snapshot.updated_at
    ).where(col(Snapshot.track_id).in_(ids))
    charts = select(
        ChartEntry.track_id, ChartEntry.week, ChartEntry.region, ChartEntry.rank, ChartEntry.streams
    ).where(col(ChartEntry.track_id).in_(ids))
    points: dict[str, dict[tuple[dt.date, str | None], dict[str, Any]]] = defaultdict(dict)
    for track_id, week, popularity, trending, updated_at in (await session.exec(snaps)).all():
        points[track_id][(week, None)] = {
            "week": week,
            "popularity": popularity,
            "trending": trending,
            "_updated_at": updated_at,
        }
    for track_id, week, region, rank, streams in (await session.exec(charts)).all():
        song = points[track_id]
        base = song.pop((week, None), None) or {"week": week, "popularity": None, "trending": True}
        song[(week, region)] = {**base, "region": region, "rank": rank, "streams": streams}
    return {
        track_id: sorted(song.values(), key=lambda p: (p["week"], p.get("region") or ""))
        for track_id, song in points.items()
    }


def _song_data(info: TrackInfo, stored: list[TrackPrediction], points: list[dict[str, Any]]) -> SongData:
    refreshed = [p["_updated_at"] for p in points if p.get("_updated_at") is not None]
    return SongData(
        info=info,
        stored=stored,
        history=[HistoryPoint(**{k: v for k, v in p.items() if not k.startswith("_")}) for p in points],
        refreshed_at=max(refreshed) if refreshed else None,
        latest_week=max((p["week"] for p in points), default=None),
    )


async def load_songs(*, session: AsyncSession, track_ids: Sequence[str]) -> dict[str, SongData]:
    """Stored facts about the songs the database holds (unknown ids are absent)."""
    infos = await _track_infos(session, track_ids)
    if not infos:
        return {}
    known = list(infos)
    stored = await _stored_predictions(session, known, infos)
    histories = await _histories(session, known)
    return {i: _song_data(infos[i], stored.get(i, []), histories.get(i, [])) for i in known}


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
        for prediction in await forecasting.forecast_tracks(
            session=session, settings=settings, week=week, track_ids=ids
        ):
            result[prediction.track_id].append(prediction)
    return result


async def forecasts_for(
    *, session: AsyncSession, settings: PredictorSettings, track_ids: Sequence[str]
) -> list[TrackForecast]:
    """Full forecasts (current values, 26/52-week forecasts with intervals, history) of stored songs,
    in the order asked; ids the database does not hold are skipped."""
    songs = await load_songs(session=session, track_ids=track_ids)
    stale = [song for song in songs.values() if not song.stored_is_current]
    fresh = await compute_on_demand(session=session, settings=settings, songs=stale) if stale else {}
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
