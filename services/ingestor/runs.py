"""A run's record in `ingest_run` (and the access mode it found): started, its counts after each batch,
finished (publishing the staged snapshots and staging `db-updated`), paused or failed."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence

from sqlalchemy import update
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.catalog import publish_staged_snapshots
from shared.db import session_scope, upsert
from shared.events import DbUpdated, IngestKind, Topics, envelope
from shared.models import AppState, IngestRun, utcnow
from shared.outbox import add_event
from shared.spotify import models as sp

from .report import RunReport

log = logging.getLogger(__name__)

PRODUCER = "ingestor"
ABANDONED = "abandoned: the run stopped before it finished (database connection lost or process stopped)"
MAX_STORED_ERRORS = 200


async def start_run(*, sessions: async_sessionmaker[AsyncSession], kind: str, week: dt.date) -> RunReport:
    """Record a new run; earlier runs still marked running never finished and are marked failed."""
    async with session_scope(sessions) as session:
        await abandon_unfinished_runs(session=session)
        run = IngestRun(kind=kind, week=week)
        session.add(run)
        await session.flush()
        assert run.id is not None
        return RunReport(run_id=run.id, kind=kind, week=week)


async def abandon_unfinished_runs(*, session: AsyncSession) -> int:
    """Mark runs that never recorded an end as failed (one ingest runs at a time per database)."""
    query = select(IngestRun).where(IngestRun.status == "running")
    runs = (await session.exec(query)).all()
    for run in runs:
        run.status, run.finished_at, run.errors = "failed", utcnow(), [*run.errors, ABANDONED]
        session.add(run)
    return len(runs)


async def record_progress(*, session: AsyncSession, report: RunReport) -> None:
    """Store the run's counts so far, in the caller's transaction (a batch's rows and its counts agree)."""
    stmt = update(IngestRun).where(IngestRun.id == report.run_id).values(counts=report.counts.as_dict())  # type: ignore[arg-type]
    await session.exec(stmt)


async def record_access_mode(
    *, sessions: async_sessionmaker[AsyncSession], mode: sp.AccessMode, emulator: bool
) -> None:
    """Store the probed access mode where the API and the dashboard show it."""
    value = {
        "mode": mode.value,
        "lacks": sp.ACCESS_MODE_LIMITS[mode],
        "emulator": emulator,
        "probed_at": utcnow().isoformat(),
    }
    async with session_scope(sessions) as session:
        await upsert(
            session=session,
            model=AppState,
            rows=[{"key": "spotify", "value": value, "updated_at": utcnow()}],
            keys=["key"],
            update=["value", "updated_at"],
        )


async def paused_resume_ids(*, session: AsyncSession) -> list[str]:
    """Track ids a paused run had not fetched yet, if the latest run paused."""
    last = (
        await session.exec(
            select(IngestRun)
            .where(col(IngestRun.status) != "running")
            .order_by(col(IngestRun.id).desc())
            .limit(1)
        )
    ).first()
    if last is None or last.status != "paused" or not last.resume_point:
        return []
    return list(last.resume_point.get("track_ids", []))


async def finish_run(
    *,
    sessions: async_sessionmaker[AsyncSession],
    report: RunReport,
    topics: Topics,
    demo: bool,
    resume_ids: Sequence[str] = (),
) -> None:
    """Close the run in one transaction: a completed run publishes every staged snapshot row and, if it
    wrote anything, stages `db-updated`; a paused run leaves its staged rows for the run that completes."""
    async with session_scope(sessions) as session:
        if report.status == "ok":
            report.counts.snapshots_published += await publish_staged_snapshots(session=session)
        run = await session.get(IngestRun, report.run_id)
        assert run is not None
        run.status = report.status
        run.finished_at = utcnow()
        run.access_mode = report.access_mode
        run.counts = report.counts.as_dict()
        run.errors = report.errors[:MAX_STORED_ERRORS]
        run.resume_after = report.resume_after
        run.resume_point = {"track_ids": list(resume_ids)} if resume_ids else None
        session.add(run)
        counts = report.counts
        if report.status == "ok" and (counts.snapshots_published or counts.chart_entries):
            event = envelope(
                PRODUCER,
                DbUpdated(
                    run_id=report.run_id,
                    kind=IngestKind(report.kind),
                    week=report.week,
                    tracks=counts.tracks,
                    snapshots=counts.snapshots_published,
                    chart_entries=counts.chart_entries,
                    access_mode=report.access_mode,
                    demo=demo,
                ),
            )
            add_event(session, topic=topics.db_updated, event=event, retain=True)


async def fail_run(*, sessions: async_sessionmaker[AsyncSession], report: RunReport, error: str) -> None:
    """Mark the run failed (best effort: the database itself may be what failed)."""
    report.status = "failed"
    report.errors.append(error)
    try:
        async with session_scope(sessions) as session:
            run = await session.get(IngestRun, report.run_id)
            if run is not None:
                run.status, run.finished_at = "failed", utcnow()
                run.errors = report.errors[:MAX_STORED_ERRORS]
                run.counts = report.counts.as_dict()
                session.add(run)
    except Exception:  # noqa: BLE001 - reporting must not hide the original failure
        log.warning("could not record the failure of run %s", report.run_id)
