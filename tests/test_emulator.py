"""The Spotify Web API emulator: catalog dynamics, charts, both modes, tokens, faults and controls."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import numpy as np
import pytest

from services.emulator import (
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    DEMO_PLAYLIST_ID,
    TRENDING_PLAYLIST_ID,
    Catalog,
    EmulatorConfig,
    create_app,
)
from services.emulator.catalog import CHART_HEADER, week_index

WEEK = dt.date(2026, 11, 23)


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog(n_tracks=5_000, seed=3)


def make_app(mode: str = "development", **config: Any) -> Any:
    return create_app(EmulatorConfig(mode=mode, n_tracks=2_000, seed=5, start_week=WEEK, **config))


@asynccontextmanager
async def connect(app: Any) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    """An HTTP client on the app, and the headers carrying a fresh token."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://emulator") as http:
        answer = await http.post(
            "/api/token", data={"grant_type": "client_credentials"}, auth=(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET)
        )
        assert answer.status_code == 200
        yield http, {"Authorization": f"Bearer {answer.json()['access_token']}"}


def released(app: Any, n: int) -> list[str]:
    state = app.state.emulator
    return [t for i, t in enumerate(state.catalog.track_ids) if state.catalog.released(i, state.week)][:n]


# ---- catalog ----------------------------------------
def test_the_catalog_is_deterministic_per_seed(catalog: Catalog) -> None:
    again, other = Catalog(n_tracks=5_000, seed=3), Catalog(n_tracks=5_000, seed=4)
    assert again.track_ids == catalog.track_ids and again.track_names == catalog.track_names
    assert np.array_equal(again.track_popularity(WEEK), catalog.track_popularity(WEEK))
    assert again.chart_csv(WEEK) == catalog.chart_csv(WEEK)
    assert other.track_ids != catalog.track_ids
    assert len(set(catalog.track_ids)) == catalog.n_tracks == 5_000
    assert all(len(i) == 22 and i.isalnum() for i in catalog.track_ids[:100])


def test_popularity_rises_after_release_then_decays(catalog: Catalog) -> None:
    now = week_index(WEEK)
    weeks = np.arange(now - 300, now + 1)
    pop = catalog.popularity_matrix(weeks)
    # Align every track released inside the window on its age and average.
    by_age: dict[int, list[float]] = {}
    for track in np.flatnonzero((catalog.release_week >= weeks[0]) & (catalog.release_week <= now - 104)):
        for age in (0, 3, 26, 104):
            by_age.setdefault(age, []).append(pop[catalog.release_week[track] + age - weeks[0], track])
    mean = {age: float(np.mean(values)) for age, values in by_age.items()}
    assert mean[3] > mean[0]  # the rise after release
    assert mean[3] > mean[26] > mean[104]  # then the decay
    # Decay rates differ from song to song: a year after release, some kept most of their peak.
    kept = pop[-1] / np.maximum(pop.max(axis=0), 1e-9)
    old = catalog.release_week < now - 52
    assert np.percentile(kept[old], 90) > 2 * np.percentile(kept[old], 10)
    # Some come back: popularity a year after the low point is well above it.
    comebacks = (
        np.isfinite(catalog.comeback_week)
        & (catalog.comeback_week < now)
        & (catalog.comeback_week > now - 250)
    )
    assert comebacks.sum() > 10
    assert (pop[:, comebacks].max(axis=0) > 0).all()


def test_unreleased_tracks_have_no_popularity(catalog: Catalog) -> None:
    future = catalog.release_week > week_index(WEEK)
    assert future.any()
    assert (catalog.track_popularity(WEEK)[future] == 0).all()


def test_the_chart_csv_has_the_charts_spotify_com_format(catalog: Catalog) -> None:
    text = catalog.chart_csv(WEEK, "global")
    assert text.startswith("\ufeff" + ",".join(CHART_HEADER) + "\r\n")
    assert "\r\n" in text and "\n" not in text.replace("\r\n", "")
    rows = list(csv.DictReader(io.StringIO(text.removeprefix("\ufeff"))))
    assert len(rows) == 200
    assert [int(r["rank"]) for r in rows] == list(range(1, 201))
    streams = [int(r["streams"]) for r in rows]
    assert streams == sorted(streams, reverse=True) and streams[-1] > 0
    assert f',"{streams[0]}"' in text  # numbers may be quoted
    assert all(r["uri"].startswith("spotify:track:") and len(r["uri"]) == 36 for r in rows)
    assert all(
        1 <= int(r["peak_rank"]) <= int(r["rank"]) or int(r["peak_rank"]) < int(r["rank"]) for r in rows
    )
    assert all(int(r["weeks_on_chart"]) >= 1 for r in rows)


