"""The predictor's messages built from the scoring's columns (`services.predictor.messages`): each payload
validates against its schema and says what the pydantic objects say; they are staged in order and
published in order with several awaiting the broker at once."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlmodel import col, select

from services.predictor.service import predict_trending
from shared.events import PredictionsLatest, TrackPrediction, parse
from shared.models import Outbox
from shared.mqtt import make_client, topics
from shared.outbox import publish_in_order
from tests.predictor_support import messages_until, predictor_settings, seed_songs


async def staged(sessions: Any) -> list[Outbox]:
    async with sessions() as session:
        return list((await session.exec(select(Outbox).order_by(col(Outbox.id)))).all())


def headline(predictions: list[TrackPrediction]) -> dict[str, TrackPrediction]:
    """Per song: its popularity prediction where there is one, else its first streams prediction."""
    best: dict[str, TrackPrediction] = {}
    for p in predictions:
        if p.track_id not in best or p.signal == "popularity":
            best[p.track_id] = p
    return best


async def test_payloads_built_from_columns_equal_the_objects(settings, sessions) -> None:
    ids = await seed_songs(sessions, n=30, charted=8)
    config = predictor_settings(settings, latest_message_max_predictions=10)
    t = topics(config)
    result = await predict_trending(sessions=sessions, settings=config, topics=t, event_id="e1")
    assert result is not None
    objects = list(result)  # the pydantic objects, built from the same columns the old way
    assert {p.track_id for p in objects} == set(ids) and any(p.signal == "streams" for p in objects)
    rows = await staged(sessions)
    assert rows[0].topic == t.predictions_latest and rows[0].retain
    latest = parse(rows[0].payload, PredictionsLatest).data
    assert latest.predictions == objects[:10] and latest.count == 10, "capped by the setting"
    per_song = {r.topic.rsplit("/", 1)[-1]: parse(r.payload, TrackPrediction) for r in rows[1:]}
    assert {k: v.data for k, v in per_song.items()} == headline(objects)
    assert all(r.retain and r.producer == "predictor" for r in rows)
    assert len({r.event_id for r in rows}) == len(rows)
    assert {e.producer for e in per_song.values()} == {"predictor"}


async def test_publishing_keeps_the_order_with_a_window(settings, monkeypatch) -> None:
    from shared import outbox

    monkeypatch.setattr(outbox, "PUBLISH_WINDOW", 7)
    t = topics(settings)
    topic = f"{t.root}/order"
    async with make_client(settings, "test-sub", announce=False) as sub:
        await sub.subscribe(topic, qos=1)
        async with make_client(settings, "predictor", announce=False) as pub:
            await publish_in_order(pub, [(topic, str(i).encode(), False) for i in range(300)])
        got = await messages_until(sub, lambda got: len(got) >= 300)
    assert [int(m.payload) for m in got] == list(range(300))


async def test_a_failed_publish_raises(settings) -> None:
    async with make_client(settings, "predictor", announce=False) as pub:
        # an invalid topic (a wildcard) is refused by the client: the error surfaces, nothing hangs
        failing = [(f"{topics(settings).root}/ok", b"1", False), ("bad/#", b"2", False)]
        raised = False
        try:
            await asyncio.wait_for(publish_in_order(pub, failing), 10)
        except Exception:
            raised = True
    assert raised
