"""`/_emulator/*`: what tests and demos steer: the simulated clock, faults, counters, reset, chart files."""

from __future__ import annotations

import datetime as dt
import re

from fastapi import APIRouter, Response
from pydantic import BaseModel

from services.emulator.errors import ApiError
from services.emulator.gate import StateDep
from services.emulator.state import FaultPlan

CHART_FILE = re.compile(r"^regional-([a-z]{2}|global)-weekly-(\d{4}-\d{2}-\d{2})\.csv$")


class ClockChange(BaseModel):
    week: dt.date | None = None
    advance_weeks: int | None = None


def make_control_router() -> APIRouter:
    """The control endpoints."""
    router = APIRouter(prefix="/_emulator")

    @router.get("/clock")
    async def get_clock(state: StateDep) -> dict[str, str]:
        return {"week": state.week.isoformat()}

    @router.post("/clock")
    async def set_clock(change: ClockChange, state: StateDep) -> dict[str, str]:
        if change.week is not None:
            state.set_week(change.week)
        if change.advance_weeks:
            state.advance(change.advance_weeks)
        return {"week": state.week.isoformat()}

    @router.post("/faults")
    async def add_faults(plan: FaultPlan, state: StateDep) -> dict[str, object]:
        state.add_faults(plan)
        return {"pending": [f.__dict__ for f in state.faults], "latency_ms": state.latency_ms}

    @router.get("/stats")
    async def stats(state: StateDep) -> dict[str, object]:
        return {"mode": state.mode, "week": state.week.isoformat(), **state.counters.as_dict()}

    @router.post("/reset")
    async def reset(state: StateDep) -> dict[str, str]:
        state.reset()
        return {"week": state.week.isoformat()}

    @router.get("/charts/{filename}")
    async def chart(filename: str, state: StateDep) -> Response:
        match = CHART_FILE.match(filename)
        if not match:
            raise ApiError(404, "Chart files look like regional-<region>-weekly-<YYYY-MM-DD>.csv")
        region, day = match.group(1), dt.date.fromisoformat(match.group(2))
        if day > state.week + dt.timedelta(days=6):
            raise ApiError(404, "That week's chart is not published yet (see the simulated clock)")
        return Response(
            state.catalog.chart_csv(day, region).encode("utf-8"),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    return router
