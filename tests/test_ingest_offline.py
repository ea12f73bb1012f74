"""Spotify unreachable during a run: the chart files are kept (they need no Spotify), the run pauses, and
the next run with Spotify back enriches the songs the paused run could not."""

from __future__ import annotations

from sqlmodel import col

from services.ingestor.service import run_ingest
from shared.models import Album, ChartEntry, IngestRun, Track
from shared.mqtt import topics
from shared.spotify.client import SpotifyClient
from shared.spotify.testing import FAST_KNOBS, emulator_client
from tests.ingest_support import WEEK, count, emulator, emulator_chart, ingestor_settings
from tests.servers import free_port


async def test_charts_survive_an_unreachable_spotify_and_are_enriched_next_run(settings, sessions) -> None:
    async with emulator("development") as spotify:
        emulator_chart(settings.charts_dir, spotify, WEEK)
        closed = f"http://127.0.0.1:{free_port()}"
        offline = ingestor_settings(settings, spotify_api_url=f"{closed}/v1", spotify_accounts_url=closed)
        async with SpotifyClient(offline, **FAST_KNOBS) as unreachable:
            first = await run_ingest(
                sessions=sessions, spotify=unreachable, settings=offline, topics=topics(offline)
            )
        assert first.status == "paused"
        assert await count(sessions, ChartEntry) == 200
        assert await count(sessions, Album) == 0

        online = ingestor_settings(settings, spotify)
        async with emulator_client(spotify.app, online) as client:
            second = await run_ingest(
                sessions=sessions, spotify=client, settings=online, topics=topics(online)
            )
        assert second.status == "ok", second.errors
        assert second.counts.chart_files_skipped_known == 1  # the chart was not read twice
        enriched = await count(sessions, Track, col(Track.album_id).is_not(None))
        assert enriched == 200
        assert await count(sessions, IngestRun) == 2
