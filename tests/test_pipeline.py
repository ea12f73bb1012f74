"""The whole chain over real connections: emulator → ingest → MariaDB → db-updated → predictor →
predictions on MQTT → dashboard websocket → the same forecast from REST."""

from __future__ import annotations

import asyncio
import json

import httpx
import websockets
from sqlalchemy import func, select
from sqlmodel import col

from services.dashboard.app import create_app as create_dashboard
from services.dashboard.settings import DashboardSettings
from services.emulator import EmulatorConfig
from services.emulator import create_app as create_emulator
from services.ingestor.main import ingest_once
from services.ingestor.settings import IngestorSettings
from services.predictor.app import create_app as create_predictor
from services.predictor.settings import PredictorSettings
from shared.config import Settings
from shared.events import DbUpdated, PredictionsLatest, parse
from shared.models import ChartEntry, IngestRun, Snapshot, Track
from shared.mqtt import make_client, topics
from shared.weeks import current_week
from tests.servers import free_port, serving

WEEK = current_week()


def service_settings(cls, settings: Settings, emulator_url: str, **extra):
    values = {
        **settings.model_dump(),
        "spotify_api_url": f"{emulator_url}/v1",
        "spotify_accounts_url": emulator_url,
        **extra,
    }
    return cls(**values, _env_file=None)


def emulator_app(mode: str = "extended"):
    return create_emulator(EmulatorConfig(mode=mode, n_tracks=2000, start_week=WEEK))


def write_chart(settings: Settings, app, size: int = 200) -> None:
    """This week's emulated global chart in the charts folder, as a user would download it."""
    settings.charts_dir.mkdir(parents=True, exist_ok=True)
    csv = app.state.emulator.catalog.chart_csv(WEEK, "global")
    (settings.charts_dir / f"regional-global-weekly-{WEEK.isoformat()}.csv").write_text(csv, encoding="utf-8")


async def next_message(client, within: float = 20):
    return await asyncio.wait_for(anext(aiter(client.messages)), within)


async def ws_predictions(url: str, within: float = 20) -> dict:
    """The first `predictions` message a dashboard page receives."""
    async with websockets.connect(url) as ws:
        async with asyncio.timeout(within):
            while True:
                message = json.loads(await ws.recv())
                if message.get("type") == "predictions":
                    return message


async def test_chain_from_emulator_to_dashboard_and_rest(settings, sessions) -> None:
    t = topics(settings)
    emulator = emulator_app()
    async with serving(emulator) as emulator_url:
        write_chart(settings, emulator)
        ingestor = service_settings(IngestorSettings, settings, emulator_url)
        predictor = service_settings(PredictorSettings, settings, emulator_url, predictor_port=free_port())
        dashboard = service_settings(DashboardSettings, settings, emulator_url, dashboard_port=free_port())

        async with (
            make_client(settings, "observer", announce=False) as observer,
            serving(create_predictor(predictor)) as predictor_url,
            serving(create_dashboard(dashboard)) as dashboard_url,
        ):
            await observer.subscribe(t.db_updated, qos=1)
            await observer.subscribe(t.predictions_latest, qos=1)
            page = asyncio.create_task(ws_predictions(dashboard_url.replace("http", "ws") + "/ws"))
            await asyncio.sleep(0.5)  # the page is connected before the predictions exist

            report = await ingest_once(ingestor, kind="update")
            assert report.status == "ok", report.errors

            received: dict[str, object] = {}
            while len(received) < 2:
                message = await next_message(observer)
                received[str(message.topic)] = message.payload
            db_event = parse(received[t.db_updated], DbUpdated)  # type: ignore[arg-type]
            latest = parse(received[t.predictions_latest], PredictionsLatest)  # type: ignore[arg-type]
            pushed = await page

            async with httpx.AsyncClient(base_url=predictor_url) as http:
                song = latest.data.predictions[0]
                rest = (await http.get(f"/v1/tracks/{song.track_id}/forecast")).json()

    # MariaDB rows
    async with sessions() as session:
        snapshots = (
            await session.exec(select(func.count()).select_from(Snapshot).where(col(Snapshot.week) == WEEK))
        ).one()[0]
        charted = (await session.exec(select(func.count()).select_from(ChartEntry))).one()[0]
        tracks = (await session.exec(select(func.count()).select_from(Track))).one()[0]
        run = (await session.exec(select(IngestRun))).scalars().one()
    assert charted == 200 and tracks >= 200 and snapshots >= 200
    assert run.status == "ok" and run.access_mode == "extended"
    assert db_event.data.run_id == run.id and db_event.data.week == WEEK

    # predictions on MQTT, on the dashboard page, and from REST agree
    assert latest.data.count > 0
    pushed_ids = {row["track_id"] for row in pushed["rows"]}
    assert song.track_id in pushed_ids
    by_signal = {p["signal"]: p for p in rest["predictions"]}
    assert song.signal in by_signal
    rest_values = {f["horizon_weeks"]: f["value"] for f in by_signal[song.signal]["forecasts"]}
    mqtt_values = {f.horizon_weeks: f.value for f in song.forecasts}
    assert rest_values == mqtt_values, "stored as DOUBLE: REST serves the values published"


async def test_weekly_update_twice_leaves_the_same_rows(settings, sessions) -> None:
    emulator = emulator_app()
    async with serving(emulator) as emulator_url:
        write_chart(settings, emulator)
        ingestor = service_settings(IngestorSettings, settings, emulator_url)
        snapshots = []
        for _ in range(2):
            report = await ingest_once(ingestor, kind="update")
            assert report.status == "ok", report.errors
            async with sessions() as session:
                rows = (await session.exec(select(Snapshot).order_by(Snapshot.track_id))).scalars().all()
                snapshots.append([(r.track_id, r.week, r.popularity, r.trending) for r in rows])
                entries = (await session.exec(select(func.count()).select_from(ChartEntry))).one()[0]
            assert entries == 200
        assert snapshots[0] == snapshots[1]
        assert len(snapshots[0]) >= 200
