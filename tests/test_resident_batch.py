"""The resident answers of a batch this process just stored are built from its rows in memory
(`batch_answers`), not read back: byte for byte the answers the read-back and the plain builds give for the
same data, on the test session's database; the held rows stand only while no other write of predictions
followed them; and while a batch is being stored, the rebuild it will replace waits, not ready."""

from __future__ import annotations

import dataclasses
import datetime as dt
import gzip

import orjson
import pytest
from sqlalchemy import update
from sqlmodel import col

from services.predictor import batch_answers, service, tracks
from services.predictor.cache import ResidentAnswers, ResponseCache
from services.predictor.deps import Clients
from services.predictor.fastpath import bodies
from services.predictor.tracks import apply_changes, build_answers, refresh_resident, standing_batch
from shared.forecasting import train_and_register
from shared.forecasting.synthetic import synthetic_charts
from shared.models import Track
from shared.mqtt import topics
from shared.outbox import Staged
from shared.rowcolumns import RowColumns
from tests.forecasting_support import store_charts
from tests.predictor_support import predictor_settings, seed_songs, store_batch_predictions

pytestmark = pytest.mark.usefixtures("quick_models")


def resident_clients(engine, sessions, settings) -> Clients:
    """What the predictor's warmer works with, looking for changes at every call."""
    cache = ResponseCache(engine, max_entries=0, check_seconds=0)
    return Clients(predictor_settings(settings), sessions, engine, None, cache, ResidentAnswers())  # type: ignore[arg-type]


async def a_stored_batch(engine, sessions, settings) -> Clients:
    """Charts in three regions and popularity for ~100 songs, a streams and a popularity model for 26 weeks
    (52 weeks by persistence), one song renamed after the scoring read it, and the week's batch stored by
    the predictor after the resident answers' first look: their second look applies it."""
    await store_charts(sessions, synthetic_charts(regions=3, weeks=70, size=40, seed=4))
    await train_and_register(sessions=sessions, settings=settings, horizons=(26,))
    clients = resident_clients(engine, sessions, settings)
    await apply_changes(clients=clients)
    config = clients.settings
    await service.handle_event(sessions=sessions, settings=config, topics=topics(config), event_id="week")
    batch = batch_answers._held
    assert batch is not None
    async with sessions() as session:  # the answers name the song as the database holds it now
        renamed = col(Track.id) == batch.rows.column("track_id")[0]
        await session.exec(update(Track).where(renamed).values(name="Renamed ü"))
        await session.commit()
    await apply_changes(clients=clients)
    return clients


@pytest.mark.parametrize("by_range", [True, False], ids=["read by range", "read by ids"])
async def test_answers_from_the_stored_batch_are_the_read_back_ones(
    engine, sessions, settings, monkeypatch, by_range
) -> None:
    clients = await a_stored_batch(engine, sessions, settings)
    batch, ids = clients.resident.batch, sorted(clients.resident.pending)
    assert batch is not None and set(ids) == set(batch.spans) and len(ids) > 50
    read_back: list[str] = []
    ranges: list[bool] = []
    read_rows, range_data = bodies._read_rows, bodies._range_data

    async def spy(connection, track_ids):
        read_back.extend(track_ids)
        return await read_rows(connection, track_ids)

    async def range_spy(connection, track_ids):
        found = await range_data(connection, track_ids)
        ranges.append(found is not None)
        return found

    monkeypatch.setattr(bodies, "_read_rows", spy)
    monkeypatch.setattr(bodies, "_range_data", range_spy)
    monkeypatch.setattr(bodies, "RANGE_MIN_SONGS", 1 if by_range else 10**6)
    monkeypatch.setattr(bodies, "RANGE_MIN_SHARE", 0)  # the week's songs are a part of the catalogue
    from_batch = await build_answers(reader=engine, track_ids=ids, fast=True, batch=batch)
    assert read_back == [] and ranges == ([True] if by_range else [])  # no prediction read back
    plain = await build_answers(reader=engine, track_ids=ids, fast=False)
    assert from_batch == await build_answers(reader=engine, track_ids=ids, fast=True) == plain
    assert set(from_batch) == set(ids)
    answers = {i: orjson.loads(gzip.decompress(body)) for i, body in from_batch.items()}
    renamed = answers[batch.rows.column("track_id")[0]]
    assert {renamed["track"]["name"], *(p["name"] for p in renamed["predictions"])} == {"Renamed ü"}
    kinds = {
        (p["signal"], f["model_version"] == "persistence", f["p_chart"] is None)
        for answer in answers.values()
        for p in answer["predictions"]
        for f in p["forecasts"]
    }  # models and persistence, both signals; chart odds where a model gives them
    assert kinds == {
        ("popularity", False, True), ("popularity", True, True), ("streams", False, False),
        ("streams", True, True),
    }  # fmt: skip


