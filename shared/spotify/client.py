"""An async Spotify Web API client that works in both 2026 access modes.

- One probe request tells Development Mode from Extended Quota Mode (is `popularity` in a track?).
- Extended Quota: batch endpoints (tracks and artists by 50, albums by 20). Development Mode: one request per
  item, run concurrently. Callers ask for objects by id and get typed objects either way.
- The token lives in `auth.py`; limits, retries, 429 pauses and stops in `transport.py`. A stop raises
  `SpotifyPaused`, carrying what was fetched (`partial`) and when to resume (`resume_at`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import httpx

from shared.config import Settings
from shared.spotify.auth import TOKEN_RENEW_MARGIN_SECONDS, TokenCache, client_credentials
from shared.spotify.budget import HourlyBudget
from shared.spotify.errors import (
    SpotifyError,
    SpotifyForbidden,
    SpotifyNotFound,
    SpotifyPaused,
    error_message,
)
from shared.spotify.models import ACCESS_MODE_LIMITS, AccessMode, Album, Artist, Track
from shared.spotify.parse import Problems, is_spotify_id, parse_album, parse_artist, parse_track
from shared.spotify.stats import SpotifyStats
from shared.spotify.transport import (
    BACKOFF_BASE_SECONDS,
    BACKOFF_CAP_SECONDS,
    MAX_ATTEMPTS,
    MAX_RATE_LIMITED,
    OUTAGE_PAUSE_SECONDS,
    RATE_LIMIT_MARGIN_SECONDS,
    RetryPolicy,
    Transport,
)

log = logging.getLogger(__name__)

BATCH_SIZES = {"tracks": 50, "artists": 50, "albums": 20}
SEARCH_PAGE = {AccessMode.development: 10, AccessMode.extended: 50}
PLAYLIST_PAGE = 100
PROBE_QUERY = "a"
PROBE_TRACK_ID = "4uLU6hMCjMI75M1A2tKUQC"  # a long-lived catalog track, used if the probe search is empty

T = TypeVar("T")
R = TypeVar("R")


def _chunks(items: Sequence[T], size: int) -> list[list[T]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


class SpotifyClient:
    """Async Spotify Web API client; use as `async with SpotifyClient(settings) as spotify:`."""

    def __init__(
        self,
        settings: Settings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        access_mode: AccessMode | None = None,
        backoff_base: float = BACKOFF_BASE_SECONDS,
        backoff_cap: float = BACKOFF_CAP_SECONDS,
        max_attempts: int = MAX_ATTEMPTS,
        max_rate_limited: int = MAX_RATE_LIMITED,
        rate_limit_margin: float = RATE_LIMIT_MARGIN_SECONDS,
        token_renew_margin: float = TOKEN_RENEW_MARGIN_SECONDS,
        outage_pause: float = OUTAGE_PAUSE_SECONDS,
        budget: HourlyBudget | None = None,
    ) -> None:
        self._api = settings.effective_spotify_api_url
        self._market = settings.spotify_market
        self._concurrency = settings.spotify_concurrency
        limits = httpx.Limits(max_connections=self._concurrency, max_keepalive_connections=self._concurrency)
        http = httpx.AsyncClient(
            transport=transport or httpx.AsyncHTTPTransport(limits=limits),
            timeout=httpx.Timeout(settings.spotify_timeout_seconds),
            headers={"Accept": "application/json"},
        )
        policy = RetryPolicy(
            max_retry_after=settings.spotify_max_retry_after_seconds,
            backoff_base=backoff_base,
            backoff_cap=backoff_cap,
            max_attempts=max_attempts,
            max_rate_limited=max_rate_limited,
            rate_limit_margin=rate_limit_margin,
            outage_pause=outage_pause,
        )
        self.stats = SpotifyStats()
        self._transport = Transport(
            http=http,
            concurrency=self._concurrency,
            timeout=settings.spotify_timeout_seconds,
            policy=policy,
            stats=self.stats,
            budget=budget,
        )
        client_id, secret = client_credentials(settings)
        self._tokens = TokenCache(
            self._transport,
            accounts_url=settings.effective_spotify_accounts_url,
            client_id=client_id,
            secret=secret,
            renew_margin=token_renew_margin,
        )
        self._mode_lock = asyncio.Lock()
        self._access_mode = access_mode

    def __repr__(self) -> str:  # never shows the secret or the token
        client_id = self._tokens.client_id
        return f"SpotifyClient(api={self._api!r}, client_id={client_id!r}, mode={self._access_mode})"

    async def __aenter__(self) -> SpotifyClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._transport.aclose()

    @property
    def access_mode(self) -> AccessMode | None:
        """The access mode found by the probe (None before it ran)."""
        return self._access_mode

    @property
    def paused_until(self) -> dt.datetime | None:
        """When a stopped client accepts requests again (None when it is not stopped)."""
        stopped = self._transport.limiter.stopped
        return stopped.resume_at if stopped and stopped.resume_at > dt.datetime.now(dt.UTC) else None

    # ---- access mode -----------------------------------------------------------------------------
    async def probe_access_mode(self) -> AccessMode:
        """Ask for one track and decide the access mode from whether it carries `popularity`."""
        params = {"q": PROBE_QUERY, "type": "track", "limit": 1, "market": self._market}
        found = await self._get("/search", endpoint="GET /search", params=params)
        items = ((found or {}).get("tracks") or {}).get("items") or []
        track = items[0] if items and isinstance(items[0], dict) else None
        if track is None:
            track = await self._get(f"/tracks/{PROBE_TRACK_ID}", endpoint="GET /tracks/{id}")
        if not isinstance(track, dict):
            raise SpotifyError("Spotify returned no track to probe the access mode with")
        self._access_mode = AccessMode.extended if "popularity" in track else AccessMode.development
        log.info("%s", describe_access_mode(self._access_mode))
        return self._access_mode

    async def _mode(self) -> AccessMode:
        if self._access_mode is None:
            async with self._mode_lock:
                if self._access_mode is None:
                    await self.probe_access_mode()
        assert self._access_mode is not None
        return self._access_mode

    # ---- public catalog calls --------------------------------------------------------------------
    async def get_tracks(self, ids: Sequence[str]) -> dict[str, Track]:
        """Tracks by id; ids Spotify does not know are absent from the result."""
        return await self._get_many("tracks", ids, parse_track, market=True)

    async def get_albums(self, ids: Sequence[str]) -> dict[str, Album]:
        """Albums by id; ids Spotify does not know are absent from the result."""
        return await self._get_many("albums", ids, parse_album, market=True)

    async def get_artists(self, ids: Sequence[str]) -> dict[str, Artist]:
        """Artists by id; ids Spotify does not know are absent from the result."""
        return await self._get_many("artists", ids, parse_artist, market=False)

    async def get_track(self, track_id: str) -> Track | None:
        """One track, or None when Spotify does not know it (or the id is invalid)."""
        if not is_spotify_id(track_id):
            self.stats.skipped += 1
            return None
        found = await self._get_one("tracks", track_id, parse_track, market=True)
        return found.get(track_id)

    async def playlist_track_ids(self, playlist_id: str) -> list[str]:
        """Ids of a playlist's tracks in order, following `next`; local files and gaps are counted."""
        if not is_spotify_id(playlist_id):
            raise SpotifyNotFound(f"{playlist_id!r} is not a Spotify playlist id")
        mode = await self._mode()
        kind = "tracks" if mode is AccessMode.extended else "items"
        url: str | None = f"/playlists/{playlist_id}/{kind}"
        params: dict[str, Any] | None = {"limit": PLAYLIST_PAGE, "market": self._market}
        ids: list[str] = []
        while url:
            page = await self._get(url, endpoint=f"GET /playlists/{{id}}/{kind}", params=params)
            if page is None:
                raise SpotifyNotFound(
                    f"playlist {playlist_id} is not readable in {describe_mode_name(mode)} "
                    "(Spotify-owned playlists answer 404 there)"
                )
            ids.extend(self._playlist_ids(page.get("items")))
            url, params = self._next_url(page.get("next")), None
        return ids

    async def search_tracks(self, query: str, limit: int = 10) -> list[Track]:
        """Up to `limit` tracks matching `query`, in Spotify's order (pages of 10 in Development Mode)."""
        page_size = SEARCH_PAGE[await self._mode()]
        tracks: list[Track] = []
        offset = 0
        while len(tracks) < limit:
            params = {
                "q": query, "type": "track", "limit": min(page_size, limit - len(tracks)),
                "offset": offset, "market": self._market,
            }  # fmt: skip
            data = await self._get("/search", endpoint="GET /search", params=params)
            page = (data or {}).get("tracks") or {}
            items = page.get("items") or []
            tracks.extend(t for t in (parse_track(i, self.stats) for i in items) if t is not None)
            if not items or not page.get("next"):
                break
            offset += len(items)
        return tracks[:limit]

    # ---- fetching many -----------------------------------------------------------------------------
    async def _get_many(
        self, kind: str, ids: Sequence[str], parse: Callable[[Any, Problems], R | None], *, market: bool
    ) -> dict[str, R]:
        wanted = self._clean_ids(ids)
        if not wanted:
            return {}
        if await self._mode() is AccessMode.extended:
            chunks = _chunks(wanted, BATCH_SIZES[kind])
            try:
                return await self._run_all(
                    chunks, lambda chunk: self._get_batch(kind, chunk, parse, market=market)
                )
            except SpotifyForbidden:
                # Extended Quota withdrawn (or a wrong mode given to the constructor): probe again.
                log.warning("Spotify refused GET /%s?ids=: probing the access mode again", kind)
                if await self.probe_access_mode() is AccessMode.extended:
                    raise
        return await self._run_all(wanted, lambda one: self._get_one(kind, one, parse, market=market))

    def _clean_ids(self, ids: Iterable[str]) -> list[str]:
        """Distinct valid ids in order; invalid ones are counted and never sent."""
        seen: dict[str, None] = {}
        for spotify_id in ids:
            if is_spotify_id(spotify_id):
                seen.setdefault(spotify_id, None)
            else:
                self.stats.skipped += 1
        return list(seen)

    async def _run_all(
        self, units: Sequence[T], fetch: Callable[[T], Awaitable[dict[str, R]]]
    ) -> dict[str, R]:
        """Fetch every unit with at most `concurrency` workers; on a pause keep what arrived and re-raise."""
        results: dict[str, R] = {}
        pending = iter(units)
        paused: list[SpotifyPaused] = []

        async def worker() -> None:
            for unit in pending:
                if paused:
                    return
                try:
                    results.update(await fetch(unit))
                except SpotifyPaused as exc:
                    paused.append(exc)
                    return

        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(min(self._concurrency, len(units))):
                    group.create_task(worker())
        except BaseExceptionGroup as failed:  # callers catch SpotifyError, not a group of them
            raise failed.exceptions[0] from None
        if paused:
            raise (self._transport.limiter.stopped or paused[0]).with_partial(dict(results))
        return results

    async def _get_batch(
        self, kind: str, chunk: list[str], parse: Callable[[Any, Problems], R | None], *, market: bool
    ) -> dict[str, R]:
        params: dict[str, Any] = {"ids": ",".join(chunk)}
        if market:
            params["market"] = self._market
        data = await self._get(f"/{kind}", endpoint=f"GET /{kind}", params=params)
        items = (data or {}).get(kind)
        if not isinstance(items, list):
            self.stats.malformed += 1
            return {}
        out: dict[str, R] = {}
        for requested, item in zip(chunk, items, strict=False):
            if item is None:
                self.stats.not_found += 1
                continue
            parsed = parse(item, self.stats)
            if parsed is not None:
                out[requested] = parsed  # keyed by the id asked for, even if Spotify relinked it
        return out

    async def _get_one(
        self, kind: str, spotify_id: str, parse: Callable[[Any, Problems], R | None], *, market: bool
    ) -> dict[str, R]:
        params = {"market": self._market} if market else None
        data = await self._get(f"/{kind}/{spotify_id}", endpoint=f"GET /{kind}/{{id}}", params=params)
        if data is None:
            return {}
        parsed = parse(data, self.stats)
        return {} if parsed is None else {spotify_id: parsed}

    def _playlist_ids(self, items: object) -> list[str]:
        ids: list[str] = []
        for entry in items if isinstance(items, list) else []:
            if not isinstance(entry, dict):
                self.stats.malformed += 1
                continue
            track = entry.get("item") or entry.get("track")
            if not isinstance(track, dict):
                self.stats.skipped += 1  # unavailable or removed track
            elif entry.get("is_local") or track.get("is_local") or track.get("id") is None:
                self.stats.local_tracks += 1
            elif not is_spotify_id(track.get("id")):
                self.stats.malformed += 1
            else:
                ids.append(track["id"])
        return ids

    def _next_url(self, link: object) -> str | None:
        """The `next` page, only when it points at the same API (the token is never sent elsewhere)."""
        if not link:
            return None
        if not isinstance(link, str) or not link.startswith(self._api + "/"):
            raise SpotifyError(f"Spotify's `next` link {link!r} leaves {self._api}; refusing to follow it")
        return link

    # ---- one request ---------------------------------------------------------------------------------
    async def _get(self, path: str, *, endpoint: str, params: dict[str, Any] | None = None) -> Any:
        """GET JSON from the API; None for 404 (unknown) and 400 (invalid id)."""
        url = path if path.startswith(("http://", "https://")) else self._api + path
        response = await self._transport.get(url, endpoint=endpoint, params=params, tokens=self._tokens)
        if response.status_code == 200:
            try:
                return response.json()
            except ValueError:
                self.stats.malformed += 1
                return None
        if response.status_code in (400, 404):
            self.stats.not_found += 1
            return None
        error = SpotifyForbidden if response.status_code == 403 else SpotifyError
        raise error(f"Spotify refused {endpoint} with HTTP {response.status_code}: {error_message(response)}")


def describe_mode_name(mode: AccessMode) -> str:
    """'Development Mode' or 'Extended Quota Mode'."""
    return "Extended Quota Mode" if mode is AccessMode.extended else "Development Mode"


def describe_access_mode(mode: AccessMode) -> str:
    """One plain sentence: which mode, and what it lacks."""
    lacks = ACCESS_MODE_LIMITS.get(mode) or []
    if not lacks:
        return f"Spotify access: {describe_mode_name(mode)} (popularity, followers and batch endpoints)"
    return f"Spotify access: {describe_mode_name(mode)}. It lacks: " + "; ".join(lacks) + "."
