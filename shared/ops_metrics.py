"""Operational metrics read from the database, so one scrape shows the whole system: what the last ingest
wrote, how old the active models are, when the scheduled jobs run next, and how many events wait in the
outbox. (The ingestor and trainer serve no HTTP; their state lives in the database.) These gauges live in
their own registry, DATABASE_GAUGES, exported by one service per deployment (the dashboard, which runs
once), so replicas do not repeat them. Also the outbox's publish counter, by topic kind (per process)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re

from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy import func
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.models import AppState, IngestRun, ModelVersion, Outbox

log = logging.getLogger(__name__)

REFRESH_SECONDS = 15.0
SCHEDULED_JOBS = ("ingestor", "trainer")  # app_state keys holding a `next_run`

DATABASE_GAUGES = CollectorRegistry()
INGEST_LAST_ROWS = Gauge(
    "songpop_ingest_last_run_rows",
    "rows written by the last finished ingest run",
    ["entity"],
    registry=DATABASE_GAUGES,
)
INGEST_LAST_SUCCESS = Gauge(
    "songpop_ingest_last_success_timestamp_seconds",
    "when the last ok ingest run ended",
    registry=DATABASE_GAUGES,
)
INGEST_RUNS = Gauge(
    "songpop_ingest_runs", "ingest runs in the database, by status", ["status"], registry=DATABASE_GAUGES
)
MODEL_AGE = Gauge(
    "songpop_model_age_seconds",
    "age of the active model",
    ["signal", "horizon_weeks"],
    registry=DATABASE_GAUGES,
)
JOB_NEXT_RUN = Gauge(
    "songpop_job_next_run_timestamp_seconds",
    "when a scheduled job runs next",
    ["job"],
    registry=DATABASE_GAUGES,
)
OUTBOX_PENDING = Gauge(
    "songpop_outbox_pending_events",
    "events committed but not yet acknowledged by the broker",
    registry=DATABASE_GAUGES,
)
OUTBOX_PUBLISHED = Counter(
    "songpop_outbox_published_total", "events published from the outbox and acknowledged", ["topic"]
)
_TOPIC_KIND = re.compile(r"/(events|predictions|alerts|status)/([^/]+)")


def topic_kind(topic: str) -> str:
    """`events/db-updated`, `predictions/tracks`, ...: the topic without its root and song id."""
    match = _TOPIC_KIND.search(topic)
    return f"{match.group(1)}/{match.group(2)}" if match else "other"


def count_published(topics: list[str], each: int = 1) -> None:
    """Count `each` published message(s) on every one of `topics` (or of a batch row's topic filter)."""
    for topic in topics:
        OUTBOX_PUBLISHED.labels(topic_kind(topic)).inc(each)


Values = dict[Gauge, dict[tuple[str, ...], float]]


async def refresh(sessions: async_sessionmaker[AsyncSession], *, now: dt.datetime | None = None) -> None:
    """Set every database-backed gauge from the current rows (read first, then swapped in at once, so a
    status, model or job that is gone does not linger and a failed read changes nothing)."""
    now = now or dt.datetime.now(dt.UTC)
    async with sessions() as session:
        values: Values = {
            **await _ingest(session),
            MODEL_AGE: await _model_ages(session, now),
            JOB_NEXT_RUN: await _next_runs(session),
        }
        pending = (await session.exec(select(func.count()).where(col(Outbox.published_at).is_(None)))).one()
    for gauge, series in values.items():
        gauge.clear()
        for labels, value in series.items():
            (gauge.labels(*labels) if labels else gauge).set(value)
    OUTBOX_PENDING.set(pending)


async def _ingest(session: AsyncSession) -> Values:
    by_status = (
        await session.exec(select(IngestRun.status, func.count()).group_by(col(IngestRun.status)))
    ).all()
    finished = col(IngestRun.finished_at)
    last_query = select(IngestRun).where(finished.is_not(None)).order_by(finished.desc()).limit(1)
    last = (await session.exec(last_query)).first()
    ok_query = select(func.max(finished)).where(col(IngestRun.status) == "ok")
    ok = (await session.exec(ok_query)).one()
    counts: dict[tuple[str, ...], float] = {
        (entity,): float(n)
        for entity, n in (last.counts if last else {}).items()
        if isinstance(n, int | float)
    }
    return {
        INGEST_RUNS: {(status,): float(n) for status, n in by_status},
        INGEST_LAST_ROWS: counts,
        INGEST_LAST_SUCCESS: {(): _aware(ok).timestamp()} if ok is not None else {},
    }


async def _model_ages(session: AsyncSession, now: dt.datetime) -> dict[tuple[str, ...], float]:
    active = (await session.exec(select(ModelVersion).where(col(ModelVersion.active).is_(True)))).all()
    return {(m.signal, str(m.horizon_weeks)): (now - _aware(m.created_at)).total_seconds() for m in active}


async def _next_runs(session: AsyncSession) -> dict[tuple[str, ...], float]:
    rows = (await session.exec(select(AppState).where(col(AppState.key).in_(SCHEDULED_JOBS)))).all()
    return {
        (row.key,): _aware(dt.datetime.fromisoformat(row.value["next_run"])).timestamp()
        for row in rows
        if (row.value or {}).get("next_run")
    }


def _aware(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


async def refresh_forever(sessions: async_sessionmaker[AsyncSession], every: float = REFRESH_SECONDS) -> None:
    """Keep the gauges current until cancelled; a database outage only leaves them stale."""
    while True:
        try:
            await refresh(sessions)
        except Exception as exc:  # the database may be away: /readyz reports that, not this loop
            log.debug("operational metrics not refreshed: %s", type(exc).__name__)
        await asyncio.sleep(every)
