"""Typed Spotify objects as the rest of songpop sees them, whatever the access mode.

Fields a mode lacks (popularity and followers in Development Mode, label, ...) are optional and None.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum

from pydantic import BaseModel, Field


class AccessMode(StrEnum):
    development = "development"
    extended = "extended"


ACCESS_MODE_LIMITS: dict[AccessMode, list[str]] = {
    AccessMode.development: [
        "no popularity index on tracks, albums or artists: forecasts use chart streams only",
        "no artist followers, album labels or available markets",
        "no batch endpoints: one request per track, album and artist (slower weekly runs)",
        "no trending playlist: the trending list comes from chart CSV files",
        "search pages of at most 10 results",
    ],
    AccessMode.extended: [],
}


class ArtistRef(BaseModel):
    id: str | None = None
    name: str = ""


class Artist(BaseModel):
    id: str
    name: str = ""
    followers: int | None = None
    popularity: int | None = None
    genres: list[str] = Field(default_factory=list)


class Album(BaseModel):
    id: str
    name: str = ""
    album_type: str | None = None
    total_tracks: int | None = None
    release_date: dt.date | None = None  # the first day of the precision's period
    release_date_precision: str | None = None  # year / month / day
    label: str | None = None
    popularity: int | None = None
    artists: list[ArtistRef] = Field(default_factory=list)


class Track(BaseModel):
    id: str
    name: str = ""
    duration_ms: int | None = None
    explicit: bool | None = None
    isrc: str | None = None
    popularity: int | None = None
    album: Album | None = None
    artists: list[ArtistRef] = Field(default_factory=list)
