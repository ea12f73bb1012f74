"""Strangers cannot spend the app's Spotify quota (issue 12, item 3): API keys on the endpoints that can
reach Spotify, a per-client allowance of on-demand fetches, an hourly cap on them, and ids Spotify does
not know remembered so that neither the API nor the weekly run asks again."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from services.ingestor.main import ingest_once
from services.predictor.app import create_app
from shared.config import Settings
from tests.ingest_support import chart_entries, emulator, ingestor_settings, new_format, write
from tests.predictor_support import (
    predictor_settings,
    random_track_id,
    running_emulator,
    seed_songs,
    store_batch_predictions,
)
from tests.servers import serving

CAP = 20


def spotify_requests(emulator_app: Any) -> int:
    return int(emulator_app.state.emulator.counters.api_requests)


@pytest.fixture
async def guarded(settings: Settings) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    """The predictor with a cap of CAP Spotify requests per hour, on the emulator (Development Mode)."""
    async with running_emulator() as (emulator_app, emulator_url):
        app = create_app(predictor_settings(settings, emulator_url, rest_fetch_per_hour=CAP,
                                            rest_fetch_per_client_per_minute=10_000))  # fmt: skip
        async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
            yield emulator_app, http


async def test_a_thousand_unknown_ids_cost_at_most_the_hourly_cap(
    guarded: tuple[Any, httpx.AsyncClient],
) -> None:
    emulator_app, http = guarded
    rng = random.Random(12)
    ids = [random_track_id(rng) for _ in range(1000)]  # well-formed, none in the emulator's catalog
    before = spotify_requests(emulator_app)
    limit = asyncio.Semaphore(16)

    async def ask(track_id: str) -> httpx.Response:
        async with limit:
            return await http.get(f"/v1/tracks/{track_id}/forecast")

    answers = await asyncio.gather(*(ask(i) for i in ids))
    spent = spotify_requests(emulator_app) - before
    statuses = [a.status_code for a in answers]
    assert spent <= CAP, spent
    assert set(statuses) == {404, 503}, set(statuses)
    assert statuses.count(404) >= CAP // 2  # the cap was used, for ids Spotify was asked about
    refused = next(a for a in answers if a.status_code == 503)
    assert int(refused.headers["retry-after"]) > 0 and "Traceback" not in refused.text

    # Ids Spotify said it does not know are remembered: asked again, they cost nothing and stay 404.
    unknown = [i for i, a in zip(ids, answers, strict=True) if a.status_code == 404]
    before = spotify_requests(emulator_app)
    again = await http.post("/v1/forecasts", json={"track_ids": unknown[:100]})
    assert again.status_code == 200 and sorted(again.json()["not_found"]) == sorted(unknown[:100])
    assert (await http.get(f"/v1/tracks/{unknown[0]}/forecast")).status_code == 404
    assert spotify_requests(emulator_app) == before


async def test_a_client_past_its_allowance_gets_429_and_spends_nothing(settings: Settings) -> None:
    async with running_emulator() as (emulator_app, emulator_url):
        app = create_app(predictor_settings(settings, emulator_url, rest_fetch_per_client_per_minute=5))
        async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
            rng = random.Random(7)
            before = spotify_requests(emulator_app)
            many = await http.post(
                "/v1/forecasts", json={"track_ids": [random_track_id(rng) for _ in range(50)]}
            )
            assert many.status_code == 429 and int(many.headers["retry-after"]) >= 1
            assert spotify_requests(emulator_app) == before
            few = await http.post(
                "/v1/forecasts", json={"track_ids": [random_track_id(rng) for _ in range(5)]}
            )
            assert few.status_code == 200 and len(few.json()["not_found"]) == 5
            assert (await http.get(f"/v1/tracks/{random_track_id(rng)}/forecast")).status_code == 429


async def test_with_keys_set_a_request_without_a_valid_key_is_refused(
    settings: Settings, sessions: Any
) -> None:
    ids = await seed_songs(sessions, n=3)
    await store_batch_predictions(sessions, ids)
    async with running_emulator() as (emulator_app, emulator_url):
        app = create_app(predictor_settings(settings, emulator_url, api_keys="first-key-123,second-key-456"))
        async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
            await asyncio.wait_for(app.state.cache_warmed.wait(), 20)
            assert ids[0] in app.state.resident  # the fast path must check the key too
            before = spotify_requests(emulator_app)
            unknown = random_track_id(random.Random(3))
            for headers in ({}, {"x-api-key": "wrong"}, {"authorization": "Bearer wrong"}):
                for path in (f"/v1/tracks/{ids[0]}/forecast", f"/v1/tracks/{unknown}/forecast"):
                    refused = await http.get(path, headers=headers)
                    assert refused.status_code == 401, (path, headers, refused.status_code)
                    assert "first-key" not in refused.text
                posted = await http.post("/v1/forecasts", json={"track_ids": [unknown]}, headers=headers)
                assert posted.status_code == 401
            assert spotify_requests(emulator_app) == before
            ok = await http.get(f"/v1/tracks/{ids[0]}/forecast", headers={"x-api-key": "second-key-456"})
            assert ok.status_code == 200 and ok.json()["track"]["id"] == ids[0]
            bearer = {"authorization": "Bearer first-key-123"}
            assert (await http.get(f"/v1/tracks/{unknown}/forecast", headers=bearer)).status_code == 404
            assert (await http.get("/v1/trending")).status_code == 200  # reads of stored data stay open


async def test_the_weekly_run_does_not_ask_again_for_ids_spotify_does_not_know(
    settings: Settings, tmp_path
) -> None:
    async with emulator("development") as spotify:
        chart = write(tmp_path / "charts" / "regional-global-weekly-2026-11-26.csv",
                      new_format(chart_entries(40, seed=5)))  # fmt: skip
        ingestor = ingestor_settings(settings, spotify)
        first = await ingest_once(ingestor, kind="init", chart_paths=[chart])
        unknown = first.counts.tracks_unknown_to_spotify
        assert unknown >= 40  # the chart's made-up ids (and any the settings follow)
        before = spotify.state.counters.api_requests
        second = await ingest_once(ingestor, kind="update")
        assert second.counts.tracks_skipped_unknown == unknown
        assert spotify.state.counters.api_requests - before <= 2  # the access-mode probe, no track
