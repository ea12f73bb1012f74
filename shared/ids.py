"""Spotify track ids: validation and normalisation of what users paste (ids, URIs, open.spotify.com URLs)."""

from __future__ import annotations

import re

SPOTIFY_ID_LENGTH = 22  # base-62 characters; songs imported by name get longer synthetic ids
TRACK_ID = re.compile(r"^[0-9A-Za-z]{22}$")
_URI = re.compile(r"^spotify:track:([0-9A-Za-z]{22})$")
_URL = re.compile(
    r"^https?://open\.spotify\.com/(?:intl-[a-z]{2}(?:-[A-Za-z]{2})?/)?track/([0-9A-Za-z]{22})(?:[?#].*)?$"
)


# What normalise_track_id accepts, as a JSON Schema (ECMA-262) pattern for the API documents.
TRACK_REFERENCE_PATTERN = (
    r"^\s*(?:[0-9A-Za-z]{22}|spotify:track:[0-9A-Za-z]{22}"
    r"|https?://open\.spotify\.com/(?:intl-[a-z]{2}(?:-[A-Za-z]{2})?/)?track/[0-9A-Za-z]{22}(?:[?#].*)?)\s*$"
)


class InvalidTrackId(ValueError):
    """Not a Spotify track id, URI or URL."""


def normalise_track_id(raw: str) -> str:
    """The 22-character id inside `raw` (an id, `spotify:track:<id>` or an open.spotify.com track URL)."""
    text = raw.strip()
    if TRACK_ID.match(text):
        return text
    for pattern in (_URI, _URL):
        match = pattern.match(text)
        if match:
            return match.group(1)
    shown = text[:60] + ("…" if len(text) > 60 else "")
    raise InvalidTrackId(
        f"{shown!r} is not a Spotify track id: expected 22 letters and digits, "
        "a spotify:track:<id> URI or an https://open.spotify.com/track/<id> URL"
    )
