"""The Web API's catalog endpoints under `/v1/` (tracks, albums, artists, search, playlists, browse), in
the JSON shapes and with the limits of each access mode; what they show comes from `lookups.py`."""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response

from services.emulator.catalog import MARKETS
from services.emulator.errors import ApiError
from services.emulator.gate import StateDep, api_gate
from services.emulator.lookups import (
    TRENDING_PLAYLIST_ID,
    PlaylistEntry,
    new_releases,
    playlist_entries,
    released_album,
    released_artist_albums,
    released_track,
    top_tracks,
)
from services.emulator.objects import ObjectBuilder
from services.emulator.state import EmulatorState

ID_PATTERN = re.compile(r"^[0-9A-Za-z]{22}$")
BATCH_LIMITS = {"tracks": 50, "artists": 50, "albums": 20}
SEARCH_LIMITS = {False: 10, True: 50}  # by extended
NOT_FOUND = "Resource not found"


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


def _found(number: int | None) -> int:
    if number is None:
        raise ApiError(404, NOT_FOUND)
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


def _extended_only(state: EmulatorState, endpoint: str) -> None:
    if not state.extended:
        raise ApiError(403, f"{endpoint} is not available in Development Mode")


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


def _album(request: Request, build: ObjectBuilder, state: EmulatorState, number: int) -> dict[str, Any]:
    """A full album object, with the first page of its tracks."""
    tracks = [build.track_ref(t) for t in state.catalog.album_tracks(number)]
    return build.album(number, _page(request, tracks[:50], len(tracks), 50, 0))


def _entries(state: EmulatorState, playlist_id: str) -> list[PlaylistEntry]:
    entries = playlist_entries(state, _valid_id(playlist_id))
    if entries is None:
        raise ApiError(404, NOT_FOUND)
    return entries


def _playlist_page(
    request: Request, state: EmulatorState, playlist_id: str, key: str, limit: int, offset: int
) -> dict[str, Any]:
    """A page of playlist items; `key` is "track" (Extended Quota's /tracks) or "item" (/items)."""
    entries = _entries(state, playlist_id)
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


def make_api_router() -> APIRouter:
    """The `/v1/` routes, behind the gate (counting, latency, faults, token check)."""
    router = APIRouter(prefix="/v1", dependencies=[Depends(api_gate)])

    @router.get("/tracks/{track_id}")
    async def get_track(track_id: str, request: Request, state: StateDep) -> Response:
        number = _found(released_track(state, _valid_id(track_id)))
        _served(state, [track_id])
        return _json(_builder(request, state).track(number))

    @router.get("/tracks")
    async def get_tracks(request: Request, state: StateDep, ids: str = "") -> Response:
        build = _builder(request, state)
        wanted = _batch_ids(state, "tracks", ids)
        numbers = [released_track(state, i) for i in wanted]
        _served(state, [i for i, n in zip(wanted, numbers, strict=True) if n is not None])
        return _json({"tracks": [None if n is None else build.track(n) for n in numbers]})

    @router.get("/albums/{album_id}")
    async def get_album(album_id: str, request: Request, state: StateDep) -> Response:
        number = _found(released_album(state, _valid_id(album_id)))
        _served(state, [album_id])
        return _json(_album(request, _builder(request, state), state, number))

    @router.get("/albums")
    async def get_albums(request: Request, state: StateDep, ids: str = "") -> Response:
        build = _builder(request, state)
        out: list[dict[str, Any] | None] = []
        for album_id in _batch_ids(state, "albums", ids):
            number = released_album(state, album_id)
            if number is None:
                out.append(None)
                continue
            _served(state, [album_id])
            out.append(_album(request, build, state, number))
        return _json({"albums": out})

    @router.get("/albums/{album_id}/tracks")
    async def get_album_tracks(
        album_id: str, request: Request, state: StateDep,
        limit: int = Query(20, ge=1, le=50), offset: int = Query(0, ge=0),
    ) -> Response:  # fmt: skip
        number = _found(released_album(state, _valid_id(album_id)))
        build = _builder(request, state)
        tracks = list(state.catalog.album_tracks(number))
        items = [build.track_ref(t) for t in tracks[offset : offset + limit]]
        return _json(_page(request, items, len(tracks), limit, offset))

    @router.get("/artists/{artist_id}")
    async def get_artist(artist_id: str, request: Request, state: StateDep) -> Response:
        number = _found(state.catalog.artist_index.get(_valid_id(artist_id)))
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
        number = _found(state.catalog.artist_index.get(_valid_id(artist_id)))
        albums = released_artist_albums(state, number)
        build = _builder(request, state)
        items = [build.album_ref(a) for a in albums[offset : offset + limit]]
        return _json(_page(request, items, len(albums), limit, offset))

    @router.get("/artists/{artist_id}/top-tracks")
    async def get_artist_top_tracks(artist_id: str, request: Request, state: StateDep) -> Response:
        _extended_only(state, "GET /artists/{id}/top-tracks")
        number = _found(state.catalog.artist_index.get(_valid_id(artist_id)))
        build = _builder(request, state)
        return _json({"tracks": [build.track(t) for t in top_tracks(state, number)]})

    @router.get("/browse/new-releases")
    async def get_new_releases(
        request: Request, state: StateDep,
        limit: int = Query(20, ge=1, le=50), offset: int = Query(0, ge=0),
    ) -> Response:  # fmt: skip
        _extended_only(state, "GET /browse/new-releases")
        recent = new_releases(state)
        build = _builder(request, state)
        items = [build.album_ref(a) for a in recent[offset : offset + limit]]
        return _json({"albums": _page(request, items, len(recent), limit, offset)})

    @router.get("/markets")
    async def markets(state: StateDep) -> Response:
        _extended_only(state, "GET /markets")
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
        entries = _entries(state, playlist_id)
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
