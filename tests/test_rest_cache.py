"""The predictor's answers from memory: the response cache (answers until the data version, the newest
outbox event, moves, then from the database again; bounded; off when configured so) and the resident
answers (every batch-scored song's, rebuilt song by song when its data changes, byte for byte the
answer the database path builds)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from sqlalchemy.exc import OperationalError
from sqlmodel import col

from services.predictor.app import create_app
from services.predictor.cache import ResidentAnswers, ResponseCache, changed_songs, data_version
from services.predictor.deps import Clients
from services.predictor.tracks import apply_changes, refresh_resident
from shared.db import make_engine, upsert
from shared.events import envelope
from shared.models import PREDICTION_UPDATE, Outbox, Prediction, ProcessedEvent, Track, utcnow
from shared.mqtt import topics
from shared.outbox import add_event
from tests.predictor_support import (
    WEEK,
    db_updated,
    predictor_settings,
    running_emulator,
    seed_songs,
    store_batch_predictions,
)
from tests.servers import serving


@pytest.fixture
def cache_entries() -> int:
    return 100


@pytest.fixture
async def api(settings, sessions, cache_entries) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    async with running_emulator() as (_, emulator_url):
        config = predictor_settings(
            settings, emulator_url, rest_cache_entries=cache_entries, rest_cache_check_seconds=0
        )
        app = create_app(config)
        async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=20) as http:
            yield http, app


async def rename(sessions, track_id: str, name: str) -> None:
    async with sessions() as session:
        await session.exec(update(Track).where(col(Track.id) == track_id).values(name=name))
        await session.commit()


async def announce_new_data(settings, sessions, *, published: bool = False) -> None:
    """What an ingest run does when it commits: an event in the outbox."""
    async with sessions() as session:
        row = add_event(
            session, topic=topics(settings).db_updated, event=envelope("ingestor", db_updated().data)
        )
        if published:
            row.published_at = utcnow()
            session.add(ProcessedEvent(consumer="predictor", event_id=row.event_id))
        await session.commit()


async def name_served(http: httpx.AsyncClient, track_id: str) -> str:
    single = (await http.get(f"/v1/tracks/{track_id}/forecast")).json()["track"]["name"]
    batch = (await http.post("/v1/forecasts", json={"track_ids": [track_id]})).json()
    assert batch["forecasts"][0]["track"]["name"] == single
    return single


async def test_cached_answers_last_until_the_data_version_moves(api, settings, sessions) -> None:
    http, app = api
    (track_id,) = await seed_songs(sessions, n=1)
    assert await name_served(http, track_id) == "Song 0 <b>"
    cache: ResponseCache = app.state.cache
    assert len(cache) == 1 and cache.hits >= 1

    await rename(sessions, track_id, "Renamed")  # written without an event: the cache does not know
    assert await name_served(http, track_id) == "Song 0 <b>"

    await announce_new_data(settings, sessions)
    assert await name_served(http, track_id) == "Renamed"


@pytest.mark.parametrize("cache_entries", [0])
async def test_without_a_cache_every_answer_comes_from_the_database(api, sessions) -> None:
    http, app = api
    (track_id,) = await seed_songs(sessions, n=1)
    assert await name_served(http, track_id) == "Song 0 <b>"
    await rename(sessions, track_id, "Renamed")
    assert await name_served(http, track_id) == "Renamed"
    assert len(app.state.cache) == 0


async def test_cache_keeps_the_most_recently_used_bodies_only(engine) -> None:
    cache = ResponseCache(engine, max_entries=2, check_seconds=3600)
    version = await cache.current_version()
    for track_id in ("a", "b"):
        cache.put(track_id, track_id.encode(), built_at_version=version)
    assert cache.get("a") == b"a"  # "b" is now the least recently used
    cache.put("c", b"c", built_at_version=version)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (b"a", None, b"c")
    cache.put("d", b"d", built_at_version=(version or 0) + 1)  # built from other data: not kept
    assert cache.get("d") is None


async def test_answers_are_gzipped_for_clients_that_accept_it_only(api, sessions) -> None:
    http, _ = api
    (track_id,) = await seed_songs(sessions, n=1)
    path = f"/v1/tracks/{track_id}/forecast"
    plain = await http.get(path, headers={"accept-encoding": "identity"})
    zipped = await http.get(path, headers={"accept-encoding": "br, gzip;q=0.8"})
    refused = await http.get(path, headers={"accept-encoding": "gzip;q=0"})
    assert "content-encoding" not in plain.headers and "content-encoding" not in refused.headers
    assert zipped.headers["content-encoding"] == "gzip"
    assert plain.headers["vary"] == zipped.headers["vary"] == "Accept-Encoding"
    assert zipped.json() == plain.json() == refused.json()
    assert plain.json()["track"]["id"] == track_id


async def resident_up_to_date(app) -> None:
    """Wait until the resident answers have applied the database's current data version."""
    version = await data_version(app.state.clients.reader)
    resident: ResidentAnswers = app.state.resident
    while app.state.cache_warmed_version != version or not resident.ready:
        app.state.cache_warmed.clear()
        await asyncio.wait_for(app.state.cache_warmed.wait(), 20)


