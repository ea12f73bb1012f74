"""The predictor's response cache: answers from memory until the data version (the newest outbox event)
moves, then from the database again; bounded; off when configured so."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from services.predictor.app import create_app
from services.predictor.cache import ResponseCache, data_version
from shared.events import envelope
from shared.models import ProcessedEvent, Track, utcnow
from shared.mqtt import topics
from shared.outbox import add_event
from tests.predictor_support import (
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
async def api(settings, sessions, cache_entries) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:  # type: ignore[no-untyped-def]
    async with running_emulator() as (_, emulator_url):
        config = predictor_settings(
            settings, emulator_url, rest_cache_entries=cache_entries, rest_cache_check_seconds=0
        )
        app = create_app(config)
        async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=20) as http:
            yield http, app


async def rename(sessions, track_id: str, name: str) -> None:  # type: ignore[no-untyped-def]
    async with sessions() as session:
        await session.exec(update(Track).where(Track.id == track_id).values(name=name))  # type: ignore[call-overload]
        await session.commit()


async def announce_new_data(settings, sessions, *, published: bool = False) -> None:  # type: ignore[no-untyped-def]
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
    return single  # type: ignore[no-any-return]


async def test_cached_answers_last_until_the_data_version_moves(api, settings, sessions) -> None:  # type: ignore[no-untyped-def]
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
async def test_without_a_cache_every_answer_comes_from_the_database(api, sessions) -> None:  # type: ignore[no-untyped-def]
    http, app = api
    (track_id,) = await seed_songs(sessions, n=1)
    assert await name_served(http, track_id) == "Song 0 <b>"
    await rename(sessions, track_id, "Renamed")
    assert await name_served(http, track_id) == "Renamed"
    assert len(app.state.cache) == 0


async def test_cache_keeps_the_most_recently_used_bodies_only(engine) -> None:  # type: ignore[no-untyped-def]
    cache = ResponseCache(engine, max_entries=2, check_seconds=3600)
    version = await cache.current_version()
    for track_id in ("a", "b"):
        cache.put(track_id, track_id.encode(), built_at_version=version)
    assert cache.get("a") == b"a"  # "b" is now the least recently used
    cache.put("c", b"c", built_at_version=version)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (b"a", None, b"c")
    cache.put("d", b"d", built_at_version=(version or 0) + 1)  # built from other data: not kept
    assert cache.get("d") is None


async def test_answers_are_gzipped_for_clients_that_accept_it_only(api, sessions) -> None:  # type: ignore[no-untyped-def]
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


async def test_trending_answers_are_built_before_anyone_asks(api, settings, sessions) -> None:  # type: ignore[no-untyped-def]
    http, app = api
    ids = await seed_songs(sessions, n=5, charted=2)
    await store_batch_predictions(sessions, ids, charted=2)
    cache: ResponseCache = app.state.cache
    # new data committed (an event already published, so nothing else reacts to it): the cache empties,
    # then fills again by itself
    await announce_new_data(settings, sessions, published=True)
    version = await data_version(app.state.clients.reader)
    while app.state.cache_warmed_version != version:
        app.state.cache_warmed.clear()
        await asyncio.wait_for(app.state.cache_warmed.wait(), 20)

    assert all(track_id in cache for track_id in ids)
    misses = cache.misses
    body = (await http.get(f"/v1/tracks/{ids[3]}/forecast")).json()
    assert cache.misses == misses, "answered from the warmed cache"
    assert body["source"] == "batch" and body["track"]["id"] == ids[3]
