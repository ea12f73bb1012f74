"""End to end through the ingestor: a Spotify pause stops a run cleanly and the next run resumes without
refetching; both access modes store the same songs apart from the fields a mode lacks.

The emulator runs in-process; the database is this session's real one (conftest fixtures).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from services.emulator import EmulatorConfig, FaultPlan, create_app
from services.ingestor.report import RunReport
from services.ingestor.service import run_ingest
from services.ingestor.settings import IngestorSettings
from shared.config import Settings
from shared.events import Topics
from shared.models import Album, Artist, IngestRun, Snapshot, Track
from shared.spotify.testing import EMULATOR_BASE, emulator_client

WEEK = dt.date(2026, 11, 23)


def make_emulator(mode: str) -> Any:
    return create_app(EmulatorConfig(mode=mode, n_tracks=2_000, seed=13, start_week=WEEK))


def ingest_settings(settings: Settings) -> IngestorSettings:
    values = settings.model_dump() | {
        "spotify_api_url": f"{EMULATOR_BASE}/v1",
        "spotify_accounts_url": EMULATOR_BASE,
        "spotify_concurrency": 4,
    }
    return IngestorSettings(**values, _env_file=None)


def write_chart(settings: Settings, app: Any) -> list[str]:
    """This week's emulated global chart in the charts folder; returns its track ids."""
    settings.charts_dir.mkdir(parents=True, exist_ok=True)
    catalog = app.state.emulator.catalog
    path = settings.charts_dir / f"regional-global-weekly-{WEEK.isoformat()}.csv"
    path.write_text(catalog.chart_csv(WEEK, "global"), encoding="utf-8")
    return [row.track_id for row in catalog.chart_rows(WEEK, "global")]


async def ingest(
    app: Any, sessions: async_sessionmaker[AsyncSession], settings: IngestorSettings
) -> RunReport:
    async with emulator_client(app, settings) as spotify:
        return await run_ingest(
            sessions=sessions,
            spotify=spotify,
            settings=settings,
            topics=Topics(settings.mqtt_topic_root),
            week=WEEK,
        )


async def count(sessions: async_sessionmaker[AsyncSession], query: Any) -> int:
    async with sessions() as session:
        return int((await session.exec(query)).one()[0])


async def assert_week_complete(sessions: async_sessionmaker[AsyncSession], chart_ids: list[str]) -> None:
    """Every charted song is stored with its album and artists, and has this week's published snapshot."""
    enriched = select(func.count()).select_from(Track).join(Album, col(Album.id) == Track.album_id)
    assert await count(sessions, enriched.where(col(Track.id).in_(chart_ids))) == len(chart_ids)
    snapshots = select(func.count()).select_from(Snapshot).where(col(Snapshot.week) == WEEK)
    assert await count(sessions, snapshots.where(col(Snapshot.track_id).in_(chart_ids))) == len(chart_ids)
    assert await count(sessions, select(func.count()).select_from(Artist)) > 0


