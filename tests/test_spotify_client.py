"""The Spotify client against the emulator: both access modes, limiter, pauses, retries, tokens, records."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from services.emulator import DEMO_PLAYLIST_ID, TRENDING_PLAYLIST_ID, EmulatorConfig, FaultPlan, create_app
from shared.spotify.errors import SpotifyError, SpotifyNotFound, SpotifyPaused
from shared.spotify.models import AccessMode
from shared.spotify.testing import emulator_client, emulator_settings

WEEK = dt.date(2026, 11, 23)
SMALL = 2_000  # tracks in the test catalog


def make_app(mode: str = "development", **config: Any) -> Any:
    return create_app(EmulatorConfig(mode=mode, n_tracks=SMALL, seed=11, start_week=WEEK, **config))


def released_ids(app: Any, n: int) -> list[str]:
    """`n` track ids the emulator knows at its current week, catalog order."""
    state = app.state.emulator
    return [t for i, t in enumerate(state.catalog.track_ids) if state.catalog.released(i, state.week)][:n]


def api_requests(app: Any) -> int:
    return int(app.state.emulator.counters.api_requests)


MODE_FIELDS = {"popularity", "label", "followers"}


def without_mode_fields(value: Any) -> Any:
    """A model dump with the fields only Extended Quota Mode has removed, recursively."""
    if isinstance(value, dict):
        return {k: without_mode_fields(v) for k, v in value.items() if k not in MODE_FIELDS}
    if isinstance(value, list):
        return [without_mode_fields(v) for v in value]
    return value


# ---- access modes ----------------------------------------
@pytest.mark.parametrize("mode", ["development", "extended"])
async def test_probe_finds_the_mode_in_one_request_and_says_what_it_lacks(
    mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(mode)
    caplog.set_level(logging.INFO, logger="shared.spotify.client")
    async with emulator_client(app) as spotify:
        assert spotify.access_mode is None
        assert await spotify.probe_access_mode() is AccessMode(mode)
        assert spotify.access_mode is AccessMode(mode)
    assert api_requests(app) == 1
    said = caplog.text
    if mode == "development":
        assert "Development Mode" in said and "no popularity" in said and "batch" in said
    else:
        assert "Extended Quota Mode" in said


async def test_both_modes_give_the_same_objects_apart_from_the_fields_a_mode_lacks() -> None:
    dev_app, ext_app = make_app("development"), make_app("extended")
    ids = released_ids(dev_app, 120)
    results: dict[str, tuple[dict[str, Any], ...]] = {}
    for name, app in (("dev", dev_app), ("ext", ext_app)):
        async with emulator_client(app) as spotify:
            tracks = await spotify.get_tracks(ids)
            album_ids = sorted({t.album.id for t in tracks.values() if t.album})
            artist_ids = sorted({a.id for t in tracks.values() for a in t.artists if a.id})
            albums = await spotify.get_albums(album_ids)
            artists = await spotify.get_artists(artist_ids)
        results[name] = (tracks, albums, artists)
    for dev_objects, ext_objects in zip(results["dev"], results["ext"], strict=True):
        assert dev_objects.keys() == ext_objects.keys() and len(dev_objects) > 0
        for key, dev_obj in dev_objects.items():
            assert without_mode_fields(dev_obj.model_dump()) == without_mode_fields(
                ext_objects[key].model_dump()
            )
    dev_tracks, dev_albums, dev_artists = results["dev"]
    ext_tracks, ext_albums, ext_artists = results["ext"]
    assert all(t.popularity is None for t in dev_tracks.values())
    assert all(t.popularity is not None for t in ext_tracks.values())
    assert all(a.followers is None and a.popularity is None for a in dev_artists.values())
    assert all(a.followers is not None for a in ext_artists.values())
    assert all(a.label is None for a in dev_albums.values())
    assert all(a.label for a in ext_albums.values())


@pytest.mark.parametrize(("mode", "per_request"), [("development", 1), ("extended", 50)])
async def test_requests_are_the_minimum_for_the_mode(mode: str, per_request: int) -> None:
    app = make_app(mode)
    ids = released_ids(app, 230)
    async with emulator_client(app) as spotify:
        tracks = await spotify.get_tracks(ids + ids[:10])  # duplicates are asked for once
    assert set(tracks) == set(ids)
    endpoint = "GET /v1/tracks/{track_id}" if mode == "development" else "GET /v1/tracks"
    assert app.state.emulator.counters.by_endpoint[endpoint] == math.ceil(230 / per_request)
    assert api_requests(app) == math.ceil(230 / per_request) + 1  # + the probe


async def test_unknown_ids_are_absent_and_invalid_ids_are_never_sent() -> None:
    app = make_app("extended")
    known = released_ids(app, 3)
    unknown = "0" * 22
    unreleased = next(
        t
        for i, t in enumerate(app.state.emulator.catalog.track_ids)
        if not app.state.emulator.catalog.released(i, WEEK)
    )
    async with emulator_client(app) as spotify:
        tracks = await spotify.get_tracks([*known, unknown, unreleased, "not-an-id", ""])
        assert await spotify.get_track(unknown) is None
        assert await spotify.get_track("bad id") is None
        assert (await spotify.get_track(known[0])) == tracks[known[0]]
    assert set(tracks) == set(known)
    assert spotify.stats.skipped == 3
    assert spotify.stats.not_found >= 3


# ---- rate limits, pauses, quota ----------------------------------------
async def test_a_429_storm_completes_with_bounded_extra_requests() -> None:
    app = make_app("development")
    ids = released_ids(app, 300)
    storm = 6
    app.state.emulator.add_faults(FaultPlan(after=40, rate_limited=storm, retry_after=0.05))
    settings = emulator_settings(spotify_concurrency=8)
    async with emulator_client(app, settings) as spotify:
        tracks = await spotify.get_tracks(ids)
    assert set(tracks) == set(ids)
    counters = app.state.emulator.counters
    assert spotify.stats.rate_limited >= storm
    # Only requests already in flight when a 429 arrived may hit the penalty window.
    assert counters.rejected_during_penalty <= storm * (settings.spotify_concurrency - 1)
    assert api_requests(app) <= len(ids) + 1 + storm + counters.rejected_during_penalty
    assert counters.served_twice() == 0


async def test_a_429_pauses_every_task_not_just_the_one_that_met_it() -> None:
    """After the client has seen a 429, no request starts before its Retry-After has passed."""
    retry_after = 0.3
    issued: list[float] = []
    limited_at: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/api/token"):
            return httpx.Response(200, json={"access_token": "t", "expires_in": 3600})
        now = time.monotonic()
        issued.append(now)
        if len(issued) == 5:
            limited_at.append(now)
            return httpx.Response(429, headers={"Retry-After": str(retry_after)})
        track_id = request.url.path.rsplit("/", 1)[1]
        return httpx.Response(200, json={"id": track_id, "name": "x"})

    ids = [f"{n:022d}" for n in range(40)]
    settings = emulator_settings(spotify_concurrency=4)
    from shared.spotify.client import SpotifyClient

    async with SpotifyClient(
        settings,
        transport=httpx.MockTransport(handler),
        access_mode=AccessMode.development,
        rate_limit_margin=0.0,
    ) as spotify:
        tracks = await spotify.get_tracks(ids)
    assert len(tracks) == 40 and spotify.stats.rate_limited == 1
    # The 429 was answered at limited_at; requests already in flight (at most concurrency - 1) were sent
    # before it, so at most that many may fall inside the window; every later one waits it out.
    inside = [t for t in issued if limited_at[0] < t < limited_at[0] + retry_after]
    assert inside == []


async def test_a_long_retry_after_stops_the_run_with_partial_results_and_resume_time() -> None:
    app = make_app("development")
    ids = released_ids(app, 120)
    app.state.emulator.add_faults(FaultPlan(after=50, rate_limited=1, retry_after=3600))
    async with emulator_client(app) as spotify:
        before = dt.datetime.now(dt.UTC)
        with pytest.raises(SpotifyPaused) as caught:
            await spotify.get_tracks(ids)
        paused = caught.value
        assert before + dt.timedelta(seconds=3590) <= paused.resume_at <= before + dt.timedelta(seconds=3700)
        assert paused.resume_at.tzinfo is not None
        assert "3600" in paused.reason
        assert 40 <= len(paused.partial) < len(ids)
        assert set(paused.partial) <= set(ids)
        assert all(getattr(t, "id", None) == k for k, t in paused.partial.items())
        assert spotify.paused_until == paused.resume_at
        sent = api_requests(app)
        with pytest.raises(SpotifyPaused):  # later calls fail fast, nothing is sent
            await spotify.get_tracks(ids[:5])
        assert api_requests(app) == sent


async def test_quota_exceeded_stops_the_run() -> None:
    app = make_app("extended")
    ids = released_ids(app, 200)
    app.state.emulator.add_faults(FaultPlan(after=2, quota_exceeded=1, quota_retry_after=7200))
    async with emulator_client(app, emulator_settings(spotify_concurrency=1)) as spotify:
        with pytest.raises(SpotifyPaused) as caught:
            await spotify.get_tracks(ids)
    assert "QUOTA_EXCEEDED" in caught.value.reason
    assert caught.value.resume_at > dt.datetime.now(dt.UTC) + dt.timedelta(seconds=7000)
    assert len(caught.value.partial) == 50  # the probe, then one batch of 50, then the quota answer


async def test_the_next_run_resumes_without_refetching() -> None:
    app = make_app("development")
    ids = released_ids(app, 150)
    app.state.emulator.add_faults(FaultPlan(after=60, rate_limited=1, retry_after=900))
    async with emulator_client(app) as spotify:
        with pytest.raises(SpotifyPaused) as caught:
            await spotify.get_tracks(ids)
    fetched = dict(caught.value.partial)
    app.state.emulator.clear_faults()  # time passes: the Retry-After is over
    remaining = [i for i in ids if i not in fetched]
    async with emulator_client(app) as spotify:
        fetched.update(await spotify.get_tracks(remaining))
    assert set(fetched) == set(ids)
    assert app.state.emulator.counters.served_twice() == 0


# ---- 401, 5xx, timeouts, credentials ----------------------------------------
async def test_a_401_mid_run_renews_the_token_once() -> None:
    app = make_app("development")
    ids = released_ids(app, 80)
    app.state.emulator.add_faults(FaultPlan(after=20, expire_tokens=True))
    async with emulator_client(app) as spotify:
        tracks = await spotify.get_tracks(ids)
    assert set(tracks) == set(ids)
    assert spotify.stats.token_renewals_after_401 == 1
    assert app.state.emulator.counters.token_requests == 2


async def test_the_token_is_cached_and_renewed_before_it_expires() -> None:
    app = make_app("development", token_ttl_seconds=2.0)
    ids = released_ids(app, 10)
    async with emulator_client(app, token_renew_margin=0.5) as spotify:
        await spotify.get_tracks(ids[:5])
        assert app.state.emulator.counters.token_requests == 1  # one token for probe and five tracks
        await asyncio.sleep(1.6)  # past expiry minus margin (1.5 s), before expiry (2 s)
        await spotify.get_tracks(ids[5:])
    assert app.state.emulator.counters.token_requests == 2
    assert app.state.emulator.counters.by_status[401] == 0
    assert spotify.stats.token_renewals_after_401 == 0


async def test_bad_credentials_give_a_clear_error_without_the_secret(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = make_app("development")
    secret = "s3cr3t-value-never-shown"
    settings = emulator_settings(spotify_client_id="wrong-app", spotify_client_secret=secret)
    caplog.set_level(logging.DEBUG)
    async with emulator_client(app, settings) as spotify:
        with pytest.raises(SpotifyError) as caught:
            await spotify.probe_access_mode()
        assert secret not in repr(spotify)
    message = str(caught.value)
    assert "wrong-app" in message and "SONGPOP_SPOTIFY_CLIENT_SECRET" in message
    assert secret not in message and secret not in caplog.text
    assert "Authorization" not in caplog.text and "Basic " not in caplog.text


async def test_server_errors_are_retried_a_bounded_number_of_times() -> None:
    app = make_app("development")
    ids = released_ids(app, 30)
    app.state.emulator.add_faults(FaultPlan(after=5, server_errors=3))
    async with emulator_client(app) as spotify:
        assert set(await spotify.get_tracks(ids)) == set(ids)
    assert spotify.stats.server_errors == 3 and spotify.stats.retries >= 3

    app.state.emulator.add_faults(FaultPlan(server_errors=1000, server_error_status=502))
    async with emulator_client(app, emulator_settings(spotify_concurrency=2), max_attempts=3) as spotify:
        before = api_requests(app)
        with pytest.raises(SpotifyPaused) as caught:
            await spotify.get_tracks(ids)
    assert "kept failing" in caught.value.reason
    assert api_requests(app) - before <= 2 * 3 + 3  # each worker gives up after 3 tries (+ the probe's)


async def test_timeouts_are_retried() -> None:
    app = make_app("development")
    ids = released_ids(app, 20)
    app.state.emulator.add_faults(FaultPlan(after=3, timeouts=2, timeout_seconds=30.0))
    async with emulator_client(app, emulator_settings(spotify_timeout_seconds=0.5)) as spotify:
        tracks = await spotify.get_tracks(ids)
    assert set(tracks) == set(ids)
    assert spotify.stats.timeouts >= 2  # the two hung requests (more only if the machine is very slow)
    assert spotify.stats.retries >= spotify.stats.timeouts


# ---- playlists, search, awkward records ----------------------------------------
@pytest.mark.parametrize("mode", ["development", "extended"])
async def test_playlist_pages_are_followed_and_local_tracks_counted(mode: str) -> None:
    app = make_app(mode)
    async with emulator_client(app) as spotify:
        ids = await spotify.playlist_track_ids(DEMO_PLAYLIST_ID)
    assert len(ids) == 240 and len(set(ids)) == 240
    assert spotify.stats.local_tracks == 6 and spotify.stats.skipped == 1
    kind = "items" if mode == "development" else "tracks"
    assert app.state.emulator.counters.by_endpoint[f"GET /v1/playlists/{{playlist_id}}/{kind}"] == 3


async def test_the_trending_playlist_is_readable_only_with_extended_quota() -> None:
    ext_app, dev_app = make_app("extended"), make_app("development")
    async with emulator_client(ext_app) as spotify:
        ids = await spotify.playlist_track_ids(TRENDING_PLAYLIST_ID)
    assert ids == ext_app.state.emulator.catalog.trending_track_ids(WEEK)
    async with emulator_client(dev_app) as spotify:
        with pytest.raises(SpotifyNotFound):
            await spotify.playlist_track_ids(TRENDING_PLAYLIST_ID)


async def test_search_uses_pages_of_ten_in_development_mode() -> None:
    found = {}
    for mode in ("development", "extended"):
        app = make_app(mode)
        async with emulator_client(app) as spotify:
            await spotify.probe_access_mode()
            found[mode] = [t.id for t in await spotify.search_tracks("golden", limit=25)]
        expected_pages = 3 if mode == "development" else 1
        assert app.state.emulator.counters.by_endpoint["GET /v1/search"] == 1 + expected_pages
    assert len(found["development"]) == 25
    assert found["development"] == found["extended"]


AWKWARD_TRACKS: list[Any] = [
    {"id": "A" * 22, "name": "Rock &amp; Roll <b>Live</b> 🔥", "album": {"id": "B" * 22, "name": "Old",
     "release_date": "0000", "release_date_precision": "year"}, "external_ids": {}},
    {"id": "C" * 22, "name": "Year only", "album": {"id": "D" * 22, "release_date": "1987",
     "release_date_precision": "year"}, "duration_ms": "long", "popularity": True},
    {"id": "E" * 22, "album": {"id": "F" * 22, "release_date": "2019-05"}, "artists": [{"name": "No id"}]},
    {"id": None, "name": "local file", "is_local": True},
    {"name": "no id at all"},
    "not even an object",
    None,
]  # fmt: skip


async def test_awkward_records_are_counted_never_fatal() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/api/token"):
            return httpx.Response(200, json={"access_token": "t", "expires_in": 3600})
        return httpx.Response(200, json={"tracks": AWKWARD_TRACKS})

    from shared.spotify.client import SpotifyClient

    ids = [f"{c * 22}" for c in "ACEGHIJ"]
    async with SpotifyClient(
        emulator_settings(), transport=httpx.MockTransport(handler), access_mode=AccessMode.extended
    ) as spotify:
        tracks = await spotify.get_tracks(ids)
    assert sorted(tracks) == ["A" * 22, "C" * 22, "E" * 22]
    first, year_only, month_only = tracks["A" * 22], tracks["C" * 22], tracks["E" * 22]
    assert first.name == "Rock &amp; Roll <b>Live</b> 🔥"  # kept as Spotify sent it; escaping is the UI's job
    assert first.isrc is None and first.album is not None and first.album.release_date is None
    assert year_only.album and year_only.album.release_date == dt.date(1987, 1, 1)
    assert year_only.duration_ms is None and year_only.popularity is None
    assert month_only.album and month_only.album.release_date == dt.date(2019, 5, 1)
    assert month_only.album.release_date_precision == "month"
    assert month_only.artists[0].id is None and month_only.artists[0].name == "No id"
    assert spotify.stats.malformed == 4  # "0000" date, the local file, no id, not an object
    assert spotify.stats.imprecise_dates == 2
    assert spotify.stats.not_found == 1  # the null entry


async def test_awkward_emulator_records_go_through() -> None:
    app = make_app("extended")
    catalog = app.state.emulator.catalog
    odd_albums = [
        catalog.album_ids[a]
        for a in range(catalog.n_albums)
        if (catalog.album_precision[a] != "day" or catalog.album_zero_date[a])
        and catalog.album_release_week[a] <= (WEEK - dt.date(2014, 1, 6)).days // 7
    ]
    async with emulator_client(app) as spotify:
        albums = await spotify.get_albums(odd_albums)
    assert len(albums) == len(odd_albums) > 0
    assert spotify.stats.imprecise_dates + spotify.stats.malformed >= len(odd_albums)


# ---- over a real socket ----------------------------------------
@pytest.fixture
def served_emulator(unused_tcp_port: int) -> Iterator[tuple[str, Any]]:
    """The emulator behind a real uvicorn server on loopback."""
    app = make_app("extended", latency_ms=5)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=unused_tcp_port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "the emulator did not start"
    yield f"http://127.0.0.1:{unused_tcp_port}", app
    server.should_exit = True
    thread.join(timeout=10)


async def test_the_client_works_over_a_real_socket(served_emulator: tuple[str, Any]) -> None:
    from shared.spotify.client import SpotifyClient

    base, app = served_emulator
    ids = released_ids(app, 120)
    settings = emulator_settings(spotify_api_url=f"{base}/v1", spotify_accounts_url=base)
    async with SpotifyClient(settings) as spotify:
        assert await spotify.probe_access_mode() is AccessMode.extended
        tracks = await spotify.get_tracks(ids)
        playlist = await spotify.playlist_track_ids(TRENDING_PLAYLIST_ID)
    assert set(tracks) == set(ids)
    assert len(playlist) == 50
    assert app.state.emulator.counters.by_endpoint["GET /v1/tracks"] == 3


# ---- a mode that changes under the client ----------------------------------------
async def test_a_withdrawn_extended_quota_falls_back_to_single_requests() -> None:
    app = make_app("development")
    ids = released_ids(app, 30)
    async with emulator_client(app, access_mode=AccessMode.extended) as spotify:
        tracks = await spotify.get_tracks(ids)
        assert spotify.access_mode is AccessMode.development
    assert set(tracks) == set(ids)


async def test_an_unrecoverable_error_surfaces_as_spotify_error_not_a_group() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/api/token"):
            return httpx.Response(200, json={"access_token": "t", "expires_in": 3600})
        return httpx.Response(403, json={"error": {"status": 403, "message": "Forbidden"}})

    from shared.spotify.client import SpotifyClient

    ids = [f"{n:022d}" for n in range(10)]
    async with SpotifyClient(
        emulator_settings(), transport=httpx.MockTransport(handler), access_mode=AccessMode.development
    ) as spotify:
        with pytest.raises(SpotifyError, match="403"):
            await spotify.get_tracks(ids)


@pytest.mark.parametrize(
    ("header", "expected"),
    [("7", 7.0), ("0.25", 0.25), ("soon", None), ("-3", None), (None, None)],
)
def test_retry_after_values(header: str | None, expected: float | None) -> None:
    from shared.spotify.ratelimit import retry_after_seconds

    headers = {"Retry-After": header} if header is not None else {}
    assert retry_after_seconds(httpx.Response(429, headers=headers)) == expected


def test_retry_after_as_an_http_date() -> None:
    import email.utils

    from shared.spotify.ratelimit import retry_after_seconds

    later = email.utils.format_datetime(dt.datetime.now(dt.UTC) + dt.timedelta(hours=2), usegmt=True)
    seconds = retry_after_seconds(httpx.Response(429, headers={"Retry-After": later}))
    assert seconds is not None and 7100 < seconds <= 7200
