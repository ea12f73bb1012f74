"""REST routes of the predictor: thin layers over services.predictor.service."""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from enum import StrEnum
from importlib.metadata import version as package_version
from typing import Any

from fastapi import APIRouter, HTTPException, Path, Request, Response
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.routing import BaseRoute

from shared import history_build, predictions
from shared.db import ping
from shared.history_build import RETRY_AFTER_SECONDS, awaited_build
from shared.ids import TRACK_REFERENCE_PATTERN, InvalidTrackId, normalise_track_id
from shared.models import AppState, IngestRun, ModelVersion
from shared.mqtt import broker_reachable

from . import tracks
from .deps import Clients, ClientsDep, SessionDep, SessionsDep, SettingsDep
from .guard import caller
from .schemas import (
    EXAMPLE_ID,
    ForecastBatchRequest,
    ForecastBatchResponse,
    Health,
    ModelOut,
    Problem,
    Readiness,
    StatusResponse,
    TrackForecast,
    TrendingResponse,
)

router = APIRouter()
RETRY_AFTER = {
    "Retry-After": {"description": "seconds to wait before asking again", "schema": {"type": "integer"}}
}


def problem(description: str, *, retry: bool = False) -> dict[str, Any]:
    """An error response in the OpenAPI document: a Problem body, with Retry-After when it says when."""
    return {"model": Problem, "description": description, **({"headers": RETRY_AFTER} if retry else {})}


# What every route reading the database can answer besides 200.
READS: dict[int | str, dict[str, Any]] = {
    503: problem("the database (or Spotify, for a song fetched on demand) is unavailable", retry=True),
}
# The forecast endpoints can reach Spotify: keys (when set), a per-client allowance, the hourly cap.
GUARDED: dict[int | str, dict[str, Any]] = {
    401: problem("an API key is required (SONGPOP_API_KEYS is set) and was missing or wrong"),
    422: problem("not a Spotify track id, URI or URL"),
    429: problem("this client asked for too many songs Spotify had to be asked about", retry=True),
    502: problem("Spotify refused a request needed for a song fetched on demand"),
    **READS,
}
ONE_SONG = {**GUARDED, 404: problem("Spotify does not know this track")}
MANY_SONGS = {
    **GUARDED,
    400: problem("the body could not be read at all (e.g. not UTF-8)"),
    413: problem("the body is larger than the limit"),
    422: problem("malformed JSON, or not a list of 1-100 Spotify track ids, URIs or URLs"),
}


class Tag(StrEnum):
    """The OpenAPI document's groups of operations (described in app.TAGS)."""

    forecasts = "forecasts"
    catalog = "catalog"
    operations = "operations"


def valid_ids(raw: Sequence[str]) -> list[str]:
    """Normalised ids in request order without repeats; 422 naming the first bad one."""
    try:
        return list(dict.fromkeys(normalise_track_id(r) for r in raw))
    except InvalidTrackId as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None


GZIPPED = {"content-encoding": "gzip", "vary": "Accept-Encoding"}
VARY = {"vary": "Accept-Encoding"}


def accepts_gzip(accept_encoding: str) -> bool:
    """True when the Accept-Encoding header allows gzip (and does not give it q=0)."""
    for part in accept_encoding.lower().split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip() in ("gzip", "*"):
            return params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


def forecast_route() -> BaseRoute:
    """The single-song forecast route (the fast path answers in its name)."""
    return next(r for r in router.routes if getattr(r, "name", None) == track_forecast.__name__)


class JSONBytes(Response):
    """A response whose body was serialised already (by pydantic, or kept in the response cache)."""

    media_type = "application/json"


@router.get(
    "/v1/tracks/{track_id:path}/forecast",
    response_model=TrackForecast,
    responses=ONE_SONG,
    operation_id="getTrackForecast",
    tags=[Tag.forecasts],
    summary="Forecast one song",
    description="Current values, 26- and 52-week forecasts with 80% intervals, model versions and history. "
    "`track_id` may be an id, a `spotify:track:` URI or an open.spotify.com URL. A valid id the database "
    "has never seen is fetched from Spotify, stored and forecast (a cold-start forecast); an id Spotify "
    "does not know gives 404.",
)
async def track_forecast(
    request: Request,
    track_id: str = Path(
        max_length=200, examples=[EXAMPLE_ID], json_schema_extra={"pattern": TRACK_REFERENCE_PATTERN}
    ),
) -> Response:
    # The hot path takes its clients from app.state, not through a dependency: resolving one costs as
    # much as the rest of an answer from the cache.
    clients: Clients = request.app.state.clients
    who = caller(request)
    ids = valid_ids([track_id])
    bodies, not_found = await tracks.gzipped_forecasts(clients=clients, track_ids=ids, caller=who)
    if not_found:
        raise HTTPException(status_code=404, detail=f"Spotify does not know track {not_found[0]}")
    if accepts_gzip(request.headers.get("accept-encoding", "")):
        return JSONBytes(bodies[0], headers=GZIPPED)
    return JSONBytes(gzip.decompress(bodies[0]), headers=VARY)


