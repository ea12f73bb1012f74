"""What can go wrong talking to Spotify: the exceptions callers catch, and how Spotify's error bodies read."""

from __future__ import annotations

import datetime as dt

import httpx


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


class TransientFailure(Exception):
    """A failure worth retrying: 5xx, timeout, dropped connection (never leaves the client)."""


def error_reason(response: httpx.Response) -> str | None:
    """The `reason` of an error body, at the top level or inside `error` (e.g. QUOTA_EXCEEDED)."""
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    reason = body.get("reason") or (error.get("reason") if isinstance(error, dict) else None)
    return reason if isinstance(reason, str) else None


def error_message(response: httpx.Response) -> str:
    """The human message of an error body: the API's `error.message` or the accounts service's
    `error_description`, else the HTTP reason phrase."""
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
