"""The predictor on the real broker and database: each `db-updated` is handled exactly once despite
duplicate deliveries, restarts and a second replica, and forecast alerts reach their topic."""

from __future__ import annotations

import asyncio
from typing import Any

import aiomqtt
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from services.predictor.alerts import alerts_for
from services.predictor.service import predict_trending
from shared.db import upsert
from shared.events import CHANNELS, ForecastAlert, PredictionsLatest, Topics, parse
from shared.models import PREDICTION_KEY, Outbox, Prediction
from shared.mqtt import make_client, publish_model, topics
from shared.signals import Signal
from shared.weeks import add_weeks
from tests.predictor_support import (
    WEEK,
    count,
    db_updated,
    messages_until,
    outbox_rows_on,
    predictor_settings,
    processed,
    publish_like_the_ingestor,
    running_predictor,
    seed_songs,
)


def value_26(prediction: Any) -> float:
    return next(f.value for f in prediction.forecasts if f.horizon_weeks == 26)


def received(topic_leaf: str) -> float:
    """db-updated (or other) messages the predictors of this process have received so far."""
    value = REGISTRY.get_sample_value(
        "songpop_mqtt_received_total", {"service": "predictor", "topic": topic_leaf}
    )
    return value or 0.0


async def observe(settings, *filters: str) -> aiomqtt.Client:
    client = make_client(settings, "observer", announce=False)
    await client.__aenter__()
    for topic_filter in filters:
        await client.subscribe(topic_filter, qos=1)
    return client


async def test_duplicate_db_updated_gives_one_set_of_predictions(settings, sessions) -> None:
    ids = await seed_songs(sessions, n=8, charted=3)
    config = predictor_settings(settings)
    t = topics(config)
    first, later = db_updated(run_id=1), db_updated(run_id=2)
    duplicate = first.model_copy()  # the same event delivered again (same event_id)
    before = received("db-updated")
    observer = await observe(settings, t.predictions_latest)
    try:
        async with running_predictor(config):
            for event in (first, duplicate, later):
                await publish_model(observer, t.db_updated, event)
            latest = await messages_until(observer, lambda got: len(distinct_events(got)) == 2)
    finally:
        await observer.__aexit__(None, None, None)

    assert received("db-updated") - before == 3, "all three deliveries reached the predictor"
    assert await processed(sessions) == {first.event_id, later.event_id}
    assert await count(sessions, outbox_rows_on(t.predictions_latest)) == 2, "the duplicate staged nothing"
    sets = [parse(m.payload, PredictionsLatest).data for m in latest]
    assert {p.track_id for p in sets[0].predictions} == set(ids)
    rows = await count(sessions, select(func.count()).select_from(Prediction))
    assert rows == sum(len(p.forecasts) for p in sets[0].predictions)


async def test_concurrent_handling_of_one_event_claims_it_once(settings, sessions) -> None:
    await seed_songs(sessions, n=5)
    config = predictor_settings(settings)
    event_id = db_updated().event_id
    outcomes = await asyncio.gather(
        *(
            predict_trending(sessions=sessions, settings=config, topics=topics(config), event_id=event_id)
            for _ in range(3)
        )
    )
    assert sum(o is not None for o in outcomes) == 1
    assert await count(sessions, outbox_rows_on(topics(config).predictions_latest)) == 1


def distinct_events(messages: list[aiomqtt.Message]) -> set[str]:
    return {parse(m.payload, PredictionsLatest).event_id for m in messages}


def latest_week(message: aiomqtt.Message) -> Any:
    return parse(message.payload, PredictionsLatest).data.week


async def test_restarted_predictor_catches_up_from_the_database(settings, sessions) -> None:
    last_week = add_weeks(WEEK, -1)
    await seed_songs(sessions, n=6, week=last_week, seed=1)
    config = predictor_settings(settings)
    t = topics(config)
    seen = db_updated(run_id=1, week=last_week)
    observer = await observe(settings, t.predictions_latest)
    async with running_predictor(config):
        await publish_like_the_ingestor(settings, sessions, seen)
        await messages_until(observer, lambda got: len(got) == 1)
    await observer.__aexit__(None, None, None)

    # while the predictor is down, two weekly runs write new data and announce it
    this_week_ids = await seed_songs(sessions, n=4, week=WEEK, seed=2)
    missed = [db_updated(run_id=2, week=WEEK), db_updated(run_id=3, week=WEEK)]
    await publish_like_the_ingestor(settings, sessions, *missed)
    assert await count(sessions, outbox_rows_on(t.predictions_latest)) == 1

    observer = await observe(settings, t.predictions_latest)
    try:
        async with running_predictor(config):
            # the retained message of the first run, then the catch-up's
            got = await messages_until(observer, lambda got: latest_week(got[-1]) == WEEK)
    finally:
        await observer.__aexit__(None, None, None)

    assert await processed(sessions) == {seen.event_id, *(e.event_id for e in missed)}
    assert await count(sessions, outbox_rows_on(t.predictions_latest)) == 2, "two missed events, one new set"
    caught_up = parse(got[-1].payload, PredictionsLatest).data
    assert {p.track_id for p in caught_up.predictions} == set(this_week_ids)


