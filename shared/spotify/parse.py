"""Turn Spotify JSON into the typed objects of `shared.spotify.models`, tolerating awkward records.

Every function returns None (and says why through `Problems`) instead of raising on a record it cannot use,
so one odd record never stops a run.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from shared.spotify.models import Album, Artist, ArtistRef, Track

SPOTIFY_ID = re.compile(r"^[0-9A-Za-z]{22}$")


@dataclass
class Problems:
    """Counts of awkward records met while parsing."""

    malformed: int = 0  # records or fields that could not be used
    imprecise_dates: int = 0  # release dates given to the year or month only


def is_spotify_id(value: object) -> bool:
    """Whether `value` looks like a Spotify base-62 id."""
    return isinstance(value, str) and bool(SPOTIFY_ID.match(value))


def parse_release_date(
    text: object, precision: object, problems: Problems
) -> tuple[dt.date | None, str | None]:
    """A release date as the first day of its period, and its precision (year / month / day)."""
    if not isinstance(text, str) or not text:
        return None, None
    parts = text.split("-")
    guessed = {1: "year", 2: "month", 3: "day"}.get(len(parts))
    precision = precision if precision in ("year", "month", "day") else guessed
    try:
        numbers = [int(p) for p in parts] + [1] * (3 - len(parts))
        day = dt.date(numbers[0], numbers[1], numbers[2])
    except (ValueError, IndexError):
        problems.malformed += 1  # e.g. Spotify's "0000" for very old releases
        return None, precision
    if precision != "day":
        problems.imprecise_dates += 1
    return day, precision


def _artist_refs(items: object) -> list[ArtistRef]:
    if not isinstance(items, list):
        return []
    return [
        ArtistRef(id=a.get("id") if is_spotify_id(a.get("id")) else None, name=str(a.get("name") or ""))
        for a in items
        if isinstance(a, dict)
    ]


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def parse_album(data: Any, problems: Problems) -> Album | None:
    """An album (full or simplified object), or None when it has no usable id."""
    if not isinstance(data, dict) or not is_spotify_id(data.get("id")):
        problems.malformed += 1
        return None
    release_date, precision = parse_release_date(
        data.get("release_date"), data.get("release_date_precision"), problems
    )
    try:
        return Album(
            id=data["id"],
            name=str(data.get("name") or ""),
            album_type=data.get("album_type") if isinstance(data.get("album_type"), str) else None,
            total_tracks=_int_or_none(data.get("total_tracks")),
            release_date=release_date,
            release_date_precision=precision,
            label=data.get("label") if isinstance(data.get("label"), str) else None,
            popularity=_int_or_none(data.get("popularity")),
            artists=_artist_refs(data.get("artists")),
        )
    except ValidationError:
        problems.malformed += 1
        return None


def parse_artist(data: Any, problems: Problems) -> Artist | None:
    """An artist, or None when it has no usable id."""
    if not isinstance(data, dict) or not is_spotify_id(data.get("id")):
        problems.malformed += 1
        return None
    followers = data.get("followers")
    genres = data.get("genres")
    try:
        return Artist(
            id=data["id"],
            name=str(data.get("name") or ""),
            followers=_int_or_none(followers.get("total")) if isinstance(followers, dict) else None,
            popularity=_int_or_none(data.get("popularity")),
            genres=[g for g in genres if isinstance(g, str)] if isinstance(genres, list) else [],
        )
    except ValidationError:
        problems.malformed += 1
        return None


def parse_track(data: Any, problems: Problems) -> Track | None:
    """A track, or None when it has no usable id (callers count local tracks before calling)."""
    if not isinstance(data, dict) or not is_spotify_id(data.get("id")):
        problems.malformed += 1
        return None
    external_ids = data.get("external_ids")
    isrc = external_ids.get("isrc") if isinstance(external_ids, dict) else None
    album = parse_album(data["album"], problems) if data.get("album") is not None else None
    try:
        return Track(
            id=data["id"],
            name=str(data.get("name") or ""),
            duration_ms=_int_or_none(data.get("duration_ms")),
            explicit=data.get("explicit") if isinstance(data.get("explicit"), bool) else None,
            isrc=isrc if isinstance(isrc, str) and isrc else None,
            popularity=_int_or_none(data.get("popularity")),
            album=album,
            artists=_artist_refs(data.get("artists")),
        )
    except ValidationError:
        problems.malformed += 1
        return None
