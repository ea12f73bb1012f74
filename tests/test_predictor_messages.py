"""The predictor's messages built from the scoring's columns (`services.predictor.messages` and
`batch_messages`): each payload validates against its schema and says what the pydantic objects say; every
song's message is staged as one batch row and built when it is published, from memory or, after a crash,
from the stored predictions (same songs, topics, event ids and version); they are published in order
with several awaiting the broker at once."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from sqlmodel import col, select, update

from services.predictor import batch_messages, batch_write
from services.predictor.service import predict_trending
from shared.events import PredictionsLatest, TrackPrediction, parse
from shared.models import Outbox, Snapshot
from shared.mqtt import make_client, topics
from shared.outbox import Message, Staged, publish_in_order
from shared.predictions import stored_predictions, week_prediction_data
from tests.predictor_support import WEEK, messages_until, predictor_settings, seed_songs


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


async def expanded(sessions: Any, settings: Any, row: Outbox) -> list[Message]:
    """The messages the publisher builds for the built row `row` (from memory while this process holds
    its batch, else from the database)."""
    assert row.id is not None
    staged_row = Staged(row.id, row.event_id, row.topic, row.payload, row.retain)
    expand = batch_messages.expander(sessions, topics(settings))
    return [message async for chunk in expand(staged_row) for message in chunk]


async def test_payloads_built_from_columns_equal_the_objects(settings, sessions) -> None:
    ids = await seed_songs(sessions, n=30, charted=8)
    config = predictor_settings(settings, latest_message_max_predictions=10)
    t = topics(config)
    result = await predict_trending(sessions=sessions, settings=config, topics=t, event_id="e1")
    assert result is not None
    objects = list(result)  # the pydantic objects, built from the same columns the old way
    assert {p.track_id for p in objects} == set(ids) and any(p.signal == "streams" for p in objects)
    rows = await staged(sessions)
    assert [r.topic for r in rows] == [t.predictions_latest, t.prediction_for("+")], "one row for all songs"
    built = {event_id: row_id for event_id, (row_id, _) in batch_messages._built.items()}
    assert built == {r.event_id: r.id for r in rows}, "built while storing, the staged rows' ids as version"
    assert all(r.retain and r.producer == "predictor" for r in rows)
    assert all(len(r.payload) < 1000 for r in rows), "descriptions, built when published"
    ((topic, payload, retain),) = await expanded(sessions, config, rows[0])
    latest = parse(payload, PredictionsLatest)
    assert (topic, retain, latest.event_id, latest.version) == (
        t.predictions_latest,
        True,
        rows[0].event_id,
        rows[0].id,
    )
    assert latest.data.predictions == objects[:10] and latest.data.count == 10, "capped by the setting"

    messages = await expanded(sessions, config, rows[1])
    assert [topic for topic, _, _ in messages] == [t.prediction_for(i) for i in sorted(ids)]
    assert all(retain for _, _, retain in messages)
    per_song = {topic.rsplit("/", 1)[-1]: parse(payload, TrackPrediction) for topic, payload, _ in messages}
    assert {k: v.data for k, v in per_song.items()} == headline(objects)
    assert {e.producer for e in per_song.values()} == {"predictor"}
    assert {e.version for e in per_song.values()} == {rows[1].id}, "the row's id: later batches higher"
    namespace = uuid.UUID(rows[1].event_id)
    assert {k: e.event_id for k, e in per_song.items()} == {k: str(uuid.uuid5(namespace, k)) for k in ids}
    assert {e.occurred_at for e in per_song.values()} == {latest.occurred_at}


async def test_after_a_crash_the_messages_come_from_the_stored_predictions(
    settings, sessions, monkeypatch
) -> None:
    """A process that did not compute the batch (the one that did crashed after its commit) builds the
    same messages from the database, byte for byte: same topics, event ids, version, envelope and values
    (built from memory in parts of 3 predictions, whole songs each)."""
    monkeypatch.setattr(batch_write, "MESSAGE_PART", 3)
    ids = await seed_songs(sessions, n=25, charted=10)
    async with sessions() as session:  # charted songs of unknown popularity: their streams are the headline
        await session.exec(
            update(Snapshot)
            .where(col(Snapshot.track_id).in_(ids[:3]), col(Snapshot.week) == WEEK)
            .values(popularity=None)
        )
        await session.commit()
    config = predictor_settings(settings, latest_message_max_predictions=7)  # read in part
    assert await predict_trending(sessions=sessions, settings=config, topics=topics(config), event_id="e1")
    for row in await staged(sessions):  # the latest state, then every song's message
        from_memory = await expanded(sessions, config, row)  # what this process computed
        from_database = await expanded(sessions, config, row)  # published once: the memory is released
        assert [(t, r) for t, _, r in from_database] == [(t, r) for t, _, r in from_memory]
        for (_, stored, _), (_, computed, _) in zip(from_database, from_memory, strict=True):
            model = PredictionsLatest if row.topic == topics(config).predictions_latest else TrackPrediction
            a, b = parse(stored, model), parse(computed, model)
            assert a.model_dump(exclude={"data"}) == b.model_dump(exclude={"data"})
            assert stored == computed, "the same bytes: DOUBLE columns give back the values computed"
            assert a.data == b.data
    ranks = {e.data.track_id: e.data.rank for e in (parse(p, TrackPrediction) for _, p, _ in from_database)}
    assert [ranks[i] for i in ids[:4]] == [1, 2, 3, None], "streams carry their chart rank"


async def test_stored_prediction_data_is_what_the_objects_dump(settings, sessions) -> None:
    """The read model's stored predictions of a week as dicts (the messages rebuilt after a crash), read
    in parts, say exactly what its `TrackPrediction` objects say, as JSON, by song in Python's order."""
    await seed_songs(sessions, n=12, charted=5)
    config = predictor_settings(settings)
    assert await predict_trending(sessions=sessions, settings=config, topics=topics(config), event_id="e1")
    async with sessions() as session:
        objects = await stored_predictions(session, week=WEEK)
        parts = [part async for part in week_prediction_data(session, week=WEEK, chunk_rows=5)]
    data = [p for part in parts for p in part]
    assert len(parts) > 2 and all(
        part[-1]["track_id"] != after[0]["track_id"] for part, after in zip(parts, parts[1:], strict=False)
    )
    keys = [(p["track_id"], p["signal"]) for p in data]
    assert keys == sorted(keys) and any(signal == "streams" for _, signal in keys)
    by_key = {(p.track_id, p.signal): p.model_dump(mode="json") for p in objects}
    assert data == [by_key[key] for key in keys] and len(by_key) == len(data)
    assert [list(d) for d in data] == [list(by_key[key]) for key in keys], "same field order"


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


def test_song_event_ids_are_uuid5_of_the_song():
    # the hand-made UUID 5 (faster for 100,000 songs a week) must be the standard one, or a redelivery
    # built elsewhere (by uuid.uuid5) would carry another id and reach consumers twice
    for _ in range(200):
        namespace = uuid.uuid4()
        for track_id in ("4iV5W9uYEdYUVa79Axb7Rh", "x", "Ünïcödé-♫", uuid.uuid4().hex):
            expected = str(uuid.uuid5(namespace, track_id))
            assert batch_messages.song_event_id(namespace.bytes, track_id) == expected
