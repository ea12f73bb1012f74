"""Spotify sources of an ingest run: an explicit list of track ids, the trending playlist (Extended Quota),
and what a run records about itself (`ingest_run`, the `db-updated` event), paused or complete."""

from __future__ import annotations

from services.emulator import TRENDING_PLAYLIST_ID, FaultPlan
from services.ingestor.main import ingest_once
from shared.events import DbUpdated, parse
from shared.models import Album, IngestRun, Outbox, Snapshot, SnapshotStage, Track
from tests.ingest_support import WEEK, all_rows, count, emulator, emulator_chart, ingestor_settings, rows


async def test_explicit_track_ids_are_stored_and_snapshotted(settings, sessions) -> None:
    async with emulator("development") as spotify:
        known = spotify.state.catalog.trending_track_ids(WEEK)
        from_settings, from_command = known[:3], known[3:5]
        ingestor = ingestor_settings(settings, spotify, track_ids=from_settings)
        report = await ingest_once(ingestor, kind="update", track_ids=from_command)

    assert report.status == "ok" and report.access_mode == "development"
    wanted = sorted(from_settings + from_command)
    enriched = await rows(sessions, Track, "id", "album_id")
    assert [t[0] for t in enriched] == wanted and all(t[1] for t in enriched)
    assert await count(sessions, Album) >= 1
    columns = ("track_id", "week", "trending", "popularity", "popularity_source")
    snapshots = await rows(sessions, Snapshot, *columns)
    # Development Mode gives no popularity: the songs are followed, their index stays unknown
    assert snapshots == [(i, WEEK, True, None, None) for i in wanted]


async def test_trending_playlist_read_with_extended_quota_only(settings, sessions) -> None:
    async with emulator("development") as spotify:
        ingestor = ingestor_settings(settings, spotify, spotify_trending_playlist_id=TRENDING_PLAYLIST_ID)
        development = await ingest_once(ingestor, kind="update")
    assert development.status == "ok" and await count(sessions, Snapshot) == 0

    async with emulator("extended") as spotify:
        playlist = spotify.state.catalog.trending_track_ids(WEEK)
        ingestor = ingestor_settings(settings, spotify, spotify_trending_playlist_id=TRENDING_PLAYLIST_ID)
        extended = await ingest_once(ingestor, kind="update")
    assert extended.status == "ok" and extended.access_mode == "extended"
    snapshots = await all_rows(sessions, Snapshot)
    assert sorted(s.track_id for s in snapshots) == sorted(playlist)
    assert all(s.week == WEEK and s.trending for s in snapshots)
    assert all(s.popularity is not None and 0 <= s.popularity <= 100 for s in snapshots)
    assert {s.popularity_source for s in snapshots} == {"api"}


async def test_run_records_and_a_paused_week_published_only_when_complete(settings, sessions) -> None:
    async with emulator("extended") as spotify:
        ingestor = ingestor_settings(settings, spotify, spotify_concurrency=2)
        emulator_chart(ingestor.charts_dir, spotify, WEEK)
        chart_ids = {row.track_id for row in spotify.state.catalog.chart_rows(WEEK)}
        spotify.state.add_faults(FaultPlan(after=2, quota_exceeded=1, quota_retry_after=7200))
        paused = await ingest_once(ingestor, kind="update")

        assert paused.status == "paused" and paused.resume_after is not None
        (run,) = await all_rows(sessions, IngestRun)
        assert run.status == "paused" and run.finished_at is not None and run.resume_point["track_ids"]
        assert run.counts["chart_entries"] == 200 and any("Spotify paused" in e for e in run.errors)
        # the chart week is visible, but not a half-fetched week of snapshots; nothing was announced
        assert await count(sessions, Snapshot) == 0 and await count(sessions, SnapshotStage) >= 200
        assert await count(sessions, Outbox) == 0

        spotify.state.clear_faults()
        done = await ingest_once(ingestor, kind="update")

    assert done.status == "ok", done.errors
    runs = await rows(sessions, IngestRun, "id", "status", "finished_at")
    assert [r[1] for r in runs] == ["paused", "ok"] and all(r[2] for r in runs)
    snapshots = await all_rows(sessions, Snapshot)
    assert {s.track_id for s in snapshots if s.week == WEEK} >= chart_ids
    assert all(s.popularity is not None for s in snapshots if s.track_id in chart_ids)
    # the emulator's popularity marks a row as demo, whatever the chart file said
    assert all(s.is_demo for s in snapshots if s.popularity is not None)
    assert await count(sessions, SnapshotStage) == 0
    (event_row,) = await all_rows(sessions, Outbox)
    event = parse(event_row.payload, DbUpdated)
    assert event.data.run_id == done.run_id and event.data.week == WEEK
    assert event.data.snapshots == len(snapshots) == done.counts.snapshots_published
    (last,) = [r for r in await all_rows(sessions, IngestRun) if r.id == done.run_id]
    assert last.counts == done.counts.as_dict() and last.resume_point is None