@router.post(
    "/v1/forecasts",
    response_model=ForecastBatchResponse,
    responses=MANY_SONGS,
    operation_id="forecastTracks",
    tags=[Tag.forecasts],
    summary="Forecast many songs",
    description="The same as the single-song forecast for up to 100 songs; ids Spotify does not know "
    "are listed in `not_found` instead of failing the whole request.",
)
async def batch_forecast(request: Request, body: ForecastBatchRequest, clients: ClientsDep) -> Response:
    who = caller(request)
    limit = clients.settings.max_batch
    if len(body.track_ids) > limit:
        raise HTTPException(
            status_code=422, detail=f"at most {limit} track ids per request, got {len(body.track_ids)}"
        )
    ids = valid_ids(body.track_ids)
    bodies, not_found = await tracks.gzipped_forecasts(clients=clients, track_ids=ids, caller=who)
    forecasts = b",".join(gzip.decompress(b) for b in bodies)
    # the forecasts are spliced in as they are: a ForecastBatchResponse without re-serialising them
    return JSONBytes(
        b'{"forecasts":[' + forecasts + b'],"not_found":' + json.dumps(not_found).encode() + b"}"
    )


async def refuse_while_building(session: AsyncSession) -> None:
    """503 with Retry-After, saying how far the history build is, while forecasts wait for it."""
    build = await awaited_build(session)
    if build is not None:
        raise HTTPException(
            status_code=503,
            detail=f"no forecasts yet: {build.describe()}",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )


@router.get(
    "/v1/trending",
    response_model=TrendingResponse,
    responses={
        503: problem(
            "the database is unavailable, or no forecasts exist yet because the demo history is being "
            "built (`songpop up`'s first start; the detail says how far)",
            retry=True,
        )
    },
    operation_id="listTrending",
    tags=[Tag.forecasts],
    summary="This week's trending songs with forecasts",
)
async def trending(session: SessionDep) -> TrendingResponse:
    week = await predictions.latest_batch_week(session)
    if week is None:
        await refuse_while_building(session)
        return TrendingResponse(week=None, count=0, demo=False, predictions=[])
    found = await predictions.stored_predictions(session, week=week)
    return TrendingResponse(week=week, count=len(found), demo=any(p.demo for p in found), predictions=found)


@router.get(
    "/v1/models",
    response_model=list[ModelOut],
    responses=READS,
    operation_id="listModels",
    tags=[Tag.catalog],
    summary="Registered models with backtest metrics",
)
async def models(request: Request, session: SessionDep) -> list[ModelOut]:
    rows = (await session.exec(select(ModelVersion).order_by(col(ModelVersion.id).desc()))).all()
    refused: dict[str, str] = request.app.state.refused_models
    return [
        ModelOut(
            **row.model_dump(exclude={"id", "artifact_path", "sha256", "is_demo"}),
            demo=row.is_demo,
            method=(row.metrics or {}).get("serving", {}).get("method", "model"),
            skill=(row.metrics or {}).get("serving", {}).get("skill"),
            refused=_without_path(refused[row.version]) if row.version in refused else None,
        )
        for row in rows
    ]


def _without_path(reason: str) -> str:
    """The registry's reason without the artifact's path (a server detail)."""
    return reason.split(": ", 1)[-1]


@router.get(
    "/v1/status",
    response_model=StatusResponse,
    responses=READS,
    operation_id="getStatus",
    tags=[Tag.catalog],
    summary="Access mode, last runs, versions",
)
async def status(session: SessionDep, settings: SettingsDep) -> StatusResponse:
    state = {s.key: s.value for s in (await session.exec(select(AppState))).all()}
    run = (await session.exec(select(IngestRun).order_by(col(IngestRun.id).desc()).limit(1))).first()
    model = (await session.exec(select(ModelVersion).order_by(col(ModelVersion.id).desc()).limit(1))).first()
    spotify = state.get("spotify") or {"mode": None, "lacks": [], "emulator": settings.uses_emulator}
    return StatusResponse(
        spotify=spotify,
        last_ingest=run.model_dump(mode="json") if run else None,
        last_training=model.model_dump(mode="json", exclude={"artifact_path"}) if model else None,
        trainer=state.get("trainer"),
        versions={"songpop": package_version("songpop")},
        history_build=state.get(history_build.KEY),
    )


@router.get("/healthz", response_model=Health, operation_id="healthz", tags=[Tag.operations], summary="Alive")
async def healthz() -> Health:
    return Health(status="ok")


def _state(ok: bool) -> str:
    return "ok" if ok else "unreachable"


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Database and broker reachable",
    description="Ready when the database and the broker answer, and, while `songpop up` builds its demo "
    "history on an empty database, once that history's first forecasts are stored.",
    operation_id="readyz",
    tags=[Tag.operations],
    responses={
        503: problem(
            "the database or the broker is unreachable, or the demo history is being built", retry=True
        )
    },
)
async def readyz(request: Request, sessions: SessionsDep, settings: SettingsDep) -> Readiness:
    db_ok = await ping(sessions.kw["bind"])
    broker_ok = await broker_reachable(settings)
    if not (db_ok and broker_ok):
        raise HTTPException(
            status_code=503,
            detail=f"database {_state(db_ok)}, broker {_state(broker_ok)}",
        )
    if not request.app.state.history_ready:  # once its forecasts exist, a build never comes back
        async with sessions() as session:
            await refuse_while_building(session)
        request.app.state.history_ready = True
    refused = sorted(request.app.state.refused_models)
    models = "refused: " + ", ".join(refused) if refused else "ok"  # served on: persistence stands in
    return Readiness(status="ready", database="ok", broker="ok", models=models)
