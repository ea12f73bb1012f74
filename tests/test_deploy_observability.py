"""Observability: the predictor's /metrics shows API latency, MQTT receive and outbox publish counts; the
dashboard's (it runs once per deployment) also the database-backed operational gauges (last ingest's
counts, model age, the scheduled jobs' next run times, pending outbox events), which predictor replicas do
not repeat; the ingestor service records its next run; JSON log lines carry extra fields and never a
configured secret."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import logging
import re
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from services.ingestor.main import serve as serve_ingestor
from services.ingestor.settings import IngestorSettings
from services.predictor.app import create_app
from shared import logs
from shared.config import Settings
from shared.db import session_scope
from shared.events import DbUpdated, envelope
from shared.models import AppState, IngestRun, ModelVersion, utcnow
from shared.mqtt import make_client, publish_model, topics
from shared.ops_metrics import refresh, topic_kind
from shared.weeks import current_week
from tests.dashboard_support import dashboard_settings, running_dashboard
from tests.predictor_support import predictor_settings
from tests.servers import serving

REQUESTS_TIMED = "songpop_http_request_duration_seconds_count"


def sample(metrics: str, name: str, **labels: str) -> float | None:
    """The value of one series in a Prometheus text exposition."""
    for line in metrics.splitlines():
        if not line.startswith(name + ("{" if labels else " ")) and not line.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


async def seed_operations(sessions) -> dict[str, Any]:
    now = utcnow()
    next_ingest, next_training = now + dt.timedelta(days=3), now + dt.timedelta(days=3, hours=6)
    async with session_scope(sessions) as session:
        session.add(
            IngestRun(
                kind="update",
                status="ok",
                started_at=now - dt.timedelta(minutes=5),
                finished_at=now - dt.timedelta(minutes=1),
                counts={"snapshots": 321, "tracks": 123},
            )
        )
        session.add(IngestRun(kind="update", status="failed", finished_at=now - dt.timedelta(days=7)))
        session.add(
            ModelVersion(
                version="pop-26-t",
                signal="popularity",
                horizon_weeks=26,
                kind="gbm",
                created_at=now - dt.timedelta(days=2),
                active=True,
            )
        )
        session.add(AppState(key="trainer", value={"next_run": next_training.isoformat()}))
        session.add(AppState(key="ingestor", value={"next_run": next_ingest.isoformat()}))
    return {"next_ingest": next_ingest, "next_training": next_training}


async def test_metrics_show_latency_mqtt_ingest_models_and_schedules(settings, sessions) -> None:
    expected = await seed_operations(sessions)
    app = create_app(predictor_settings(settings))
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as http:
        await asyncio.wait_for(app.state.consuming.wait(), 20)
        assert (await http.get("/v1/trending")).status_code == 200
        event = envelope(
            "ingestor", DbUpdated(run_id=1, kind="update", week=current_week(), tracks=1, snapshots=1)
        )
        async with make_client(settings, "ingestor-test", announce=False) as client:
            await publish_model(client, topics(settings).db_updated, event)
        async with asyncio.timeout(20):
            while True:
                metrics = (await http.get("/metrics")).text
                if (sample(metrics, "songpop_outbox_published_total", topic="predictions/latest") or 0) >= 1:
                    break
                await asyncio.sleep(0.1)
        metrics = (await http.get("/metrics")).text
        async with make_client(settings, "cleanup", announce=False) as client:
            await client.publish(topics(settings).db_updated, b"", qos=1, retain=True)
            await client.publish(topics(settings).predictions_latest, b"", qos=1, retain=True)

    assert sample(metrics, "songpop_http_request_duration_seconds_count", route="/v1/trending", status="200")
    assert (sample(metrics, "songpop_mqtt_received_total", service="predictor", topic="db-updated") or 0) >= 1
    assert "songpop_ingest_runs" not in metrics and "songpop_outbox_pending_events" not in metrics

    async with running_dashboard(dashboard_settings(settings), wait_mqtt=False) as dashboard:
        await refresh(sessions)  # what the dashboard's background task does every 15 s
        async with httpx.AsyncClient(base_url=dashboard.url) as http:
            assert (await http.get("/status")).status_code == 200
            async with asyncio.timeout(10):  # a request is timed once its response has gone out
                while True:  # noqa: ASYNC110 - polls over HTTP
                    metrics = (await http.get("/metrics")).text
                    if sample(metrics, REQUESTS_TIMED, route="/status"):
                        break
                    await asyncio.sleep(0.05)
    assert sample(metrics, "songpop_ingest_last_run_rows", entity="snapshots") == 321
    runs = [line for line in metrics.splitlines() if line.startswith("songpop_ingest_runs")]
    assert sample(metrics, "songpop_ingest_runs", status="failed") == 1, runs
    age = sample(metrics, "songpop_model_age_seconds", signal="popularity", horizon_weeks="26")
    assert age is not None and 2 * 86400 - 60 < age < 2 * 86400 + 600
    for job, key in (("ingestor", "next_ingest"), ("trainer", "next_training")):
        when = sample(metrics, "songpop_job_next_run_timestamp_seconds", job=job)
        assert when == pytest.approx(expected[key].timestamp(), abs=1)
    assert sample(metrics, "songpop_outbox_pending_events") == 0
    assert (sample(metrics, "songpop_ingest_last_success_timestamp_seconds") or 0) > 0


def test_topic_kinds_are_few() -> None:
    t = topics(Settings(_env_file=None))
    assert topic_kind(t.prediction_for("4uLU6hMCjMI75M1A2tKUQC")) == "predictions/tracks"
    assert topic_kind(t.db_updated) == "events/db-updated"
    assert topic_kind(t.alert("moved")) == "alerts/moved"
    assert topic_kind("elsewhere/x") == "other"


async def test_ingestor_service_records_its_next_run(settings, sessions) -> None:
    ingestor = IngestorSettings(**{**settings.model_dump(), "ingest_cron": "0 6 1 1 *"}, _env_file=None)
    service = asyncio.create_task(serve_ingestor(ingestor))
    try:
        async with asyncio.timeout(20):
            while True:
                async with sessions() as session:
                    state = await session.get(AppState, "ingestor")
                if state is not None:
                    break
                await asyncio.sleep(0.1)
    finally:
        service.cancel()
        with pytest.raises(asyncio.CancelledError):
            await service
    when = dt.datetime.fromisoformat(state.value["next_run"])
    assert (when.month, when.day, when.hour) == (1, 1, 6) and when > dt.datetime.now(dt.UTC)
    assert state.value["cron"] == "0 6 1 1 *"


def test_json_logs_carry_extra_fields_and_mask_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(
        spotify_client_id="client-abc",
        spotify_client_secret=SecretStr("hunter2-spotify"),
        mqtt_url="mqtt://predictor:hunter2%2Fmqtt@broker:1883",
        database_url="mysql+asyncmy://u:hunter2db@h/db",
        _env_file=None,
    )
    monkeypatch.setenv("SONGPOP_LOG_FORMAT", "json")
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.setup("INFO", secrets=logs.secret_values(settings))
        log = logging.getLogger("songpop.test")
        log.info("ingest done", extra={"run_id": 7, "week": "2026-11-23"})
        log.warning("connecting to %s", settings.mqtt_url)
        log.warning("token request with secret %s", "hunter2-spotify")
        try:
            raise RuntimeError(f"driver said: {settings.database_url} refused; mqtt pw hunter2/mqtt")
        except RuntimeError:
            log.exception("database failed")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["level"] for line in lines] == ["INFO", "WARNING", "WARNING", "ERROR"]
    assert lines[0]["run_id"] == 7 and lines[0]["week"] == "2026-11-23"
    assert lines[0]["logger"] == "songpop.test"
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", lines[0]["time"])
    everything = stream.getvalue()
    assert "hunter2" not in everything, everything
    assert "****" in lines[1]["message"] and "****" in lines[3]["exception"]
