"""The predictor's REST API over a real socket: forecasts of stored and never-seen songs, id
normalisation, clear 422s, 404 for ids Spotify does not know, batches, and the other endpoints."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import func, select, text
from sqlmodel import col

from services.predictor.app import create_app
from services.predictor.service import predict_trending
from shared.models import Prediction, Track
from shared.mqtt import topics
from shared.weeks import add_weeks
from tests.predictor_support import (
    NOT_ON_SPOTIFY,
    WEEK,
    predictor_settings,
    running_emulator,
    seed_songs,
    store_batch_predictions,
)
from tests.servers import serving


@pytest.fixture
async def emulator() -> AsyncIterator[tuple[Any, str]]:
    async with running_emulator() as running:
        yield running


@pytest.fixture
async def api(settings, sessions, emulator) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """An HTTP client of a running predictor (lifespan entered) and the emulator app behind it."""
    emulator_app, emulator_url = emulator
    app = create_app(predictor_settings(settings, emulator_url))
    async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=20) as http:
        yield http, emulator_app


async def score(settings, sessions) -> None:
    """What the predictor does on `db-updated`: forecast the trending songs and store them."""
    config = predictor_settings(settings)
    await predict_trending(
        sessions=sessions, settings=config, topics=topics(config), event_id=str(uuid.uuid4())
    )


async def test_stored_song_has_current_values_forecasts_intervals_and_history(
    api, settings, sessions
) -> None:
    http, _ = api
    ids = await seed_songs(sessions, n=6, weeks=8, charted=2)
    stored = await store_batch_predictions(sessions, ids, charted=2)

    body = (await http.get(f"/v1/tracks/{ids[0]}/forecast")).json()

    assert body["track"]["id"] == ids[0] and body["track"]["name"] == "Song 0 <b>"
    assert body["source"] == "batch" and body["cold_start"] is False
    assert body["data_refreshed_at"] is not None
    assert [p["week"] for p in body["history"][:1]] == [str(add_weeks(WEEK, -7))]
    assert len({p["week"] for p in body["history"]}) == 8
    charted = [p for p in body["history"] if p.get("rank")]
    assert charted and charted[0]["region"] == "global" and charted[0]["streams"] > 0
    assert [(p["signal"], p["region"]) for p in body["predictions"]] == [
        ("popularity", ""),
        ("streams", "global"),
    ]
    for prediction in body["predictions"]:
        assert prediction["week"] == str(WEEK)
        assert prediction["current"] is not None
        served = {(f["horizon_weeks"], f["value"], f["lower"], f["upper"], f["model_version"])
                  for f in prediction["forecasts"]}  # fmt: skip
        assert served == stored[(ids[0], prediction["signal"])]


async def test_batch_scored_songs_are_served_as_the_predictor_scored_them(api, settings, sessions) -> None:
    http, _ = api
    ids = await seed_songs(sessions, n=6, weeks=8, charted=2)
    await score(settings, sessions)
    async with sessions() as session:
        rows = (
            (await session.exec(select(Prediction).where(col(Prediction.track_id) == ids[1]))).scalars().all()
        )
    assert rows, "a trending song is scored"

    body = (await http.get(f"/v1/tracks/{ids[1]}/forecast")).json()
    assert body["source"] == "batch"
    served = {
        (p["signal"], f["horizon_weeks"]): f["value"] for p in body["predictions"] for f in p["forecasts"]
    }
    assert served == {(r.signal, r.horizon_weeks): r.value for r in rows}
    assert body["cold_start"] == any(r.cold_start for r in rows)
    for forecast in (f for p in body["predictions"] for f in p["forecasts"]):
        assert forecast["model_version"]
        if forecast["lower"] is not None:
            assert forecast["lower"] <= forecast["value"] <= forecast["upper"]


async def test_ids_uris_and_urls_name_the_same_song(api, settings, sessions) -> None:
    http, _ = api
    (track_id,) = await seed_songs(sessions, n=1, charted=0)
    forms = [
        track_id,
        f"  {track_id} ",
        f"spotify:track:{track_id}",
        f"https://open.spotify.com/track/{track_id}",
        f"https://open.spotify.com/intl-de/track/{track_id}?si=abc123",
    ]
    for form in forms:
        response = await http.get(f"/v1/tracks/{quote(form, safe='')}/forecast")
        assert response.status_code == 200, (form, response.text)
        assert response.json()["track"]["id"] == track_id
    batch = await http.post("/v1/forecasts", json={"track_ids": forms})
    assert [f["track"]["id"] for f in batch.json()["forecasts"]] == [track_id]


@pytest.mark.parametrize(
    "bad",
    [
        "abc",
        "4uLU6hMCjMI75M1A2tKUQCx",  # 23 characters
        "4uLU6hMCjMI75M1A2tKUQ!",
        "spotify:album:4uLU6hMCjMI75M1A2tKUQC",
        "https://example.com/track/4uLU6hMCjMI75M1A2tKUQC",
    ],
)
async def test_anything_but_a_track_id_is_a_clear_422(api, bad) -> None:
    http, _ = api
    response = await http.get(f"/v1/tracks/{quote(bad, safe='')}/forecast")
    assert response.status_code == 422
    assert "is not a Spotify track id" in response.json()["detail"]
    batch = await http.post("/v1/forecasts", json={"track_ids": ["4uLU6hMCjMI75M1A2tKUQC", bad]})
    assert batch.status_code == 422 and "is not a Spotify track id" in batch.json()["detail"]


async def test_batch_limits_and_malformed_bodies_are_clear_422s(api, settings) -> None:
    http, _ = api
    too_many = await http.post("/v1/forecasts", json={"track_ids": [NOT_ON_SPOTIFY] * 101})
    assert too_many.status_code == 422
    assert too_many.json()["detail"] == "at most 100 track ids per request, got 101"
    empty = await http.post("/v1/forecasts", json={"track_ids": []})
    assert empty.status_code == 422 and empty.json()["detail"].startswith("track_ids:")
    not_json = await http.post(
        "/v1/forecasts", content=b"{track_ids", headers={"content-type": "application/json"}
    )
    assert not_json.status_code == 422 and isinstance(not_json.json()["detail"], str)
    wrong_type = await http.post("/v1/forecasts", json={"track_ids": "4uLU6hMCjMI75M1A2tKUQC"})
    assert wrong_type.status_code == 422 and "track_ids" in wrong_type.json()["detail"]


async def test_unknown_valid_id_is_fetched_stored_and_forecast_once(api, sessions) -> None:
    http, emulator_app = api
    track_id = emulator_app.state.emulator.catalog.track_ids[17]
    counters = emulator_app.state.emulator.counters

    first = await http.get(f"/v1/tracks/spotify:track:{track_id}/forecast")
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["track"]["id"] == track_id and body["track"]["name"]
    assert body["source"] == "on_demand" and body["cold_start"] is True
    assert len(body["history"]) == 1  # the snapshot written when it was fetched
    assert {f["horizon_weeks"] for p in body["predictions"] for f in p["forecasts"]} == {26, 52}
    async with sessions() as session:
        stored = (
            await session.exec(select(func.count()).select_from(Track).where(col(Track.id) == track_id))
        ).one()
    assert stored[0] == 1

    requests_before = counters.api_requests
    again = await http.get(f"/v1/tracks/{track_id}/forecast")
    assert again.status_code == 200
    assert counters.api_requests == requests_before, "a stored song is not fetched again"


async def test_id_spotify_does_not_know_is_404_alone_and_listed_in_a_batch(api, sessions) -> None:
    http, emulator_app = api
    (stored,) = await seed_songs(sessions, n=1, charted=0)
    fetched = emulator_app.state.emulator.catalog.track_ids[3]

    missing = await http.get(f"/v1/tracks/{NOT_ON_SPOTIFY}/forecast")
    assert missing.status_code == 404 and NOT_ON_SPOTIFY in missing.json()["detail"]

    batch = await http.post("/v1/forecasts", json={"track_ids": [fetched, NOT_ON_SPOTIFY, stored, fetched]})
    assert batch.status_code == 200
    body = batch.json()
    assert [f["track"]["id"] for f in body["forecasts"]] == [fetched, stored]
    assert body["not_found"] == [NOT_ON_SPOTIFY]


async def test_trending_models_status_and_probes_answer(api, settings, sessions) -> None:
    http, _ = api
    empty = (await http.get("/v1/trending")).json()
    assert empty == {"week": None, "count": 0, "demo": False, "predictions": []}

    ids = await seed_songs(sessions, n=5, charted=2)
    await score(settings, sessions)
    trending = (await http.get("/v1/trending")).json()
    assert trending["week"] == str(WEEK)
    assert {p["track_id"] for p in trending["predictions"]} == set(ids)
    assert trending["count"] == len(trending["predictions"])

    assert (await http.get("/v1/models")).status_code == 200
    status = (await http.get("/v1/status")).json()
    assert status["versions"]["songpop"]
    assert (await http.get("/healthz")).json() == {"status": "ok"}
    ready = {"status": "ready", "database": "ok", "broker": "ok", "models": "ok"}
    assert (await http.get("/readyz")).json() == ready
    metrics = (await http.get("/metrics")).text
    assert 'route="/v1/trending"' in metrics and "songpop_http_request_duration_seconds_bucket" in metrics


async def test_reads_survive_connections_the_database_dropped(api, settings, sessions, engine) -> None:
    if not settings.effective_database_url.startswith("mysql"):
        pytest.skip("needs MariaDB to drop connections")
    http, _ = api
    ids = await seed_songs(sessions, n=2)
    assert (await http.get(f"/v1/tracks/{ids[0]}/forecast")).status_code == 200  # the pool is open
    async with engine.connect() as conn:
        database = (await conn.execute(text("SELECT DATABASE()"))).scalar()
        query = "SELECT id FROM information_schema.processlist WHERE db = :db AND id <> CONNECTION_ID()"
        others = (await conn.execute(text(query), {"db": database})).scalars().all()
        for connection_id in others:
            await conn.execute(text(f"KILL {int(connection_id)}"))
    assert others, "the predictor had connections to drop"
    response = await http.get(f"/v1/tracks/{ids[1]}/forecast")  # not cached: read on a dropped connection
    assert response.status_code == 200, response.text
