"""An async Spotify Web API client that works in both 2026 access modes.

- Client-credentials token, cached and renewed shortly before it expires, renewed once after a 401.
- One probe request tells Development Mode from Extended Quota Mode (is `popularity` in a track?).
- Extended Quota: batch endpoints (tracks and artists by 50, albums by 20). Development Mode: one request per
  item, run concurrently. Callers ask for objects by id and get typed objects either way.
- One limiter shared by every request: bounded concurrency; a 429 pauses the whole client for
  `Retry-After` (plus a margin); 5xx and timeouts are retried with exponential backoff and jitter, bounded.
- A `Retry-After` above the cap, a `QUOTA_EXCEEDED` body or a lasting outage stops the run cleanly:
  `SpotifyPaused` carries what was fetched (`partial`) and when to resume (`resume_at`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import logging
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_exponential_jitter

from shared.config import Settings
from shared.spotify.budget import HourlyBudget
from shared.spotify.models import ACCESS_MODE_LIMITS, AccessMode, Album, Artist, Track
from shared.spotify.parse import Problems, is_spotify_id, parse_album, parse_artist, parse_track

log = logging.getLogger(__name__)

EMULATOR_CLIENT_ID = "songpop-emulator"  # the emulator's fixed demo credentials (not secrets)
EMULATOR_CLIENT_SECRET = "emulator"  # noqa: S105

BACKOFF_BASE_SECONDS = 0.5  # first wait after a 5xx or timeout, doubled each time
BACKOFF_CAP_SECONDS = 8.0
MAX_ATTEMPTS = 5  # per request, for 5xx and timeouts
MAX_RATE_LIMITED = 8  # 429s one request may meet before the run pauses instead of retrying again
RATE_LIMIT_MARGIN_SECONDS = 0.5  # waited beyond Retry-After
TOKEN_RENEW_MARGIN_SECONDS = 60.0  # renew this long before expiry (at most half the token's lifetime)
OUTAGE_PAUSE_SECONDS = 900.0  # resume delay after persistent 5xx/timeouts
QUOTA_PAUSE_SECONDS = 3600.0  # resume delay for QUOTA_EXCEEDED without a Retry-After
STOP_EXTENSION_SLACK = dt.timedelta(seconds=5)  # a later 429 extends a stop only beyond this

BATCH_SIZES = {"tracks": 50, "artists": 50, "albums": 20}
SEARCH_PAGE = {AccessMode.development: 10, AccessMode.extended: 50}
PLAYLIST_PAGE = 100
PROBE_QUERY = "a"
PROBE_TRACK_ID = "4uLU6hMCjMI75M1A2tKUQC"  # a long-lived catalog track, used if the probe search is empty

T = TypeVar("T")
R = TypeVar("R")


class SpotifyError(Exception):
    """Spotify cannot be used (bad credentials, forbidden endpoint, ...); the message says why."""


class SpotifyNotFound(SpotifyError):
    """A resource the caller needs (e.g. a playlist) does not exist or is not readable in this mode."""


class SpotifyForbidden(SpotifyError):
    """Spotify answered 403: the endpoint is not open to this app (e.g. batch gets in Development Mode)."""


class SpotifyPaused(Exception):
    """The run must stop now and may resume at `resume_at`; `partial` holds what this call fetched."""

    def __init__(self, resume_at: dt.datetime, reason: str, partial: dict[str, object] | None = None) -> None:
        self.resume_at, self.reason, self.partial = resume_at, reason, dict(partial or {})
        super().__init__(f"Spotify access paused until {resume_at:%Y-%m-%d %H:%M:%S} UTC: {reason}")

    def with_partial(self, partial: dict[str, object]) -> SpotifyPaused:
        """The same pause, carrying `partial`."""
        return SpotifyPaused(self.resume_at, self.reason, partial)


class _Transient(Exception):
    """A failure worth retrying: 5xx, timeout, dropped connection."""


@dataclass
class SpotifyStats(Problems):
    """What a client did: requests per endpoint, retries, waits and awkward records met."""

    requests: int = 0
    by_endpoint: Counter[str] = field(default_factory=Counter)
    token_requests: int = 0
    token_renewals_after_401: int = 0
    retries: int = 0
    rate_limited: int = 0
    server_errors: int = 0
    timeouts: int = 0
    not_found: int = 0
    local_tracks: int = 0
    skipped: int = 0  # invalid ids not sent, unavailable playlist entries
    budget_refused: int = 0  # requests not sent: the client's hourly cap was reached
    rate_limit_wait_seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        """The stats as plain JSON-able values."""
        out = asdict(self)
        out["by_endpoint"] = dict(self.by_endpoint)
        return out

    def counts(self) -> dict[str, int]:
        """The whole-number counters (requests, retries, 429s, odd records...), by name."""
        return {k: v for k, v in asdict(self).items() if isinstance(v, int) and not isinstance(v, bool)}

    def counts_since(self, before: dict[str, int], prefix: str = "spotify_") -> dict[str, int]:
        """What the counters grew by since `before` (a long-lived client serves many runs), non-zero only."""
        now = self.counts()
        return {prefix + k: v - before.get(k, 0) for k, v in now.items() if v - before.get(k, 0)}


class RateLimiter:
    """One gate for every request of a client: bounded concurrency, a shared pause after a 429, and a
    stop once the run has to pause (later requests fail fast instead of queueing behind hours of waiting)."""

    def __init__(self, concurrency: int) -> None:
        self._slots = asyncio.Semaphore(concurrency)
        self._resume_at = 0.0  # time.monotonic()
        self.stopped: SpotifyPaused | None = None

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the concurrent slots once any shared pause has passed."""
        async with self._slots:
            await self.wait_ready()
            yield

    async def wait_ready(self) -> None:
        """Wait out a shared pause; raise SpotifyPaused while the run is stopped."""
        while True:
            self._raise_if_stopped()
            delay = self._resume_at - time.monotonic()
            if delay <= 0:
                return
            await asyncio.sleep(delay)

    def _raise_if_stopped(self) -> None:
        if self.stopped is None:
            return
        if dt.datetime.now(dt.UTC) >= self.stopped.resume_at:
            self.stopped = None
            return
        raise self.stopped.with_partial({})

    def pause_for(self, seconds: float) -> bool:
        """Hold every request of the client for `seconds` from now (a longer pause already set wins).

        Returns whether this started a new pause rather than falling inside the current one."""
        now = time.monotonic()
        started = now >= self._resume_at
        self._resume_at = max(self._resume_at, now + seconds)
        return started

    def stop(self, paused: SpotifyPaused) -> None:
        """Refuse every request until `paused.resume_at`."""
        if self.stopped is None or paused.resume_at > self.stopped.resume_at:
            self.stopped = paused


