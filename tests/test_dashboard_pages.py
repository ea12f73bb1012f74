"""The dashboard's track, models and status pages render what the database holds."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from services.dashboard.formatting import fmt_value
from services.dashboard.service import comparison_rows, verdict
from shared.models import AppState, IngestRun, ModelVersion, Prediction
from tests.dashboard_support import WEEK, Song, dashboard_settings, running_dashboard, seed


@pytest.fixture
async def dashboard(settings, sessions):
    async with running_dashboard(dashboard_settings(settings), wait_mqtt=False) as running:
        yield running


async def test_track_page_carries_history_and_forecast(sessions, dashboard) -> None:
    song = Song("t" * 22, "Long Road", "The Walkers", current=60.0)
    await seed(sessions, [song], history_weeks=20)
    async with httpx.AsyncClient(base_url=dashboard.url) as http:
        page = await http.get(f"/tracks/{song.track_id}")
    assert page.status_code == 200
    assert "Long Road" in page.text and "The Walkers" in page.text
    assert "/static/vendor/uPlot.iife.min.js" in page.text
    assert "80%: 45–65" in page.text and "80%: 40–65" in page.text  # seed: lower = 50 - h/5, upper 65
    assert page.text.count('"h": 26') + page.text.count('"h":26') == 1


async def test_models_page_puts_metrics_next_to_baselines(sessions, dashboard) -> None:
    async with sessions() as session:
        session.add(
            ModelVersion(
                version="pop-26-v3",
                signal="popularity",
                horizon_weeks=26,
                kind="gbm",
                n_train=1234,
                metrics={"mae": 4.2, "coverage80": 0.79, "folds": "3 rolling"},
                baselines={"persistence": {"mae": 6.1, "coverage80": 0.7}, "naive": {"mae": 7.3}},
                active=True,
                is_demo=True,
            )
        )
        floored = {"method": "floored", "toward": "naive", "skill": 0.165, "best_naive": "naive"}
        session.add(
            ModelVersion(
                version="streams-52-v2",
                signal="streams",
                horizon_weeks=52,
                kind="gbm-mixture",
                n_train=4321,
                metrics={"cmae": 0.096, "serving": floored},
                baselines={"naive": {"cmae": 0.115}},
                active=True,
            )
        )
        held_out = {"method": "naive", "skill": 0.0, "best_naive": "naive", "out_of_time": False}
        session.add(
            ModelVersion(
                version="pop-52-v1",
                signal="popularity",
                horizon_weeks=52,
                kind="gbm",
                n_train=99,
                metrics={"mae": 5.1, "serving": held_out},
                active=True,
            )
        )
        await session.commit()
    async with httpx.AsyncClient(base_url=dashboard.url) as http:
        html = (await http.get("/models")).text
    assert "pop-26-v3" in html and "persistence" in html and "naive" in html
    assert "<strong>floored</strong> (the model, its point never below today's chart floor)" in html
    # Only the model chosen on held-out songs says why a naive answer serves.
    assert (
        html.count("No backtest fold in time yet (the history is too short for a fold 52 weeks ahead)") == 1
    )
    assert '<td class="num better">4.2</td>' in html
    assert "6.1" in html and "7.3" in html and "3 rolling" in html
    assert "demo" in html


async def test_status_page_shows_access_mode_runs_and_health(sessions, dashboard) -> None:
    async with sessions() as session:
        session.add(
            AppState(
                key="spotify",
                value={
                    "mode": "development",
                    "lacks": ["popularity", "audio features"],
                    "emulator": True,
                    "probed_at": "2026-11-23T12:00:00+00:00",
                },
            )
        )
        session.add(
            AppState(
                key="trainer",
                value={
                    "next_run": "2026-11-30T11:00:00+00:00",
                    "cron": "0 12 * * 1",
                    "timezone": "Europe/Rome",
                },
            )
        )
        session.add(
            AppState(
                key="ingestor",
                value={
                    "next_run": "2026-11-30T05:00:00+00:00",
                    "last_run": "2026-11-26T10:15:00+00:00",
                    "caught_up": {"missed": "2026-11-23T05:00:00+00:00", "at": "2026-11-26T10:15:00+00:00"},
                },
            )
        )
        session.add(
            IngestRun(
                kind="update",
                status="ok",
                week=WEEK,
                counts={"tracks": 200},
                started_at=dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.UTC),
            )
        )
        await session.commit()
    async with httpx.AsyncClient(base_url=dashboard.url) as http:
        html = (await http.get("/status")).text
    assert "Development Mode" in html and "audio features" in html and "emulator" in html
    assert "2026-11-30 11:00 UTC" in html and "Europe/Rome" in html
    assert "tracks 200" in html and "2026-11-23 09:00 UTC" in html
    schedule = " ".join(html.split('id="schedule"', 1)[1].split("</section>", 1)[0].split())
    caught_up = "missed ingestor run</dt><dd>the run due 2026-11-23 05:00 UTC ran at start, 2026-11-26 10:15"
    assert caught_up in schedule
    health = html.split('id="health"', 1)[1].split("</section>", 1)[0]
    assert health.count('<span class="badge ok">ok</span>') == 2  # database and broker


def test_comparison_and_verdicts() -> None:
    rows = comparison_rows({"mae": 3.0, "auc": 0.7}, {"persistence": {"mae": 4.0, "auc": 0.8}})
    assert [r.label for r in rows] == ["served: model", "persistence"]
    shrunk = {"mae": 3.0, "serving": {"method": "shrunk", "weight": 0.5, "skill": 0.1}}
    rows = comparison_rows(shrunk, {"learned": {"mae": 3.2}, "naive": {"mae": 3.3}})
    assert [r.label for r in rows] == ["served: shrunk", "learned", "naive"]
    assert rows[0].values == {"mae": 3.0}  # the serving details are not a metric
    assert verdict("mae", 3.0, [4.0, 5.0]) == "better"
    assert verdict("auc", 0.7, [0.8]) == "worse"
    assert verdict("coverage80", 0.78, [0.6, 0.95]) == "better"
    assert verdict("mystery", 1.0, [2.0]) == ""


async def test_streams_view_ranks_by_chart_and_formats_compactly(sessions, dashboard) -> None:
    items = [Song("x" * 22, "Low Pop High Chart", current=30.0), Song("y" * 22, "High Pop", current=95.0)]
    await seed(sessions, items, with_chart=True)  # chart ranks follow list order: x is #1
    streams: list[dict[str, Any]] = [
        {
            "track_id": s.track_id,
            "week": WEEK,
            "signal": "streams",
            "region": "global",
            "horizon_weeks": h,
            "current": 1_000_000 - i * 1000,
            "value": 1_250_000.0,
            "lower": 400_000.0,
            "upper": 2_100_000.0,
            "p_chart": 0.42,
            "model_version": "streams-test",
        }
        for i, s in enumerate(items)
        for h in (26, 52)
    ]
    async with sessions() as session:
        session.add_all([Prediction(**row) for row in streams])
        await session.commit()
    async with httpx.AsyncClient(base_url=dashboard.url) as http:
        default = (await http.get("/api/trending")).json()
        chart = (await http.get("/api/trending", params={"signal": "streams"})).json()
        html = (await http.get("/", params={"signal": "streams", "region": "global"})).text
        bad = await http.get("/", params={"signal": "likes"})
    # Popularity is the default signal; its table too is in chart order when the week has a chart.
    assert default["signal"] == "popularity" and default["rows"][0]["track_id"] == "x" * 22
    choices = {(c["signal"], c["region"]) for c in default["choices"]}
    assert choices == {("popularity", ""), ("streams", "global")}
    assert chart["rank_source"] == "chart"
    assert [(r["track_id"], r["rank"]) for r in chart["rows"]] == [("x" * 22, 1), ("y" * 22, 2)]
    assert ">1M<" in html and "400K–2.1M" in html and "42% charting" in html
    assert bad.status_code == 422


async def test_database_down_gives_a_clear_503(settings) -> None:
    down = dashboard_settings(settings, database_url="mysql+asyncmy://root@127.0.0.1:1/nothing_here")
    async with running_dashboard(down) as running, httpx.AsyncClient(base_url=running.url) as http:
        page, api, ready = await http.get("/"), await http.get("/api/trending"), await http.get("/readyz")
    assert page.status_code == 503 and "Database unavailable" in page.text
    assert api.status_code == 503 and api.json() == {"detail": "database unavailable"}
    assert ready.status_code == 503 and ready.json()["database"] is False and ready.json()["broker"] is True


def test_value_formatting() -> None:
    assert [fmt_value(v, "streams") for v in (999, 1000, 35_512, 703_400, 1_234_567, 2e9, None)] == [
        "999",
        "1K",
        "35.5K",
        "703K",
        "1.2M",
        "2B",
        "—",
    ]
    assert [fmt_value(v, "popularity") for v in (-0.4, 61.6, 104.0)] == ["0", "62", "100"]


async def test_all_cold_start_forecasts_get_one_banner(sessions, dashboard) -> None:
    await seed(sessions, [Song("c" * 22, "Cold One"), Song("k" * 22, "Cold Two")])
    async with httpx.AsyncClient(base_url=dashboard.url) as http:
        warm = (await http.get("/")).text
        async with sessions() as session:
            await session.exec(update(Prediction).values(cold_start=True))
            await session.commit()
        cold = (await http.get("/")).text
    assert "Cold-start forecasts" not in warm and "Cold-start forecasts" in cold
    assert 'class="all-cold"' in cold