async def store_predictions(sessions, track_id: str, value: float) -> None:
    """A batch forecast of `track_id` as the predictor stores it (replacing the week's previous one)."""
    rows = [
        {"track_id": track_id, "week": WEEK, "signal": "popularity", "region": "", "horizon_weeks": h,
         "current": 50.0, "value": value + h, "lower": value, "upper": value + 60,
         "model_version": f"v{value:g}", "cold_start": False, "created_at": utcnow()}
        for h in (26, 52)
    ]  # fmt: skip
    async with sessions() as session:
        await upsert(
            session=session, model=Prediction, rows=rows, update=PREDICTION_UPDATE,
            keys=["track_id", "week", "signal", "region", "horizon_weeks"],
        )  # fmt: skip
        await session.commit()


def served_values(body: dict[str, Any]) -> dict[int, float]:
    return {f["horizon_weeks"]: f["value"] for p in body["predictions"] for f in p["forecasts"]}


async def test_batch_scored_answers_are_resident_once_the_data_moves(api, settings, sessions) -> None:
    http, app = api
    ids = await seed_songs(sessions, n=5, charted=2)
    await store_batch_predictions(sessions, ids, charted=2)
    resident: ResidentAnswers = app.state.resident
    # new data committed (an event already published, so nothing else reacts to it): the changed songs'
    # answers are built by themselves
    await announce_new_data(settings, sessions, published=True)
    await resident_up_to_date(app)

    assert all(track_id in resident for track_id in ids)
    misses = app.state.cache.misses
    body = (await http.get(f"/v1/tracks/{ids[3]}/forecast")).json()
    assert app.state.cache.misses == misses, "answered from the resident answers"
    assert body["source"] == "batch" and body["track"]["id"] == ids[3]


async def test_new_predictions_replace_a_resident_answer_after_the_version_moves(
    api, settings, sessions
) -> None:
    http, app = api
    track_id, other = await seed_songs(sessions, n=2, charted=0)
    await store_predictions(sessions, track_id, 10.0)
    await store_predictions(sessions, other, 10.0)
    await announce_new_data(settings, sessions, published=True)
    await resident_up_to_date(app)
    path = f"/v1/tracks/{track_id}/forecast"
    assert served_values((await http.get(path)).json()) == {26: 36.0, 52: 62.0}
    before = app.state.resident.get(other)

    await store_predictions(sessions, track_id, 20.0)  # without an event: nothing tells the predictor
    assert served_values((await http.get(path)).json()) == {26: 36.0, 52: 62.0}

    await announce_new_data(settings, sessions, published=True)
    await resident_up_to_date(app)
    body = (await http.get(path)).json()
    assert served_values(body) == {26: 46.0, 52: 72.0}
    assert {f["model_version"] for p in body["predictions"] for f in p["forecasts"]} == {"v20"}
    assert track_id in app.state.resident and app.state.resident.get(other) == before


async def test_songs_not_resident_yet_are_answered_from_the_database(api, settings, sessions) -> None:
    http, app = api
    await resident_up_to_date(app)
    scored, unscored = await seed_songs(sessions, n=2, charted=0)
    await store_predictions(sessions, scored, 10.0)  # no event yet: the resident answers lack both
    assert scored not in app.state.resident

    body = (await http.get(f"/v1/tracks/{scored}/forecast")).json()
    assert body["source"] == "batch" and served_values(body) == {26: 36.0, 52: 62.0}
    never_scored = (await http.get(f"/v1/tracks/spotify:track:{unscored}/forecast")).json()
    assert never_scored["source"] == "on_demand" and never_scored["track"]["id"] == unscored


async def test_a_resident_answer_is_the_plain_paths_database_built_one(api, settings, sessions) -> None:
    """The fast path (resident answers before routing) is an optimisation: the plain design, without it and
    without answers in memory, gives the same bytes and headers."""
    http, app = api
    ids = await seed_songs(sessions, n=3, charted=2)
    await store_batch_predictions(sessions, ids, charted=2)
    async with running_emulator() as (_, emulator_url):
        config = predictor_settings(
            settings, emulator_url, rest_cache_entries=0, rest_cache_warm=False, predictor_fastpath=False
        )
        async with serving(create_app(config)) as url, httpx.AsyncClient(base_url=url) as database_only:
            await announce_new_data(settings, sessions, published=True)
            await resident_up_to_date(app)
            for track_id in ids:
                assert track_id in app.state.resident
                for encoding in ("gzip", "identity"):
                    path, headers = f"/v1/tracks/{track_id}/forecast", {"accept-encoding": encoding}
                    resident, built = (
                        await http.get(path, headers=headers),
                        await database_only.get(path, headers=headers),
                    )
                    assert resident.status_code == built.status_code == 200
                    assert resident.content == built.content
                    assert {k: v for k, v in resident.headers.items() if k != "date"} == {
                        k: v for k, v in built.headers.items() if k != "date"
                    }
                    assert resident.json()["source"] == "batch"