def test_chart_history_fields_agree_with_earlier_weeks(catalog: Catalog) -> None:
    previous = {r.track_id: r for r in catalog.chart_rows(WEEK - dt.timedelta(weeks=1))}
    rows = catalog.chart_rows(WEEK)
    new_entries = 0
    for row in rows:
        before = previous.get(row.track_id)
        if before is None:
            assert row.previous_rank == -1
            new_entries += 1
        else:
            assert row.previous_rank == before.rank
            assert row.peak_rank == min(before.peak_rank, row.rank)
            assert row.weeks_on_chart == before.weeks_on_chart + 1 or before.weeks_on_chart >= 104
    assert 0 < new_entries < 200


def test_chart_streams_follow_popularity(catalog: Catalog) -> None:
    pop = catalog.track_popularity(WEEK)
    rows = catalog.chart_rows(WEEK)
    charted = np.array([pop[catalog.track_index[r.track_id]] for r in rows])
    streams = np.array([r.streams for r in rows])
    assert np.corrcoef(charted, np.log(streams))[0, 1] > 0.8
    assert charted.min() >= np.percentile(pop[pop > 0], 90)  # the chart is the catalog's top
    regional = catalog.chart_rows(WEEK, "it")
    assert regional[0].streams < rows[0].streams and {r.track_id for r in regional} != {
        r.track_id for r in rows
    }


# ---- HTTP: both modes ----------------------------------------
async def test_development_mode_lacks_popularity_and_batches() -> None:
    app = make_app("development")
    async with connect(app) as (http, auth):
        track_id = released(app, 1)[0]
        track = (await http.get(f"/v1/tracks/{track_id}", headers=auth)).json()
        assert "popularity" not in track and "available_markets" not in track
        assert track["external_ids"].get("isrc") or track["external_ids"] == {}
        batch = await http.get("/v1/tracks", params={"ids": track_id}, headers=auth)
        assert batch.status_code == 403
        assert (
            await http.get(f"/v1/playlists/{TRENDING_PLAYLIST_ID}/items", headers=auth)
        ).status_code == 404
        assert (await http.get(f"/v1/playlists/{DEMO_PLAYLIST_ID}/tracks", headers=auth)).status_code == 403
        assert (await http.get("/v1/search", params={"q": "a", "limit": 11}, headers=auth)).status_code == 400
        artist = (await http.get(f"/v1/artists/{track['artists'][0]['id']}", headers=auth)).json()
        assert "followers" not in artist and "popularity" not in artist


async def test_extended_mode_has_popularity_and_batch_limits() -> None:
    app = make_app("extended")
    async with connect(app) as (http, auth):
        ids = released(app, 51)
        batch = await http.get("/v1/tracks", params={"ids": ",".join(ids[:50])}, headers=auth)
        assert batch.status_code == 200
        tracks = batch.json()["tracks"]
        assert len(tracks) == 50 and all(isinstance(t["popularity"], int) for t in tracks)
        too_many = await http.get("/v1/tracks", params={"ids": ",".join(ids)}, headers=auth)
        assert too_many.status_code == 400
        unknown = await http.get("/v1/tracks", params={"ids": f"{ids[0]},{'0' * 22}"}, headers=auth)
        assert unknown.json()["tracks"][1] is None
        album_id = tracks[0]["album"]["id"]
        album = (await http.get(f"/v1/albums/{album_id}", headers=auth)).json()
        assert album["label"] and isinstance(album["popularity"], int)
        trending = (await http.get(f"/v1/playlists/{TRENDING_PLAYLIST_ID}/tracks", headers=auth)).json()
        assert [i["track"]["id"] for i in trending["items"]] == app.state.emulator.catalog.trending_track_ids(
            WEEK
        )


async def test_playlist_pages_hold_local_tracks_with_null_ids() -> None:
    app = make_app("development")
    async with connect(app) as (http, auth):
        url: str | None = f"/v1/playlists/{DEMO_PLAYLIST_ID}/items?limit=100"
        items = []
        while url:
            page = (await http.get(url, headers=auth)).json()
            items.extend(page["items"])
            url = page["next"]
    assert len(items) == page["total"] == 247
    local = [i for i in items if i["is_local"]]
    assert len(local) == 6 and all(i["item"]["id"] is None for i in local)
    assert sum(1 for i in items if i["item"] is None) == 1
    assert all("track" not in i for i in items)


async def test_the_simulated_clock_moves_popularity_charts_and_releases() -> None:
    app = make_app("extended")
    state = app.state.emulator
    async with connect(app) as (http, auth):
        soon = (state.catalog.release_week > week_index(WEEK)) & (
            state.catalog.release_week < week_index(WEEK) + 30
        )
        upcoming = int(np.flatnonzero(soon)[0])
        upcoming_id = state.catalog.track_ids[upcoming]
        ahead = int(state.catalog.release_week[upcoming]) - week_index(WEEK)
        assert (await http.get(f"/v1/tracks/{upcoming_id}", headers=auth)).status_code == 404
        chart_now = (await http.get(f"/_emulator/charts/regional-global-weekly-{WEEK}.csv")).text
        future = WEEK + dt.timedelta(weeks=ahead)
        assert (await http.get(f"/_emulator/charts/regional-global-weekly-{future}.csv")).status_code == 404
        moved = await http.post("/_emulator/clock", json={"advance_weeks": ahead})
        assert moved.json()["week"] == future.isoformat()
        assert (await http.get(f"/v1/tracks/{upcoming_id}", headers=auth)).status_code == 200
        chart_later = (await http.get(f"/_emulator/charts/regional-us-weekly-{future}.csv")).text
        assert chart_later != chart_now and chart_later == state.catalog.chart_csv(future, "us")
        assert chart_now == state.catalog.chart_csv(WEEK)
        back = await http.post("/_emulator/clock", json={"week": "2025-06-04"})
        assert back.json()["week"] == "2025-06-02"  # the Monday of that week