async def test_two_replicas_on_a_shared_subscription_produce_one_set_per_event(settings, sessions) -> None:
    await seed_songs(sessions, n=6)
    prefix = settings.mqtt_client_prefix
    replicas = [predictor_settings(settings, mqtt_client_prefix=f"{prefix}-{n}") for n in (1, 2)]
    assert replicas[0].predictor_share_group == replicas[1].predictor_share_group
    t = topics(settings)
    events = [db_updated(run_id=n) for n in range(1, 7)]
    before = received("db-updated")
    observer = await observe(settings, t.predictions_latest)
    try:
        async with running_predictor(replicas[0]), running_predictor(replicas[1]):
            for event in events:
                await publish_model(observer, t.db_updated, event)
            # both replicas publish the outbox, so a message may come twice (at least once): count ids
            await messages_until(observer, lambda got: len(distinct_events(got)) == len(events))
    finally:
        await observer.__aexit__(None, None, None)

    assert received("db-updated") - before == len(events), "each event went to one replica, not both"
    assert await processed(sessions) == {e.event_id for e in events}
    assert await count(sessions, outbox_rows_on(t.predictions_latest)) == len(events)


async def test_alerts_for_threshold_crossings_and_big_moves_reach_their_topics(settings, sessions) -> None:
    ids = await seed_songs(sessions, n=6, charted=0)
    crossing, mover = ids[0], ids[1]
    config = predictor_settings(settings, alert_threshold=-500.0, alert_move=5.0)
    t = topics(config)
    # last week's 26-week forecasts: far below the threshold for one song, far above today's for another,
    # and the same as this week's for the rest (no alert)
    last_week = add_weeks(WEEK, -1)
    seeded = await predict_trending(sessions=sessions, settings=config, topics=t, event_id="probe")
    assert seeded
    previous: dict[tuple[str, str], float] = {(p.track_id, p.signal): value_26(p) for p in seeded}
    previous[(crossing, Signal.POPULARITY)] = -1000.0
    previous[(mover, Signal.POPULARITY)] = 1000.0
    async with sessions() as session:
        await session.exec(Prediction.__table__.delete())  # type: ignore[attr-defined]
        await session.exec(Outbox.__table__.delete())  # type: ignore[attr-defined]
        rows = [
            {"track_id": track, "week": last_week, "signal": signal, "region": "", "horizon_weeks": 26,
             "value": value, "model_version": "earlier"}
            for (track, signal), value in previous.items()
        ]  # fmt: skip
        await upsert(session=session, model=Prediction, rows=rows, keys=PREDICTION_KEY)
        await session.commit()

    observer = await observe(settings, t.alert("+"), t.predictions_latest)
    try:
        async with running_predictor(config):
            await publish_model(observer, t.db_updated, db_updated())
            got = await messages_until(observer, lambda got: str(got[-1].topic) == t.predictions_latest)
            latest = parse(got[-1].payload, PredictionsLatest).data
            expected = alerts_for(latest.predictions, previous, threshold=-500.0, move=5.0)
            alerts = [m for m in got if str(m.topic) != t.predictions_latest]
            if len(alerts) < len(expected):
                alerts += await messages_until(
                    observer, lambda more: len(alerts) + len(more) == len(expected)
                )
    finally:
        await observer.__aexit__(None, None, None)

    published = [(str(m.topic), parse(m.payload, ForecastAlert).data) for m in alerts]
    assert all(topic == t.alert(alert.reason) for topic, alert in published)
    assert sorted(a.model_dump_json() for _, a in published) == sorted(a.model_dump_json() for a in expected)
    reasons = {(a.track_id, a.reason) for _, a in published}
    assert (crossing, "threshold") in reasons and (mover, "moved") in reasons
    assert len(published) == 2, "songs whose forecast did not move raise nothing"
    async with sessions() as session:
        staged = (await session.exec(select(Outbox.topic, Outbox.retain))).all()  # type: ignore[call-overload]
    retained = {c.key: c.retained for c in CHANNELS}
    assert all(retain is retained["forecastAlert"] for topic, retain in staged if "/alerts/" in topic)
    assert all(retain for topic, retain in staged if "/predictions/" in topic)
    assert Topics(t.root).alert("moved") in {topic for topic, _ in staged}
