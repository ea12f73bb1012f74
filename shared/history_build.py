"""The progress of a history build: `songpop up` simulating its demo history on an empty database while
its servers already answer.

One `app_state` row (key `history_build`) is the whole mechanism: the builder writes it after each week,
the dashboard shows it as a progress view, and the predictor reads it to defer its events (scoring a
half-built history would only be thrown away) and to say "not ready" at `/readyz` until the first
forecasts of the finished history exist. Without the row (every deployment but `songpop up`'s first
start) nothing changes. docs/operations.md#the-first-start-of-songpop-up describes it.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.db import session_scope, upsert
from shared.models import AppState, Prediction, utcnow

KEY = "history_build"
RETRY_AFTER_SECONDS = 5  # what REST answers that need the history tell a client to wait


class Phase(StrEnum):
    simulating = "simulating"  # `week` of `weeks` stored so far
    training = "training"
    done = "done"
    interrupted = "interrupted"  # the process ended during an earlier build: the history is partial


class HistoryBuild(BaseModel):
    """Where the build is."""

    phase: Phase
    week: int = 0
    weeks: int
    started_at: dt.datetime

    @property
    def in_progress(self) -> bool:
        return self.phase in (Phase.simulating, Phase.training)

    @property
    def percent(self) -> int:
        """Of the whole build; training counts as the last tenth."""
        if self.phase == Phase.simulating:
            return int(90 * self.week / max(self.weeks, 1))
        return 90 if self.phase == Phase.training else 100

    def describe(self) -> str:
        """One line for people: the page, the REST answers and /readyz say it alike."""
        if self.phase == Phase.simulating:
            return f"building demo history: week {self.week} of {self.weeks}"
        if self.phase == Phase.training:
            return f"training the models on {self.weeks} weeks of demo history"
        if self.phase == Phase.done:
            return "demo history built; computing the first forecasts"
        return f"the demo history was interrupted after week {self.week} of {self.weeks}"


async def read_build(session: AsyncSession) -> HistoryBuild | None:
    """The build's state, or None when there never was one."""
    row = await session.get(AppState, KEY)
    return HistoryBuild.model_validate(row.value) if row is not None and row.value else None


async def write_build(sessions: async_sessionmaker[AsyncSession], build: HistoryBuild) -> None:
    """Store `build` (one upsert, its own transaction)."""
    row = {"key": KEY, "value": build.model_dump(mode="json"), "updated_at": utcnow()}
    async with session_scope(sessions) as session:
        await upsert(
            session=session, model=AppState, rows=[row], keys=["key"], update=["value", "updated_at"]
        )


async def awaited_build(session: AsyncSession) -> HistoryBuild | None:
    """The build while answers that need its data must wait: in progress, or done before the first
    forecasts are stored. None otherwise (no build, an interrupted one, or forecasts exist)."""
    build = await read_build(session)
    if build is None or build.phase == Phase.interrupted:
        return None
    if build.in_progress:
        return build
    forecasts = (await session.exec(select(col(Prediction.track_id)).limit(1))).first()
    return None if forecasts is not None else build


async def build_in_progress(sessions: async_sessionmaker[AsyncSession]) -> HistoryBuild | None:
    """The build while one is in progress, else None."""
    async with sessions() as session:
        build = await read_build(session)
    return build if build is not None and build.in_progress else None