def _chunks(items: Sequence[T], size: int) -> list[list[T]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def _retry_after_seconds(response: httpx.Response) -> float | None:
    """Retry-After in seconds: Spotify sends a number; an HTTP date is understood too."""
    raw = response.headers.get("Retry-After")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        value = max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())
    return value if math.isfinite(value) and value >= 0 else None


def _error_reason(response: httpx.Response) -> str | None:
    """The `reason` of an error body, at the top level or inside `error`."""
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    reason = body.get("reason") or (error.get("reason") if isinstance(error, dict) else None)
    return reason if isinstance(reason, str) else None


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.reason_phrase
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or response.reason_phrase)
    if isinstance(error, str):
        return str(body.get("error_description") or error)
    return response.reason_phrase


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
        self._accounts = settings.effective_spotify_accounts_url
        if settings.uses_emulator:
            self._client_id, self._secret = EMULATOR_CLIENT_ID, EMULATOR_CLIENT_SECRET
        else:
            assert settings.spotify_client_id and settings.spotify_client_secret
            self._client_id = settings.spotify_client_id
            self._secret = settings.spotify_client_secret.get_secret_value()
        self._market = settings.spotify_market
        self._concurrency = settings.spotify_concurrency
        self._max_retry_after = settings.spotify_max_retry_after_seconds
        self._timeout = settings.spotify_timeout_seconds
        self._backoff_base, self._backoff_cap = backoff_base, backoff_cap
        self._max_attempts, self._max_rate_limited = max_attempts, max_rate_limited
        self._rate_limit_margin, self._token_renew_margin = rate_limit_margin, token_renew_margin
        self._outage_pause = outage_pause
        self._budget = budget  # a cap on this client's requests per hour (the predictor's on-demand share)
        limits = httpx.Limits(max_connections=self._concurrency, max_keepalive_connections=self._concurrency)
        self._http = httpx.AsyncClient(
            transport=transport or httpx.AsyncHTTPTransport(limits=limits),
            timeout=httpx.Timeout(self._timeout),
            headers={"Accept": "application/json"},
        )
        self._limiter = RateLimiter(self._concurrency)
        self._token: str | None = None
        self._token_renew_at = 0.0
        self._token_lock = asyncio.Lock()
        self._mode_lock = asyncio.Lock()
        self._access_mode = access_mode
        self.stats = SpotifyStats()

    def __repr__(self) -> str:  # never shows the secret or the token
        return f"SpotifyClient(api={self._api!r}, client_id={self._client_id!r}, mode={self._access_mode})"

    async def __aenter__(self) -> SpotifyClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._http.aclose()

    @property
    def access_mode(self) -> AccessMode | None:
        """The access mode found by the probe (None before it ran)."""
        return self._access_mode

    @property
    def paused_until(self) -> dt.datetime | None:
        """When a stopped client accepts requests again (None when it is not stopped)."""
        stopped = self._limiter.stopped
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
            raise (self._limiter.stopped or paused[0]).with_partial(dict(results))
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

    # ---- one request, with the limiter and retries ----------------------------------------------
    async def _get(self, path: str, *, endpoint: str, params: dict[str, Any] | None = None) -> Any:
        """GET JSON from the API; None for 404 (unknown) and 400 (invalid id)."""
        url = path if path.startswith(("http://", "https://")) else self._api + path
        response = await self._with_retries(endpoint, lambda: self._authorised_get(endpoint, url, params))
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
        message = _error_message(response)
        raise error(f"Spotify refused {endpoint} with HTTP {response.status_code}: {message}")

    async def _with_retries(
        self, endpoint: str, attempt_once: Callable[[], Awaitable[httpx.Response]]
    ) -> httpx.Response:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._max_attempts),
            wait=wait_exponential_jitter(
                initial=self._backoff_base, max=self._backoff_cap, jitter=self._backoff_base
            ),
            retry=retry_if_exception_type(_Transient),
            before_sleep=self._note_retry,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await attempt_once()
        except _Transient as exc:
            raise self._stop(
                self._outage_pause,
                f"Spotify kept failing on {endpoint} ({exc}) after {self._max_attempts} tries",
            ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _note_retry(self, state: RetryCallState) -> None:
        self.stats.retries += 1
        exc = state.outcome.exception() if state.outcome else None
        log.info("Spotify request failed (%s); retry %d", exc, state.attempt_number)

    async def _authorised_get(self, endpoint: str, url: str, params: dict[str, Any] | None) -> httpx.Response:
        """One logical request: waits for the limiter, handles 429 (shared pause) and one 401 renewal."""
        renewed, rate_limited = False, 0
        while True:
            token = await self._access_token()
            async with self._limiter.slot():
                self._spend_budget(endpoint)
                response = await self._send(endpoint, "GET", url, params=params, headers=self._bearer(token))
            if response.status_code == 429:
                rate_limited += 1
                self._on_rate_limited(response, endpoint, rate_limited)
                self.stats.retries += 1
                continue
            if response.status_code == 401 and not renewed:
                renewed = True
                self.stats.retries += 1
                await self._renew_token_after_401(token)
                continue
            if response.status_code == 401:
                raise SpotifyError(
                    f"Spotify rejected a fresh access token on {endpoint}: {_error_message(response)}"
                )
            if response.status_code >= 500:
                self.stats.server_errors += 1
                raise _Transient(f"HTTP {response.status_code}")
            return response

    def _spend_budget(self, endpoint: str) -> None:
        """Count the request against the hourly cap; past it, pause this call (not the whole client)."""
        if self._budget is not None and not self._budget.try_spend():
            self.stats.budget_refused += 1
            raise SpotifyPaused(
                self._budget.resumes_at(),
                f"the cap of {self._budget.per_hour} Spotify requests per hour is reached ({endpoint})",
            )

    @staticmethod
    def _bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    async def _send(self, endpoint: str, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send one HTTP request, counting it; timeouts and broken connections become `_Transient`."""
        self.stats.requests += 1
        self.stats.by_endpoint[endpoint] += 1
        try:
            async with asyncio.timeout(self._timeout):  # also bounds transports that ignore httpx timeouts
                return await self._http.request(method, url, **kwargs)
        except (httpx.TimeoutException, TimeoutError):
            self.stats.timeouts += 1
            raise _Transient("timeout") from None
        except httpx.TransportError as exc:
            raise _Transient(type(exc).__name__) from None

    def _on_rate_limited(self, response: httpx.Response, endpoint: str, times: int) -> None:
        """Pause the whole client for a short Retry-After; stop the run for a long one or a spent quota."""
        self.stats.rate_limited += 1
        retry_after = _retry_after_seconds(response)
        if _error_reason(response) == "QUOTA_EXCEEDED":
            raise self._stop(
                retry_after if retry_after is not None else QUOTA_PAUSE_SECONDS,
                "the developer account's Spotify quota is used up (QUOTA_EXCEEDED)",
            )
        wait = retry_after if retry_after is not None else 1.0
        if wait > self._max_retry_after:
            raise self._stop(
                wait, f"Spotify asked to wait {wait:.0f} s, more than the {self._max_retry_after:.0f} s cap"
            )
        if times > self._max_rate_limited:
            raise self._stop(
                max(wait, self._max_retry_after), f"Spotify rate-limited {endpoint} {times} times in a row"
            )
        if self._limiter.pause_for(wait + self._rate_limit_margin):
            self.stats.rate_limit_wait_seconds += wait
            log.warning("Spotify rate limit on %s: every request waits %.3g s", endpoint, wait)

    def _stop(self, seconds: float, reason: str) -> SpotifyPaused:
        """Stop every request of the client until `seconds` from now; log it once."""
        resume_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)
        current = self._limiter.stopped
        # Requests in flight when the first long 429 came back meet the same penalty: keep one pause.
        if current is not None and resume_at <= current.resume_at + STOP_EXTENSION_SLACK:
            return current
        paused = SpotifyPaused(resume_at, reason)
        self._limiter.stop(paused)
        log.warning("Stopping Spotify requests until %s UTC: %s", f"{resume_at:%Y-%m-%d %H:%M:%S}", reason)
        return paused

    # ---- token ----------------------------------------------------------------------------------------
    async def _access_token(self) -> str:
        if self._token is not None and time.monotonic() < self._token_renew_at:
            return self._token
        async with self._token_lock:
            if self._token is None or time.monotonic() >= self._token_renew_at:
                await self._with_retries("POST /api/token", self._fetch_token)
        assert self._token is not None
        return self._token

    async def _renew_token_after_401(self, rejected: str) -> None:
        async with self._token_lock:
            if self._token == rejected:  # not already renewed by a concurrent request
                self.stats.token_renewals_after_401 += 1
                await self._with_retries("POST /api/token", self._fetch_token)

    async def _fetch_token(self) -> httpx.Response:
        """Ask the accounts service for a client-credentials token and cache it."""
        await self._limiter.wait_ready()
        self.stats.token_requests += 1
        response = await self._send(
            "POST /api/token",
            "POST",
            f"{self._accounts}/api/token",
            data={"grant_type": "client_credentials"},
            auth=httpx.BasicAuth(self._client_id, self._secret),
        )
        if response.status_code == 429:
            self._on_rate_limited(response, "POST /api/token", 1)
            raise _Transient("token endpoint rate limited")
        if response.status_code >= 500:
            raise _Transient(f"HTTP {response.status_code} from the token endpoint")
        if response.status_code != 200:
            raise SpotifyError(
                f"Spotify refused the client credentials of client id {self._client_id!r} "
                f"(HTTP {response.status_code}: {_error_message(response)}); check SONGPOP_SPOTIFY_CLIENT_ID "
                "and SONGPOP_SPOTIFY_CLIENT_SECRET"
            )
        try:
            body = response.json()
            token, lifetime = str(body["access_token"]), float(body.get("expires_in", 3600))
        except (ValueError, KeyError, TypeError):
            raise SpotifyError("the token endpoint answered without an access_token") from None
        self._token = token
        self._token_renew_at = time.monotonic() + lifetime - min(self._token_renew_margin, lifetime / 2)
        return response


def describe_mode_name(mode: AccessMode) -> str:
    """'Development Mode' or 'Extended Quota Mode'."""
    return "Extended Quota Mode" if mode is AccessMode.extended else "Development Mode"


def describe_access_mode(mode: AccessMode) -> str:
    """One plain sentence: which mode, and what it lacks."""
    lacks = ACCESS_MODE_LIMITS.get(mode) or []
    if not lacks:
        return f"Spotify access: {describe_mode_name(mode)} (popularity, followers and batch endpoints)"
    return f"Spotify access: {describe_mode_name(mode)}. It lacks: " + "; ".join(lacks) + "."