async def stage(sessions, topic: str, *, at: int | None = None) -> None:
    """An outbox row on `topic` (with the id `at`: a row that commits after a later id was seen)."""
    async with sessions() as session:
        session.add(
            Outbox(id=at, event_id=str(uuid.uuid4()), topic=topic, producer="predictor", payload="{}")
        )
        await session.commit()


async def test_changed_songs_are_named_by_the_outbox(engine, sessions, settings) -> None:
    """A song's new forecast message names it; `db-updated` (an ingest run's new data: any song's history
    may have moved), a batch's messages (`batch_messages`: one row for every song of the batch) and a row
    that commits below the version already applied mean every song."""
    ids = await seed_songs(sessions, n=3, charted=0)
    for track_id in ids:
        await store_predictions(sessions, track_id, 10.0)
    t = topics(settings)
    changed, applied = await changed_songs(engine, None, t)
    assert changed == set(ids)  # a first build: every song with a prediction

    await stage(sessions, t.prediction_for(ids[1]))
    await stage(sessions, t.predictions_latest)
    changed, applied = await changed_songs(engine, applied, t)
    assert changed == {ids[1]}
    changed, applied = await changed_songs(engine, applied, t)
    assert changed == set()

    await announce_new_data(settings, sessions)
    changed, applied = await changed_songs(engine, applied, t)
    assert changed == set(ids)

    await stage(sessions, t.prediction_for("+"))  # a batch's messages, one row for all its songs
    changed, applied = await changed_songs(engine, applied, t)
    assert changed == set(ids)

    await stage(sessions, t.prediction_for(ids[2]), at=applied.version + 10)
    changed, applied = await changed_songs(engine, applied, t)
    assert changed == {ids[2]}
    await stage(sessions, t.prediction_for(ids[0]), at=applied.version - 5)  # committed late
    changed, applied = await changed_songs(engine, applied, t)
    assert changed == set(ids)
    changed, _ = await changed_songs(engine, applied, t)
    assert changed == set()


async def test_songs_whose_build_failed_are_built_by_the_next_pass(
    engine, sessions, settings, tmp_path
) -> None:
    ids = await seed_songs(sessions, n=3, charted=0)
    await store_batch_predictions(sessions, ids)
    cache = ResponseCache(engine, max_entries=0, check_seconds=3600)
    clients = Clients(predictor_settings(settings), sessions, engine, None, cache, ResidentAnswers())  # type: ignore[arg-type]
    await apply_changes(clients=clients)
    assert clients.resident.pending == set(ids)

    unreachable = make_engine(f"sqlite+aiosqlite:///{tmp_path}/missing/dir/x.db")
    with pytest.raises(OperationalError):
        await refresh_resident(clients=replace(clients, reader=unreachable))
    await unreachable.dispose()
    assert clients.resident.pending == set(ids) and len(clients.resident) == 0

    await refresh_resident(clients=clients)
    assert all(track_id in clients.resident for track_id in ids) and not clients.resident.pending


async def test_the_answers_are_not_ready_while_the_last_songs_are_being_built(
    engine, sessions, settings, monkeypatch
) -> None:
    """A build takes its songs off the queue before reading them: until their answers are in, the store must
    not say it is ready (it did, one build of up to 1,000 songs early)."""
    from services.predictor import tracks

    ids = await seed_songs(sessions, n=3, charted=0)
    await store_batch_predictions(sessions, ids)
    cache = ResponseCache(engine, max_entries=0, check_seconds=3600)
    clients = Clients(predictor_settings(settings), sessions, engine, None, cache, ResidentAnswers())  # type: ignore[arg-type]
    await apply_changes(clients=clients)
    seen: list[tuple[bool, int, int]] = []
    build = tracks.build_answers

    async def observed(**kwargs: Any) -> dict[str, bytes]:
        resident = clients.resident
        seen.append((resident.ready, len(resident.pending), resident.building))
        return await build(**kwargs)

    monkeypatch.setattr(tracks, "build_answers", observed)
    await refresh_resident(clients=clients)
    assert seen and all(not ready and building == len(ids) for ready, _, building in seen)
    assert seen[-1][1] == 0  # nothing queued any more: only the build in flight kept it from being ready
    assert clients.resident.ready and clients.resident.building == 0 and len(clients.resident) == len(ids)
