"""REST routes of the predictor: thin layers over services.predictor.service."""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import version as package_version

from fastapi import APIRouter, HTTPException, Path
from sqlalchemy import func, select

from shared.db import ping
from shared.ids import InvalidTrackId, normalise_track_id
from shared.models import AppState, IngestRun, ModelVersion, Snapshot, Track
from shared.mqtt import broker_reachable

from . import service
from .deps import SessionDep, SessionsDep, SettingsDep, SpotifyDep
from .schemas import (
    ForecastBatchRequest,
    ForecastBatchResponse,
    HistoryPoint,
    ModelOut,
    Problem,
    StatusResponse,
    TrackForecast,
    TrackInfo,
    TrendingResponse,
)

router = APIRouter()
ERRORS = {404: {"model": Problem}, 422: {"model": Problem}}


def valid_ids(raw: Sequence[str]) -> list[str]:
    """Normalised ids in request order without repeats; 422 naming the first bad one."""
    try:
        return list(dict.fromkeys(normalise_track_id(r) for r in raw))
    except InvalidTrackId as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None


async def build_forecasts(
    *, sessions: SessionsDep, settings: SettingsDep, spotify: SpotifyDep, track_ids: list[str]
) -> list[TrackForecast]:
    """Forecasts with history for songs already stored (callers ensure them first)."""
    async with sessions() as session:
        per_track = await service.forecasts_for(session=session, settings=settings, track_ids=track_ids)
        tracks = {
            t.id: t
            for t in (await session.exec(select(Track).where(Track.id.in_(track_ids)))).scalars()  # type: ignore[call-overload, attr-defined]
        }
        result = []
        for track_id in track_ids:
            track = tracks[track_id]
            refreshed = (
                await session.exec(select(func.max(Snapshot.updated_at)).where(Snapshot.track_id == track_id))  # type: ignore[call-overload]
            ).scalar()
            predictions = per_track.get(track_id, [])
            result.append(
                TrackForecast(
                    track=TrackInfo(
                        id=track.id,
                        name=track.name,
                        artists=track.artist_names,
                        album_id=track.album_id,
                        release_date=track.release_date,
                        demo=track.is_demo,
                    ),
                    predictions=predictions,
                    history=[
                        HistoryPoint(**p) for p in await service.history(session=session, track_id=track_id)
                    ],
                    data_refreshed_at=refreshed,
                    cold_start=any(f.cold_start for p in predictions for f in p.forecasts) or not predictions,
                )
            )
        return result


@router.get(
    "/v1/tracks/{track_id:path}/forecast",
    response_model=TrackForecast,
    responses=ERRORS,
    summary="Forecast one song",
    description="Current values, 26- and 52-week forecasts with 80% intervals, model versions and history. "
    "`track_id` may be an id, a `spotify:track:` URI or an open.spotify.com URL. A valid id the database "
    "has never seen is fetched from Spotify, stored and forecast (a cold-start forecast).",
)
async def track_forecast(
    sessions: SessionsDep,
    settings: SettingsDep,
    spotify: SpotifyDep,
    track_id: str = Path(max_length=200),
) -> TrackForecast:
    ids = valid_ids([track_id])
    try:
        await service.ensure_tracks(
            sessions=sessions, spotify=spotify, track_ids=ids, demo=settings.uses_emulator
        )
    except service.UnknownTracks as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None
    return (await build_forecasts(sessions=sessions, settings=settings, spotify=spotify, track_ids=ids))[0]


@router.post(
    "/v1/forecasts", response_model=ForecastBatchResponse, responses=ERRORS, summary="Forecast many songs"
)
async def batch_forecast(
    body: ForecastBatchRequest, sessions: SessionsDep, settings: SettingsDep, spotify: SpotifyDep
) -> ForecastBatchResponse:
    if len(body.track_ids) > settings.max_batch:
        raise HTTPException(status_code=422, detail=f"at most {settings.max_batch} track ids per request")
    ids = valid_ids(body.track_ids)
    not_found: list[str] = []
    try:
        await service.ensure_tracks(
            sessions=sessions, spotify=spotify, track_ids=ids, demo=settings.uses_emulator
        )
    except service.UnknownTracks as exc:
        not_found = exc.ids
    found = [i for i in ids if i not in set(not_found)]
    forecasts = await build_forecasts(sessions=sessions, settings=settings, spotify=spotify, track_ids=found)
    return ForecastBatchResponse(forecasts=forecasts, not_found=not_found)


@router.get(
    "/v1/trending", response_model=TrendingResponse, summary="This week's trending songs with forecasts"
)
async def trending(session: SessionDep) -> TrendingResponse:
    latest = await service.latest_predictions(session=session)
    if latest is None:
        return TrendingResponse(week=None, count=0, demo=False, predictions=[])
    demo = any(p.demo for p in latest.predictions)
    return TrendingResponse(week=latest.week, count=latest.count, demo=demo, predictions=latest.predictions)


@router.get("/v1/models", response_model=list[ModelOut], summary="Registered models with backtest metrics")
async def models(session: SessionDep) -> list[ModelOut]:
    rows = (await session.exec(select(ModelVersion).order_by(ModelVersion.id.desc()))).scalars().all()  # type: ignore[call-overload, union-attr]
    return [
        ModelOut(**row.model_dump(exclude={"id", "artifact_path", "sha256", "is_demo"}), demo=row.is_demo)
        for row in rows
    ]


@router.get("/v1/status", response_model=StatusResponse, summary="Access mode, last runs, versions")
async def status(session: SessionDep, settings: SettingsDep) -> StatusResponse:
    state = {s.key: s.value for s in (await session.exec(select(AppState))).scalars()}  # type: ignore[call-overload]
    run = (await session.exec(select(IngestRun).order_by(IngestRun.id.desc()).limit(1))).scalars().first()  # type: ignore[call-overload, union-attr]
    model = (
        (await session.exec(select(ModelVersion).order_by(ModelVersion.id.desc()).limit(1))).scalars().first()
    )  # type: ignore[call-overload, union-attr]
    spotify = state.get("spotify") or {"mode": None, "lacks": [], "emulator": settings.uses_emulator}
    return StatusResponse(
        spotify=spotify,
        last_ingest=run.model_dump(mode="json") if run else None,
        last_training=model.model_dump(mode="json", exclude={"artifact_path"}) if model else None,
        trainer=state.get("trainer"),
        versions={"songpop": package_version("songpop")},
    )


@router.get("/healthz", summary="Alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _state(ok: bool) -> str:
    return "ok" if ok else "unreachable"


@router.get("/readyz", summary="Database and broker reachable", responses={503: {"model": Problem}})
async def readyz(sessions: SessionsDep, settings: SettingsDep) -> dict[str, str]:
    db_ok = await ping(sessions.kw["bind"])
    broker_ok = await broker_reachable(settings)
    if not (db_ok and broker_ok):
        raise HTTPException(
            status_code=503,
            detail=f"database {_state(db_ok)}, broker {_state(broker_ok)}",
        )
    return {"status": "ready", "database": "ok", "broker": "ok"}
