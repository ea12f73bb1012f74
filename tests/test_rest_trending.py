"""Every trending song's REST answer is its `/v1/trending` row, whatever the order in which the charts
and the enrichment of new songs arrive (issue 12, item 1)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from services.ingestor.main import ingest_once
from services.predictor.app import create_app as create_predictor
from shared.config import Settings
from shared.weeks import add_weeks, current_week
from tests.ingest_support import emulator, emulator_chart, ingestor_settings
from tests.predictor_support import predictor_settings
from tests.servers import serving

WEEK = current_week()


def comparable(predictions: list[dict]) -> list[tuple]:
    """What a forecast says, without the order of signals and horizons."""
    return sorted(
        (p["signal"], p["region"], p["week"], f["horizon_weeks"], f["value"], f["lower"], f["upper"])
        for p in predictions
        for f in p["forecasts"]
    )


async def trending_when_ready(http: httpx.AsyncClient, within: float = 60) -> dict:
    async with asyncio.timeout(within):
        while True:
            trending = (await http.get("/v1/trending")).json()
            if trending["count"]:
                return trending
            await asyncio.sleep(0.2)


@pytest.mark.parametrize("mode", ["development", "extended"])
async def test_last_weeks_chart_ingested_this_week_answers_every_song_as_trending(
    settings: Settings,
    engine,
    tmp_path,
    mode: str,  # engine: empty tables, no earlier test's predictions
) -> None:
    """The enrichment of each new song writes a current-week snapshot (without popularity in Development
    Mode), later than the chart week the batch forecast is anchored at."""
    last_week = add_weeks(WEEK, -1)
    async with emulator(mode, week=add_weeks(WEEK, -30)) as spotify:
        charts = tmp_path / "charts"
        chart = emulator_chart(charts, spotify, last_week, region="fr")
        predictor = predictor_settings(settings, spotify.url)
        async with serving(create_predictor(predictor)) as url, httpx.AsyncClient(base_url=url) as http:
            report = await ingest_once(ingestor_settings(settings, spotify), kind="init", chart_paths=[chart])
            assert report.status == "ok", report.errors
            trending = await trending_when_ready(http)
            rows: dict[str, list[dict]] = {}
            for row in trending["predictions"]:
                rows.setdefault(row["track_id"], []).append(row)
            assert len(rows) >= 150
            answers = (await http.post("/v1/forecasts", json={"track_ids": list(rows)[:100]})).json()
            singles = [(await http.get(f"/v1/tracks/{i}/forecast")).json() for i in list(rows)[100:]]
    for answer in answers["forecasts"] + singles:
        track_id = answer["track"]["id"]
        assert answer["predictions"], f"{track_id}: empty REST answer ({answer['source']})"
        assert comparable(answer["predictions"]) == comparable(rows[track_id]), track_id
    assert len(answers["forecasts"]) + len(singles) == len(rows)