# ---- HTTP: tokens, faults, controls ----------------------------------------
async def test_tokens_are_checked_and_expire() -> None:
    app = make_app("development", token_ttl_seconds=3600)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://emulator") as http:
        wrong = await http.post("/api/token", data={"grant_type": "client_credentials"}, auth=("x", "y"))
        assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_client"
    async with connect(app) as (http, auth):
        track = f"/v1/tracks/{released(app, 1)[0]}"
        assert (await http.get(track)).status_code == 401
        assert (await http.get(track, headers=auth)).status_code == 200
        await http.post("/_emulator/faults", json={"expire_tokens": True})
        expired = await http.get(track, headers=auth)
        assert expired.status_code == 401 and expired.json()["error"]["message"] == "The access token expired"


async def test_faults_on_demand() -> None:
    app = make_app("development")
    async with connect(app) as (http, auth):
        track = f"/v1/tracks/{released(app, 1)[0]}"
        plan = {"after": 1, "rate_limited": 1, "retry_after": 0.2}
        await http.post("/_emulator/faults", json=plan)
        assert (await http.get(track, headers=auth)).status_code == 200  # `after` lets one through
        limited = await http.get(track, headers=auth)
        assert limited.status_code == 429 and float(limited.headers["Retry-After"]) == pytest.approx(0.2)
        again = await http.get(track, headers=auth)  # still inside Retry-After: penalised
        assert again.status_code == 429
        await http.post(
            "/_emulator/faults", json={"clear": True, "quota_exceeded": 1, "quota_retry_after": 7200}
        )
        quota = await http.get(track, headers=auth)
        assert quota.status_code == 429 and quota.json()["error"]["reason"] == "QUOTA_EXCEEDED"
        assert quota.headers["Retry-After"] == "7200"
        await http.post(
            "/_emulator/faults", json={"clear": True, "server_errors": 2, "server_error_status": 502}
        )
        assert [(await http.get(track, headers=auth)).status_code for _ in range(3)] == [502, 502, 200]
        stats = (await http.get("/_emulator/stats")).json()
        assert stats["by_endpoint"]["GET /v1/tracks/{track_id}"] == 7
        assert stats["rejected_during_penalty"] == 1 and stats["by_status"]["429"] == 3
        await http.post("/_emulator/reset")
        assert (await http.get("/_emulator/stats")).json()["api_requests"] == 0


async def test_the_rolling_window_rate_limit() -> None:
    app = make_app("development", rate_limit_per_30s=5)
    async with connect(app) as (http, auth):
        track = f"/v1/tracks/{released(app, 1)[0]}"
        codes = [(await http.get(track, headers=auth)).status_code for _ in range(6)]
    assert codes == [200] * 5 + [429]


async def test_latency_is_configurable_in_process() -> None:
    app = make_app("development")
    await_latency = app.state.emulator
    async with connect(app) as (http, _):
        await http.post("/_emulator/faults", json={"latency_ms": 25})
    assert await_latency.latency_ms == 25


async def test_endpoints_only_extended_quota_has() -> None:
    for mode, expected in (("development", 403), ("extended", 200)):
        app = make_app(mode)
        async with connect(app) as (http, auth):
            releases = await http.get("/v1/browse/new-releases", headers=auth)
            assert releases.status_code == expected
            assert (await http.get("/v1/markets", headers=auth)).status_code == expected
            gone = await http.get(f"/v1/audio-features/{released(app, 1)[0]}", headers=auth)
            assert gone.status_code == 404 and gone.json()["error"]["status"] == 404
        if mode == "extended":
            albums = releases.json()["albums"]["items"]
            last_day = (WEEK + dt.timedelta(days=6)).isoformat()
            assert albums and all(a["release_date"] <= last_day for a in albums)


async def test_hammering_through_retry_after_escalates_the_lockout() -> None:
    app = make_app("development", escalate_after_violations=5)
    async with connect(app) as (http, auth):
        track = f"/v1/tracks/{released(app, 1)[0]}"
        await http.post("/_emulator/faults", json={"rate_limited": 1, "retry_after": 2})
        waits = [float((await http.get(track, headers=auth)).headers["Retry-After"]) for _ in range(6)]
    assert waits[0] == 2 and all(w <= 2 for w in waits[1:5])
    assert waits[5] >= 60  # the fifth request ignoring Retry-After locked the client out for longer
