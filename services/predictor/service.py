"""Predictor domain logic: forecast the trending songs once per event, store, stage the MQTT messages.

Exactly once per event: handling starts by claiming the event id in `processed_event` inside the same
transaction that stores the predictions and stages their messages in the outbox, so a duplicate
delivery, a second replica or a restart can neither lose nor double a set of predictions.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
from collections.abc import Sequence

from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from shared import forecasting
from shared.catalog import write_tracks
from shared.db import upsert
from shared.events import (
    Topics,
    TrackPrediction,
)
from shared.forecasting.registry import ArtifactError, active_versions, load_version
from shared.forecasting.scoring import ScoredBatch
from shared.forecasting.store import PanelStore
from shared.gcpause import gc_paused
from shared.models import Outbox, ProcessedEvent, Track, utcnow
from shared.predictions import latest_data_week, trending_ids
from shared.rowcolumns import RowColumns
from shared.spotify.client import SpotifyClient
from shared.spotify.errors import SpotifyPaused
from shared.spotify.models import Track as SpotifyTrack
from shared.unknown_tracks import remember_unknown
from shared.weeks import current_week

from . import batch_answers
from .alerts import find_alerts
from .batch_write import BatchPredictions, Steps, build_messages, stage_alerts, stage_batch, store_and_build
from .settings import PredictorSettings

log = logging.getLogger(__name__)

CONSUMER = "predictor"


class UnknownTracks(LookupError):
    """Spotify does not know these ids."""

    def __init__(self, ids: Sequence[str]) -> None:
        super().__init__(f"Spotify does not know track(s): {', '.join(ids)}")
        self.ids = list(ids)


def forecast_settings(settings: PredictorSettings) -> PredictorSettings:
    """The settings forecasts are made with: seeing the emulator's (demo) data when the predictor runs on
    the emulator (the ingestor labels what it fetches from the emulator as demo, and the forecaster leaves
    demo rows out unless told to use them)."""
    if settings.uses_emulator and not settings.demo:
        return settings.model_copy(update={"demo": True})
    return settings


async def forecast_at(
    *, session: AsyncSession, settings: PredictorSettings, anchors: dict[str, dt.date]
) -> list[TrackPrediction]:
    """On-demand forecasts of songs each at its own anchor week (`shared.forecasting.forecast_tracks` with
    `forecast_settings`): one load and scoring shared by all of them, or with `rest_shared_scoring` off one
    call per week (the benchmark's baseline; the same answers)."""
    settings = forecast_settings(settings)
    if settings.rest_shared_scoring:
        return await forecasting.forecast_tracks(session=session, settings=settings, anchors=anchors)
    by_week: dict[dt.date, list[str]] = {}
    for track_id, week in anchors.items():
        by_week.setdefault(week, []).append(track_id)
    predictions: list[TrackPrediction] = []
    for week, ids in by_week.items():
        predictions += await forecasting.forecast_tracks(
            session=session, settings=settings, anchors=dict.fromkeys(ids, week)
        )
    return predictions


_stores: dict[tuple[str, bool], PanelStore] = {}  # at most one: a process serves one database


def resident_store(settings: PredictorSettings) -> PanelStore:
    """This process's resident panel store of the database (and demo setting) of `settings`: loaded by its
    first refresh, then refreshed by the weeks that changed, so scoring after `db-updated` does not read
    the whole history again. Another database replaces it (its panels would be of no use)."""
    key = (settings.effective_database_url, settings.demo)
    if key not in _stores:
        _stores.clear()
        _stores[key] = PanelStore(demo=settings.demo)
    return _stores[key]


async def forecast_trending(
    *, session: AsyncSession, settings: PredictorSettings, week: dt.date, track_ids: Sequence[str]
) -> ScoredBatch:
    """The batch scoring after `db-updated`: the resident store is brought up to the database (in the
    caller's transaction, so it sees what the event announced), then every song is scored from memory, into
    columns (`ScoredBatch`: the stored rows come straight from them)."""
    settings = forecast_settings(settings)
    store = resident_store(settings)
    async with store.lock:
        refreshed = await store.refresh(session)
        log.info(
            "panel store: %s, %d chart week(s), %d snapshot week(s), %d song bucket(s), %d rows in %.2f s",
            "loaded" if refreshed.full else "refreshed", len(refreshed.chart_weeks),
            len(refreshed.snapshot_weeks), refreshed.song_buckets, refreshed.rows, refreshed.seconds,
        )  # fmt: skip
        return await forecasting.score_from_store(
            session=session, settings=settings, store=store, week=week, track_ids=list(track_ids)
        )


async def claim(session: AsyncSession, event_id: str) -> bool:
    """Record that this consumer handles `event_id`; False if it was handled (or claimed) already."""
    if await session.get(ProcessedEvent, (CONSUMER, event_id)) is not None:
        return False
    session.add(ProcessedEvent(consumer=CONSUMER, event_id=event_id))
    try:
        await session.flush()
    except IntegrityError:  # another replica claimed it between our read and our insert
        await session.rollback()
        return False
    return True


async def predict_trending(
    *,
    sessions: async_sessionmaker[AsyncSession],
    settings: PredictorSettings,
    topics: Topics,
    event_id: str,
    superseded: Sequence[str] = (),
    steps: Steps | None = None,
) -> Sequence[TrackPrediction] | None:
    """Forecast this week's trending songs for the event `event_id`; None if it was handled already.
    `superseded` events (older ones of the same kind) are marked handled in the same transaction.
    `steps` receives the seconds of each step.

    The caller publishes the staged messages (shared.outbox.publish_pending with
    `batch_messages.expander`) after this returns.
    """
    step = steps or Steps()
    async with sessions() as session:
        with step("claim"):
            if not await claim(session, event_id):
                log.info("event %s already handled; skipped", event_id)
                return None
            await claim_superseded(session, superseded)
        with step("week and songs"):
            week = await latest_data_week(session)
            trending = await trending_ids(session, week) if week is not None else []
        with step("refresh and scoring"):
            batch = (
                await forecast_trending(session=session, settings=settings, week=week, track_ids=trending)
                if week is not None
                else None
            )
        with step("prediction rows"):
            rows = batch.rows(utcnow()) if batch is not None else []
        with step("stage messages"):
            latest, songs_row = await stage_batch(
                session, topics=topics, week=week or current_week(), demo=bool(rows) and batch is not None
                and batch.demo, latest_limit=settings.latest_message_max_predictions, songs=bool(rows),
            )  # fmt: skip
        with step("store predictions"):
            wants_alerts = settings.alert_threshold is not None or settings.alert_move is not None
            build = functools.partial(build_messages, batch, topics, latest, songs_row, wants_alerts)
            data = await store_and_build(session, rows, build, step)  # every prediction only for the alerts
        with step("alerts"):
            songs = sorted({p["track_id"] for p in data})
            alerts = await find_alerts(session, settings, data, week=week or current_week(), songs=songs)
            await stage_alerts(session, topics=topics, alerts=alerts)
        with step("commit"):
            resident = settings.rest_cache_warm and settings.predictor_fastpath  # builds from the rows
            if resident and isinstance(rows, RowColumns) and songs_row is not None:
                batch_answers.hold(songs_row, rows)
            try:
                await session.commit()
            except BaseException:
                batch_answers.forget()
                raise
    log.info("event %s: %d predictions of %d songs, %d alerts (%s)", event_id, len(batch or ()),
             len(trending), len(alerts), step)  # fmt: skip
    return BatchPredictions(batch)


async def handle_event(
    *,
    sessions: async_sessionmaker[AsyncSession],
    settings: PredictorSettings,
    topics: Topics,
    event_id: str,
    superseded: Sequence[str] = (),
    steps: Steps | None = None,
) -> Sequence[TrackPrediction] | None:
    """`predict_trending`, tried again when the database gives up on a lock (a deadlock or lock timeout
    between replicas writing the same week's predictions): the transaction was rolled back whole, claim
    included, so trying again is safe."""
    for attempt in range(1, settings.event_attempts + 1):
        try:
            with batch_answers.storing(), gc_paused():
                return await predict_trending(
                    sessions=sessions,
                    settings=settings,
                    topics=topics,
                    event_id=event_id,
                    superseded=superseded,
                    steps=steps,
                )
        except OperationalError as exc:
            if attempt == settings.event_attempts:
                raise
            log.warning("event %s: database conflict (%s); attempt %d again", event_id, exc.orig, attempt + 1)
            await asyncio.sleep(settings.event_retry_seconds * attempt)
    return None


async def missed_events(*, session: AsyncSession, topic: str) -> list[str]:
    """Events published on `topic` (per the outbox) that this consumer never handled, oldest first."""
    handled = select(col(ProcessedEvent.event_id)).where(col(ProcessedEvent.consumer) == CONSUMER)
    query = (
        select(col(Outbox.event_id))
        .where(col(Outbox.topic) == topic, col(Outbox.event_id).not_in(handled))
        .order_by(col(Outbox.id))
    )
    return list((await session.exec(query)).all())


async def catch_up(
    *, sessions: async_sessionmaker[AsyncSession], settings: PredictorSettings, topics: Topics
) -> int:
    """After downtime: of each kind of event (`db-updated`, `model-updated`), handle the newest missed one
    and mark the older ones handled in the same transaction (forecasts always start from the latest data
    and the active models, so replaying each would only repeat the same work). Returns events caught up."""
    caught = 0
    for topic in (topics.db_updated, topics.model_updated):
        async with sessions() as session:
            missed = await missed_events(session=session, topic=topic)
        if not missed:
            continue
        log.info("catching up: %d missed event(s) on %s, the newest handled", len(missed), topic)
        await handle_event(
            sessions=sessions, settings=settings, topics=topics, event_id=missed[-1], superseded=missed[:-1]
        )
        caught += len(missed)
    return caught


async def claim_superseded(session: AsyncSession, event_ids: Sequence[str]) -> None:
    """Mark events handled without handling them (a newer one of their kind is being handled)."""
    rows = [{"consumer": CONSUMER, "event_id": event_id, "processed_at": utcnow()} for event_id in event_ids]
    await upsert(session=session, model=ProcessedEvent, rows=rows, keys=["consumer", "event_id"])


async def refused_models(*, session: AsyncSession) -> dict[str, str]:
    """The active models whose artifact the registry refuses (altered, missing, unreadable), with why:
    checked when the predictor starts and after each event, so a refusal shows at `/v1/models` and
    `/readyz` before the first scoring needs the model. (A verified artifact stays loaded, in a cache.)"""
    refused: dict[str, str] = {}
    for model in (await active_versions(session)).values():
        try:
            await asyncio.to_thread(load_version, model)
        except ArtifactError as exc:
            refused[model.version] = str(exc)
    for name, reason in refused.items():
        log.error("active model %s refused: %s; its forecasts fall back to persistence", name, reason)
    return refused


# ---------------------------------------------------------------- on-demand forecasts (REST)


async def ensure_tracks(
    *,
    sessions: async_sessionmaker[AsyncSession],
    spotify: SpotifyClient,
    track_ids: Sequence[str],
    demo: bool,
) -> None:
    """Fetch and store the songs the database has never seen; raise UnknownTracks for ids Spotify lacks
    (remembered: `shared.unknown_tracks`). When the hourly cap or Spotify pauses the fetch, the songs
    fetched so far are stored and SpotifyPaused is raised."""
    async with sessions() as session:
        query = select(col(Track.id)).where(col(Track.id).in_(list(track_ids)))
        known = set((await session.exec(query)).all())
    missing = [i for i in track_ids if i not in known]
    if not missing:
        return
    try:
        fetched = await spotify.get_tracks(missing)
    except SpotifyPaused as paused:
        partial = {k: v for k, v in paused.partial.items() if isinstance(v, SpotifyTrack)}
        await _store_fetched(sessions=sessions, spotify=spotify, tracks=partial, demo=demo)
        raise
    await _store_fetched(sessions=sessions, spotify=spotify, tracks=fetched, demo=demo)
    unknown = [i for i in missing if i not in fetched]
    if unknown:
        async with sessions() as session:
            await remember_unknown(session, unknown)
            await session.commit()
        raise UnknownTracks(unknown)


async def _store_fetched(
    *,
    sessions: async_sessionmaker[AsyncSession],
    spotify: SpotifyClient,
    tracks: dict[str, SpotifyTrack],
    demo: bool,
) -> None:
    if tracks:
        await write_tracks(
            sessions=sessions, spotify=spotify, tracks=tracks, week=current_week(), trending=set(), demo=demo
        )
        log.info("fetched and stored %d song(s) asked for on demand", len(tracks))