@pytest.mark.parametrize(
    ("mode", "fault"),
    [
        # Development Mode: 1 probe + 200 track requests (albums and artists come inside the tracks):
        # a long Retry-After early, and a spent quota late.
        ("development", FaultPlan(after=30, rate_limited=1, retry_after=3600)),
        ("development", FaultPlan(after=170, quota_exceeded=1, quota_retry_after=3600)),
        # Extended Quota: 1 probe + 4 batches of 50 tracks + album and artist batches.
        ("extended", FaultPlan(after=3, quota_exceeded=1, quota_retry_after=7200)),
        ("extended", FaultPlan(after=6, rate_limited=1, retry_after=900)),
    ],
    ids=["dev-early", "dev-quota-late", "ext-quota", "ext-dimensions"],
)
async def test_a_paused_run_resumes_without_refetching(
    mode: str, fault: FaultPlan, settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    app = make_emulator(mode)
    config = ingest_settings(settings)
    chart_ids = write_chart(config, app)
    app.state.emulator.add_faults(fault)

    before = dt.datetime.now(dt.UTC)
    first = await ingest(app, sessions, config)
    assert first.status == "paused"
    assert first.resume_after is not None and first.resume_after > before + dt.timedelta(seconds=800)
    async with sessions() as session:
        run = await session.get(IngestRun, first.run_id)
    assert run is not None and run.status == "paused" and run.resume_after is not None

    assert first.counts.spotify["rate_limited"] >= 1  # the run reports what Spotify did
    assert first.counts.spotify["requests"] > 0

    app.state.emulator.clear_faults()  # the Retry-After has passed
    second = await ingest(app, sessions, config)
    assert second.status == "ok", second.errors
    await assert_week_complete(sessions, chart_ids)
    served = app.state.emulator.counters.served
    twice = {spotify_id: n for spotify_id, n in served.items() if n > 1}
    assert twice == {}, f"{len(twice)} objects fetched again after the pause"
    if mode == "development":  # album and artist endpoints add nothing stored to what tracks carry
        by_endpoint = app.state.emulator.counters.by_endpoint
        assert by_endpoint["GET /v1/albums/{album_id}"] == by_endpoint["GET /v1/artists/{artist_id}"] == 0
        # Only requests refused by the pause (the one meeting it and those already in flight) are repeated.
        assert by_endpoint["GET /v1/tracks/{track_id}"] <= len(chart_ids) + config.spotify_concurrency


async def test_a_resumed_weekly_update_asks_each_followed_song_once(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """Extended Quota: songs followed from last week get one popularity fetch this week, pause or not."""
    app = make_emulator("extended")
    config = ingest_settings(settings)
    last_week = WEEK - dt.timedelta(weeks=1)
    app.state.emulator.set_week(last_week)
    config.charts_dir.mkdir(parents=True, exist_ok=True)
    catalog = app.state.emulator.catalog
    (config.charts_dir / f"regional-global-weekly-{last_week}.csv").write_text(catalog.chart_csv(last_week))
    async with emulator_client(app, config) as spotify:
        first = await run_ingest(
            sessions=sessions,
            spotify=spotify,
            settings=config,
            topics=Topics(config.mqtt_topic_root),
            week=last_week,
        )
    assert first.status == "ok", first.errors
    followed = {row.track_id for row in catalog.chart_rows(last_week)}

    app.state.emulator.set_week(WEEK)
    this_week = set(write_chart(config, app))
    app.state.emulator.add_faults(FaultPlan(after=4, rate_limited=1, retry_after=3600))
    assert (await ingest(app, sessions, config)).status == "paused"
    app.state.emulator.clear_faults()
    assert (await ingest(app, sessions, config)).status == "ok"

    served = app.state.emulator.counters.served
    for track_id in followed | this_week:
        assert served[track_id] <= (2 if track_id in followed else 1), "fetched twice in one week"
    assert all(served[i] == 2 for i in followed), "every followed song is fetched once per week"
    dimensions = {k: n for k, n in served.items() if k not in followed | this_week}
    assert max(dimensions.values()) == 1


async def stored_rows(sessions: async_sessionmaker[AsyncSession], model: Any, drop: set[str]) -> list[dict]:
    """Every row of `model` as a dict, without the columns in `drop`, in key order."""
    async with sessions() as session:
        rows = (await session.exec(select(model))).scalars().all()  # type: ignore[call-overload]
    dumped = [{k: v for k, v in row.model_dump().items() if k not in drop} for row in rows]
    return sorted(dumped, key=lambda r: sorted((k, str(v)) for k, v in r.items()))


async def test_both_modes_store_the_same_songs_apart_from_what_a_mode_lacks(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], engine: Any
) -> None:
    from shared.db import metadata

    stored: dict[str, dict[str, Any]] = {}
    for mode in ("development", "extended"):
        async with engine.begin() as conn:  # each mode starts from an empty database
            for table in reversed(metadata().sorted_tables):
                await conn.execute(table.delete())
        app = make_emulator(mode)
        config = ingest_settings(settings)
        write_chart(config, app)
        assert (await ingest(app, sessions, config)).status == "ok"
        stored[mode] = {
            "tracks": await stored_rows(sessions, Track, {"updated_at"}),
            "albums": await stored_rows(sessions, Album, {"updated_at", "label"}),
            "artists": await stored_rows(sessions, Artist, {"updated_at", "followers", "popularity"}),
            "snapshots": await stored_rows(
                sessions, Snapshot, {"id", "updated_at", "popularity", "popularity_source"}
            ),
            "labels": await count(
                sessions, select(func.count()).select_from(Album).where(col(Album.label).is_not(None))
            ),
            "popularity": await count(
                sessions,
                select(func.count()).select_from(Snapshot).where(col(Snapshot.popularity).is_not(None)),
            ),
        }
    dev, ext = stored["development"], stored["extended"]
    for table in ("tracks", "albums", "artists", "snapshots"):
        assert len(dev[table]) > 0 and dev[table] == ext[table], table
    assert dev["labels"] == 0 and ext["labels"] == len(ext["albums"])
    assert dev["popularity"] == 0 and ext["popularity"] >= 200
