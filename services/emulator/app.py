"""The emulator's HTTP API: Spotify's token endpoint and catalog endpoints, plus `/_emulator` controls."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import math
import re
from typing import Annotated, Any
from urllib.parse import parse_qs

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.emulator.catalog import MARKETS, week_index
from services.emulator.config import EmulatorConfig
from services.emulator.objects import LOCAL_TRACKS, ObjectBuilder
from services.emulator.state import EmulatorState, FaultPlan

TRENDING_PLAYLIST_ID = "0SongpopTrendingTop50x"  # Spotify-owned: 404 in Development Mode
DEMO_PLAYLIST_ID = "1SongpopUsersOwnMixtap"  # owned by the app's user: readable in both modes
DEMO_PLAYLIST_SIZE = 240
ID_PATTERN = re.compile(r"^[0-9A-Za-z]{22}$")
CHART_FILE = re.compile(r"^regional-([a-z]{2}|global)-weekly-(\d{4}-\d{2}-\d{2})\.csv$")
BATCH_LIMITS = {"tracks": 50, "artists": 50, "albums": 20}
SEARCH_LIMITS = {False: 10, True: 50}  # by extended
NEW_RELEASE_WEEKS = 2


class ApiError(Exception):
    """An error answered in Spotify's shape: `{"error": {"status", "message"[, "reason"]}}`."""

    def __init__(
        self, status: int, message: str, *, reason: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.reason, self.headers = status, message, reason, headers or {}


def _error_response(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    body: dict[str, Any] = {"status": exc.status, "message": exc.message}
    if exc.reason:
        body["reason"] = exc.reason
    return JSONResponse({"error": body}, status_code=exc.status, headers=exc.headers)


def _validation_response(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in exc.errors())
    return JSONResponse({"error": {"status": 400, "message": problems}}, status_code=400)


def _http_error_response(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if not request.url.path.startswith("/v1/"):
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)
    message = "Service not found" if exc.status_code == 404 else str(exc.detail)
    return JSONResponse(
        {"error": {"status": exc.status_code, "message": message}}, status_code=exc.status_code
    )


def _seconds_value(value: float) -> float | int:
    """Whole seconds as an integer (Spotify's shape); fractions only when tests ask for them."""
    return int(value) if float(value).is_integer() else value


def _seconds(value: float) -> str:
    """Retry-After as Spotify sends it (whole seconds), or a fraction when tests ask for sub-second waits."""
    return str(math.ceil(value)) if value >= 1 else f"{value:.3f}"


def emulator_state(request: Request) -> EmulatorState:
    """The emulator state of the app serving `request`."""
    return request.app.state.emulator  # type: ignore[no-any-return]


StateDep = Annotated[EmulatorState, Depends(emulator_state)]


async def api_gate(request: Request, state: StateDep, authorization: str | None = Header(None)) -> None:
    """Count the request, add latency, inject faults, then check the bearer token."""
    route = request.scope.get("route")
    state.counters.by_endpoint[f"{request.method} {getattr(route, 'path', request.url.path)}"] += 1
    if state.latency_ms:
        await asyncio.sleep(state.latency_ms / 1000)
    decision = state.decide()
    if decision.kind in ("rate_limited", "penalty", "window"):
        raise ApiError(429, "API rate limit exceeded", headers={"Retry-After": _seconds(decision.value)})
    if decision.kind == "quota_exceeded":
        raise ApiError(
            429, "Quota exceeded for this developer account", reason="QUOTA_EXCEEDED",
            headers={"Retry-After": _seconds(decision.value)},
        )  # fmt: skip
    if decision.kind == "server_error":
        raise ApiError(int(decision.value), "Service unavailable")
    if decision.kind == "timeout":
        await asyncio.sleep(decision.value)
        raise ApiError(504, "Gateway timeout")
    if decision.kind == "expire_tokens":
        state.expire_tokens()
    if not authorization or not authorization.startswith("Bearer "):
        raise ApiError(401, "No token provided")
    if not state.token_valid(authorization.removeprefix("Bearer ").strip()):
        raise ApiError(401, "The access token expired")


def _json(payload: Any) -> Response:
    """JSON straight to bytes (FastAPI's generic encoder is slow, and these payloads are plain JSON)."""
    return Response(
        json.dumps(payload, ensure_ascii=False, separators=(",", ":")), media_type="application/json"
    )


def _builder(request: Request, state: EmulatorState) -> ObjectBuilder:
    return ObjectBuilder(
        state.catalog,
        extended=state.extended,
        week=state.week,
        base_url=str(request.base_url) + "v1",
    )


def _served(state: EmulatorState, ids: list[str]) -> None:
    """Count the ids a lookup by id answered (searches and playlists do not count)."""
    state.counters.served.update(ids)


def _valid_id(spotify_id: str) -> str:
    if not ID_PATTERN.match(spotify_id):
        raise ApiError(400, "Invalid base62 id")
    return spotify_id


def _track_number(state: EmulatorState, track_id: str) -> int | None:
    number = state.catalog.track_index.get(track_id)
    if number is None or not state.catalog.released(number, state.week):
        return None
    return number


def _album_number(state: EmulatorState, album_id: str) -> int | None:
    number = state.catalog.album_index.get(album_id)
    if number is None or state.catalog.album_release_week[number] > week_index(state.week):
        return None
    return number


def _batch_ids(state: EmulatorState, kind: str, ids: str) -> list[str]:
    if not state.extended:
        raise ApiError(403, f"GET /{kind}?ids= is not available in Development Mode")
    wanted = [i for i in ids.split(",") if i]
    if not wanted:
        raise ApiError(400, "No ids provided")
    if len(wanted) > BATCH_LIMITS[kind]:
        raise ApiError(400, "Too many ids requested")
    return [_valid_id(i) for i in wanted]


def _page(request: Request, items: list[Any], total: int, limit: int, offset: int) -> dict[str, Any]:
    """A paging object whose `next`/`previous` are absolute URLs, as Spotify's are."""

    def link(at: int) -> str:
        return str(request.url.include_query_params(offset=at, limit=limit))

    return {
        "href": str(request.url),
        "items": items,
        "limit": limit,
        "next": link(offset + limit) if offset + limit < total else None,
        "offset": offset,
        "previous": link(max(0, offset - limit)) if offset > 0 else None,
        "total": total,
    }


def _make_api_router() -> APIRouter:
    router = APIRouter(prefix="/v1", dependencies=[Depends(api_gate)])

    @router.get("/tracks/{track_id}")
    async def get_track(track_id: str, request: Request, state: StateDep) -> Response:
        number = _track_number(state, _valid_id(track_id))
        if number is None:
            raise ApiError(404, "Resource not found")
        _served(state, [track_id])
        return _json(_builder(request, state).track(number))

    @router.get("/tracks")
    async def get_tracks(request: Request, state: StateDep, ids: str = "") -> Response:
        build = _builder(request, state)
        wanted = _batch_ids(state, "tracks", ids)
        numbers = [_track_number(state, i) for i in wanted]
        _served(state, [i for i, n in zip(wanted, numbers, strict=True) if n is not None])
        return _json({"tracks": [None if n is None else build.track(n) for n in numbers]})

    @router.get("/albums/{album_id}")
    async def get_album(album_id: str, request: Request, state: StateDep) -> Response:
        number = _album_number(state, _valid_id(album_id))
        if number is None:
            raise ApiError(404, "Resource not found")
        _served(state, [album_id])
        build = _builder(request, state)
        tracks = [build.track_ref(t) for t in state.catalog.album_tracks(number)]
        page = _page(request, tracks[:50], len(tracks), 50, 0)
        return _json(build.album(number, page))

    @router.get("/albums")
    async def get_albums(request: Request, state: StateDep, ids: str = "") -> Response:
        build = _builder(request, state)
        out: list[dict[str, Any] | None] = []
        for album_id in _batch_ids(state, "albums", ids):
            number = _album_number(state, album_id)
            if number is None:
                out.append(None)
                continue
            _served(state, [album_id])
            tracks = [build.track_ref(t) for t in state.catalog.album_tracks(number)]
            out.append(build.album(number, _page(request, tracks[:50], len(tracks), 50, 0)))
        return _json({"albums": out})

    @router.get("/albums/{album_id}/tracks")
    async def get_album_tracks(
        album_id: str, request: Request, state: StateDep,
        limit: int = Query(20, ge=1, le=50), offset: int = Query(0, ge=0),
    ) -> Response:  # fmt: skip
        number = _album_number(state, _valid_id(album_id))
        if number is None:
            raise ApiError(404, "Resource not found")
        build = _builder(request, state)
        tracks = list(state.catalog.album_tracks(number))
        items = [build.track_ref(t) for t in tracks[offset : offset + limit]]
        return _json(_page(request, items, len(tracks), limit, offset))

    @router.get("/artists/{artist_id}")
    async def get_artist(artist_id: str, request: Request, state: StateDep) -> Response:
        number = state.catalog.artist_index.get(_valid_id(artist_id))
        if number is None:
            raise ApiError(404, "Resource not found")
        _served(state, [artist_id])
        return _json(_builder(request, state).artist(number))

    @router.get("/artists")
    async def get_artists(request: Request, state: StateDep, ids: str = "") -> Response:
        build = _builder(request, state)
        wanted = _batch_ids(state, "artists", ids)
        numbers = [state.catalog.artist_index.get(i) for i in wanted]
        _served(state, [i for i, n in zip(wanted, numbers, strict=True) if n is not None])
        return _json({"artists": [None if n is None else build.artist(n) for n in numbers]})

    @router.get("/artists/{artist_id}/albums")
    async def get_artist_albums(
        artist_id: str, request: Request, state: StateDep,
        limit: int = Query(20, ge=1, le=50), offset: int = Query(0, ge=0),
    ) -> Response:  # fmt: skip
        number = state.catalog.artist_index.get(_valid_id(artist_id))
        if number is None:
            raise ApiError(404, "Resource not found")
        now = week_index(state.week)
        albums = [
            a for a in state.catalog.artist_albums(number) if state.catalog.album_release_week[a] <= now
        ]
        build = _builder(request, state)
        items = [build.album_ref(a) for a in albums[offset : offset + limit]]
        return _json(_page(request, items, len(albums), limit, offset))

    @router.get("/artists/{artist_id}/top-tracks")
    async def get_artist_top_tracks(artist_id: str, request: Request, state: StateDep) -> Response:
        if not state.extended:
            raise ApiError(403, "GET /artists/{id}/top-tracks is not available in Development Mode")
        number = state.catalog.artist_index.get(_valid_id(artist_id))
        if number is None:
            raise ApiError(404, "Resource not found")
        catalog = state.catalog
        pop = catalog.track_popularity(state.week)
        mine = [t for a in catalog.artist_albums(number) for t in catalog.album_tracks(a) if pop[t] > 0]
        top = sorted(mine, key=lambda t: -pop[t])[:10]
        build = _builder(request, state)
        return _json({"tracks": [build.track(t) for t in top]})

    @router.get("/browse/new-releases")
    async def new_releases(
        request: Request, state: StateDep,
        limit: int = Query(20, ge=1, le=50), offset: int = Query(0, ge=0),
    ) -> Response:  # fmt: skip
        if not state.extended:
            raise ApiError(403, "GET /browse/new-releases is not available in Development Mode")
        now = week_index(state.week)
        weeks = state.catalog.album_release_week
        recent = [int(a) for a in np.flatnonzero((weeks <= now) & (weeks > now - NEW_RELEASE_WEEKS))]
        recent.sort(key=lambda a: (-int(weeks[a]), a))
        build = _builder(request, state)
        items = [build.album_ref(a) for a in recent[offset : offset + limit]]
        return _json({"albums": _page(request, items, len(recent), limit, offset)})

    @router.get("/markets")
    async def markets(state: StateDep) -> Response:
        if not state.extended:
            raise ApiError(403, "GET /markets is not available in Development Mode")
        return _json({"markets": MARKETS})

    @router.get("/search")
    async def search(
        request: Request, state: StateDep, q: str = Query(..., min_length=1), type: str = "track",
        limit: int | None = Query(None, ge=1), offset: int = Query(0, ge=0),
    ) -> Response:  # fmt: skip
        maximum = SEARCH_LIMITS[state.extended]
        limit = limit if limit is not None else (20 if state.extended else 5)
        if limit > maximum:
            raise ApiError(400, f"Invalid limit: at most {maximum} in this access mode")
        if "track" not in type.split(","):
            raise ApiError(400, "Only type=track is emulated")
        if offset + limit > 1000:
            raise ApiError(400, "Offset too large")
        found = state.catalog.search(q, state.week)
        build = _builder(request, state)
        items = [build.track(t) for t in found[offset : offset + limit]]
        return _json({"tracks": _page(request, items, len(found), limit, offset)})

    @router.get("/playlists/{playlist_id}")
    async def get_playlist(playlist_id: str, request: Request, state: StateDep) -> Response:
        entries = _playlist_entries(state, _valid_id(playlist_id))
        owner = "spotify" if playlist_id == TRENDING_PLAYLIST_ID else "songpop-demo-user"
        content = "tracks" if state.extended else "items"
        return _json({
            "id": playlist_id, "name": "Top 50 - Songpop" if owner == "spotify" else "My mixtape",
            "owner": {"id": owner, "type": "user"}, "collaborative": False, "public": True,
            "type": "playlist", "uri": f"spotify:playlist:{playlist_id}",
            content: {"href": f"{request.url}/{content}", "total": len(entries)},
        })  # fmt: skip

    @router.get("/playlists/{playlist_id}/tracks")
    async def get_playlist_tracks(
        playlist_id: str, request: Request, state: StateDep,
        limit: int = Query(100, ge=1, le=100), offset: int = Query(0, ge=0),
    ) -> Response:  # fmt: skip
        if not state.extended:
            raise ApiError(403, "GET /playlists/{id}/tracks was replaced by /playlists/{id}/items")
        return _json(_playlist_page(request, state, playlist_id, "track", limit, offset))

    @router.get("/playlists/{playlist_id}/items")
    async def get_playlist_items(
        playlist_id: str, request: Request, state: StateDep,
        limit: int = Query(100, ge=1, le=100), offset: int = Query(0, ge=0),
    ) -> Response:  # fmt: skip
        return _json(_playlist_page(request, state, playlist_id, "item", limit, offset))

    return router


def _playlist_entries(state: EmulatorState, playlist_id: str) -> list[int | str | None]:
    """Track numbers of a playlist; "local:<n>" for a local file, None for an unavailable track."""
    if playlist_id == TRENDING_PLAYLIST_ID and state.extended:
        return [state.catalog.track_index[t] for t in state.catalog.trending_track_ids(state.week)]
    if playlist_id != DEMO_PLAYLIST_ID:
        raise ApiError(404, "Resource not found")
    catalog = state.catalog
    order = np.random.default_rng([catalog.seed, 99]).permutation(catalog.n_tracks)
    released = order[catalog.release_week[order] <= week_index(state.week)][:DEMO_PLAYLIST_SIZE]
    entries: list[int | str | None] = [int(t) for t in released]
    for n in range(len(LOCAL_TRACKS)):
        entries.insert(min(len(entries), 17 + 37 * n), f"local:{n}")
    entries.insert(min(len(entries), 150), None)
    return entries


def _playlist_page(
    request: Request, state: EmulatorState, playlist_id: str, key: str, limit: int, offset: int
) -> dict[str, Any]:
    entries = _playlist_entries(state, _valid_id(playlist_id))
    build = _builder(request, state)
    added = dt.datetime.combine(state.week, dt.time(12), dt.UTC).isoformat().replace("+00:00", "Z")
    items = []
    for entry in entries[offset : offset + limit]:
        if isinstance(entry, str):
            obj: dict[str, Any] | None = build.local_track(int(entry.split(":")[1]))
        else:
            obj = None if entry is None else build.track(entry)
        local = isinstance(entry, str)
        items.append({"added_at": added, "added_by": None, "is_local": local, key: obj})
    return _page(request, items, len(entries), limit, offset)


def _make_accounts_router() -> APIRouter:
    router = APIRouter()

    @router.post("/api/token")
    async def token(request: Request, state: StateDep, authorization: str | None = Header(None)) -> Response:
        form = {k: v[-1] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()}
        grant_type = form.get("grant_type")
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        if authorization and authorization.startswith("Basic "):
            try:
                client_id, _, client_secret = base64.b64decode(authorization[6:]).decode().partition(":")
            except ValueError:
                client_id = client_secret = None
        if grant_type != "client_credentials":
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        if (client_id, client_secret) != (state.config.client_id, state.config.client_secret):
            return JSONResponse(
                {"error": "invalid_client", "error_description": "Invalid client"}, status_code=400
            )
        return JSONResponse(
            {
                "access_token": state.issue_token(),
                "token_type": "Bearer",
                "expires_in": _seconds_value(state.config.token_ttl_seconds),
            }
        )

    return router


class ClockChange(BaseModel):
    week: dt.date | None = None
    advance_weeks: int | None = None


def _make_control_router() -> APIRouter:
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


class StatusCounter:
    """ASGI middleware counting the status codes of `/v1/` answers (lighter than an HTTP middleware)."""

    def __init__(self, app: Any, state: EmulatorState) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return

        async def counting_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                self.state.counters.by_status[message["status"]] += 1
            await send(message)

        await self.app(scope, receive, counting_send)


def create_app(config: EmulatorConfig | None = None) -> FastAPI:
    """The emulator as an ASGI app; `app.state.emulator` holds catalog, clock, faults and counters."""
    config = config or EmulatorConfig()
    app = FastAPI(title="Spotify Web API emulator (songpop)", docs_url="/_emulator/docs", openapi_url=None)
    app.state.emulator = EmulatorState(config)
    app.add_exception_handler(ApiError, _error_response)
    app.add_exception_handler(RequestValidationError, _validation_response)
    app.add_exception_handler(StarletteHTTPException, _http_error_response)
    app.add_middleware(StatusCounter, state=app.state.emulator)
    app.include_router(_make_accounts_router())
    app.include_router(_make_api_router())
    app.include_router(_make_control_router())
    return app
