"""Trainer entry points: one training pass (the CLI's `songpop train`) and the scheduled service."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.db import make_engine, make_sessionmaker, session_scope, wait_for_database
from shared.events import ModelUpdated, envelope
from shared.forecasting import train_and_register
from shared.heartbeat import beat_forever
from shared.models import ModelVersion, utcnow
from shared.mqtt import stay_present, topics
from shared.outbox import (
    BrokerUnavailable,
    add_event,
    flush_outbox,
    pending_events,
    publish_after_run,
)
from shared.schedule import ScheduleState, run_on_schedule

from .settings import TrainerSettings

log = logging.getLogger(__name__)
SERVICE = "trainer"
OUTBOX_RETRY_SECONDS = 30.0


def announcement(version: ModelVersion) -> ModelUpdated:
    return ModelUpdated(
        version=version.version,
        signal=version.signal,
        horizon_weeks=version.horizon_weeks,
        kind=version.kind,
        metrics=version.metrics,
        baselines=version.baselines,
        cold_start=version.cold_start,
        demo=version.is_demo,
    )


async def train_once(
    settings: TrainerSettings,
    *,
    horizons: Sequence[int] = (26, 52),
    sessions: async_sessionmaker[AsyncSession] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> list[ModelVersion]:
    """Train, backtest and register; announce each model that became active on `model-updated`.
    `progress(phase, done, total)` follows the models trained."""
    engine = make_engine(settings.effective_database_url) if sessions is None else None
    try:
        if engine is not None:
            await wait_for_database(engine, within=10)
            sessions = make_sessionmaker(engine)
        assert sessions is not None
        activated = await train_and_register(
            sessions=sessions, settings=settings, horizons=tuple(horizons), progress=progress
        )
        await ScheduleState(sessions, SERVICE).merge(
            last_run=utcnow().isoformat(), activated=[v.version for v in activated]
        )
        if activated:
            async with session_scope(sessions) as session:
                for version in activated:
                    add_event(
                        session,
                        topic=topics(settings).model_updated,
                        event=envelope(SERVICE, announcement(version)),
                        retain=True,
                    )
        log.info("training done: %d model(s) became active", len(activated))
        return await publish_after_run(activated, settings=settings, sessions=sessions, service=SERVICE)
    finally:
        if engine is not None:
            await engine.dispose()


async def serve(settings: TrainerSettings | None = None) -> None:
    """Retrain on the schedule until cancelled; the next run time is kept in app_state."""
    settings = settings or TrainerSettings()
    engine = make_engine(settings.effective_database_url)
    sessions = make_sessionmaker(engine)

    async def job() -> None:
        try:
            await train_once(settings, sessions=sessions)
        except BrokerUnavailable as exc:
            log.warning("%s", exc)

    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(
                run_on_schedule(
                    "train",
                    settings.train_cron,
                    settings.train_timezone,
                    job,
                    state=ScheduleState(sessions, SERVICE),
                )
            )
            group.create_task(publish_forever(settings, sessions))
            group.create_task(stay_present(settings, SERVICE))
            group.create_task(beat_forever(settings, SERVICE))
    finally:
        await engine.dispose()


async def publish_forever(settings: TrainerSettings, sessions: async_sessionmaker[AsyncSession]) -> None:
    """Publish `model-updated` events a broker outage left in the outbox, without waiting a week for the
    next training."""
    while True:
        await asyncio.sleep(OUTBOX_RETRY_SECONDS)
        try:
            if await pending_events(sessions=sessions, producer=SERVICE):
                await flush_outbox(settings=settings, sessions=sessions, service=SERVICE)
        except BrokerUnavailable as exc:
            log.warning("%s", exc)
        except (OperationalError, InterfaceError) as exc:  # database away: try again later
            log.warning("pending events not checked, database unavailable (%s)", type(exc).__name__)