async def test_the_warmer_builds_a_stored_batchs_answers_from_its_rows(
    engine, sessions, settings, monkeypatch
) -> None:
    """The whole pass: every answer built without reading predictions back, equal to the plain build's,
    and the rows let go once built; a batch of another week than the newest stored is read back."""
    clients = await a_stored_batch(engine, sessions, settings)
    batch = clients.resident.batch
    assert batch is not None
    ids = sorted(clients.resident.pending)
    read_back: list[str] = []
    original = bodies._read_rows

    async def spy(connection, track_ids):
        read_back.extend(track_ids)
        return await original(connection, track_ids)

    monkeypatch.setattr(bodies, "_read_rows", spy)
    await refresh_resident(clients=clients)
    assert read_back == [] and clients.resident.ready and clients.resident.batch is None
    plain = await build_answers(reader=engine, track_ids=ids, fast=False)
    assert {i: clients.resident.get(i) for i in ids} == plain

    older = dataclasses.replace(batch, week=batch.week - dt.timedelta(weeks=1))
    assert await build_answers(reader=engine, track_ids=ids, fast=True, batch=older) == plain
    assert sorted(read_back) == ids


def test_a_held_batch_stands_only_while_its_row_is_the_only_prediction_write() -> None:
    week = dt.date(2026, 11, 30)
    rows = RowColumns({"track_id": ["a", "a", "b"], "week": [week] * 3})
    batch_answers.hold(Staged(7, "ev-7", "songs", "{}", True), rows)
    assert standing_batch(None, ((8, "ev-8"),)) is None  # another writer's batch: not ours
    assert standing_batch(None, ((7, "ev-7"), (9, "ev-9"))) is None  # ours, then another's
    mine = standing_batch(None, ((7, "ev-7"),))
    assert mine is not None and mine.week == week and mine.spans == {"a": (0, 2), "b": (2, 3)}
    assert standing_batch(mine, ()) is mine  # nothing written since
    assert standing_batch(mine, None) is None  # a look that did not read the rows: cannot tell
    assert batch_answers.take((7, "ev-7")) is None  # taken once

    two_weeks = RowColumns({"track_id": ["a", "b"], "week": [week, week - dt.timedelta(weeks=1)]})
    batch_answers.hold(Staged(10, "ev-10", "songs", "{}", True), two_weeks)
    assert batch_answers.take((10, "ev-10")) is None  # not one anchor week: not held


async def test_the_rebuild_waits_while_a_batch_is_being_stored(
    engine, sessions, settings, monkeypatch
) -> None:
    ids = await seed_songs(sessions, n=3, charted=0)
    await store_batch_predictions(sessions, ids)
    clients = resident_clients(engine, sessions, settings)
    ordered: list[int] = []  # how many songs each ordering of the pending songs held
    order = tracks.build_order

    def counted_order(pending: set[str]) -> list[str]:
        ordered.append(len(pending))
        return order(pending)

    monkeypatch.setattr(tracks, "build_order", counted_order)
    with batch_answers.storing():
        for _ in range(3):  # the warmer looks in again and again while the batch is stored
            await refresh_resident(clients=clients)
        assert clients.resident.pending == set(ids) and not clients.resident.ready
        assert len(clients.resident) == 0
        assert ordered == []  # nor did it order the pending songs (seconds a look at 1,000,000 songs)
    await refresh_resident(clients=clients)
    assert clients.resident.ready and len(clients.resident) == len(ids)
    assert ordered == [len(ids)]
