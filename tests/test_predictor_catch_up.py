"""Catching up after downtime: of each kind of event, only the newest missed one is handled; the older
ones are marked handled in the same transaction."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlmodel import col

from services.predictor import service
from shared.events import ModelUpdated, envelope
from shared.models import Outbox, ProcessedEvent
from shared.mqtt import topics
from shared.outbox import add_event
from tests.predictor_support import db_updated, predictor_settings, seed_songs


async def stage(sessions: Any, topic: str, events: list[Any]) -> None:
    async with sessions() as session:
        for event in events:
            add_event(session, topic=topic, event=event, retain=True)
        await session.commit()


async def test_only_the_newest_of_each_kind_is_handled(settings, sessions, monkeypatch) -> None:
    await seed_songs(sessions, n=6)
    config = predictor_settings(settings)
    t = topics(config)
    updates = [db_updated(run_id=n) for n in range(1, 5)]
    models = [envelope("trainer", ModelUpdated(version=f"v{n}", signal="popularity", horizon_weeks=26,
                                               kind="gbm")) for n in range(2)]  # fmt: skip
    await stage(sessions, t.db_updated, updates)
    await stage(sessions, t.model_updated, models)
    handled: list[tuple[str, int]] = []
    original = service.predict_trending

    async def spying(**kwargs: Any) -> Any:
        handled.append((kwargs["event_id"], len(kwargs.get("superseded", ()))))
        return await original(**kwargs)

    monkeypatch.setattr(service, "predict_trending", spying)
    assert await service.catch_up(sessions=sessions, settings=config, topics=t) == 6
    assert handled == [(updates[-1].event_id, 3), (models[-1].event_id, 1)]
    async with sessions() as session:
        claimed = set((await session.exec(select(ProcessedEvent.event_id))).scalars().all())  # type: ignore[call-overload]
        latest = (
            await session.exec(select(func.count()).where(col(Outbox.topic) == t.predictions_latest))
        ).one()
    assert claimed == {e.event_id for e in updates + models}
    assert latest[0] == 2, "one forecast per kind, not one per missed event"
    assert await service.catch_up(sessions=sessions, settings=config, topics=t) == 0
