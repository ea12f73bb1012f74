"""Spotify Web API JSON objects built from the catalog, with the fields the access mode allows."""

from __future__ import annotations

import datetime as dt
import zlib
from typing import Any

from services.emulator.catalog import MARKETS, Catalog

OPEN_URL = "https://open.spotify.com"
LOCAL_TRACKS = [  # (artist, album, title, seconds): files a user added from their own disk
    ("Garage Band", "Demo Tape", "first take.mp3", 184),
    ("", "", "voice memo 12", 61),
    ("Mom & Dad", "Wedding", "Our Song <3", 203),
    ("DJ 🎧", "Mixes", "set_2019-05.mp3", 3541),
    ("Unknown", "Bootlegs", "live @ club", 245),
    ("Garage Band", "Demo Tape", "second take.mp3", 190),
]


class ObjectBuilder:
    """Builds API objects for one access mode at the simulated week."""

    def __init__(
        self,
        catalog: Catalog,
        *,
        extended: bool,
        week: dt.date,
        base_url: str,
    ) -> None:
        self.catalog, self.extended, self.week, self.base = catalog, extended, week, base_url.rstrip("/")
        self._track_pop = catalog.track_popularity(week) if extended else None
        self._album_pop = catalog.album_popularity(week) if extended else None
        self._artist_pop = catalog.artist_popularity(week) if extended else None

    def _links(self, kind: str, spotify_id: str) -> dict[str, Any]:
        return {
            "external_urls": {"spotify": f"{OPEN_URL}/{kind}/{spotify_id}"},
            "href": f"{self.base}/{kind}s/{spotify_id}",
            "id": spotify_id,
            "type": kind,
            "uri": f"spotify:{kind}:{spotify_id}",
        }

    def artist_ref(self, artist: int) -> dict[str, Any]:
        """A simplified artist object."""
        return {
            "name": self.catalog.artist_names[artist],
            **self._links("artist", self.catalog.artist_ids[artist]),
        }

    def artist(self, artist: int) -> dict[str, Any]:
        """A full artist object (followers and popularity only in Extended Quota Mode)."""
        out = {**self.artist_ref(artist), "genres": list(self.catalog.artist_genres[artist]), "images": []}
        if self.extended:
            assert self._artist_pop is not None
            out["followers"] = {"href": None, "total": self.catalog.artist_followers(artist, self.week)}
            out["popularity"] = int(self._artist_pop[artist])
        return out

    def album_ref(self, album: int) -> dict[str, Any]:
        """A simplified album object."""
        c = self.catalog
        release_date, precision = c.release_date(album)
        out = {
            "album_type": c.album_type[album],
            "total_tracks": int(c.album_sizes[album]),
            "images": [],
            "name": c.album_names[album],
            "release_date": release_date,
            "release_date_precision": precision,
            "artists": [self.artist_ref(int(c.album_artist[album]))],
            **self._links("album", c.album_ids[album]),
        }
        if self.extended:
            out["available_markets"] = MARKETS
        return out

    def album(self, album: int, track_page: dict[str, Any]) -> dict[str, Any]:
        """A full album object with its first page of tracks."""
        out = {**self.album_ref(album), "tracks": track_page, "copyrights": [], "genres": []}
        out["external_ids"] = {"upc": f"{zlib.crc32(self.catalog.album_ids[album].encode()):012d}"}
        if self.extended:
            assert self._album_pop is not None
            out["label"] = self.catalog.album_label[album]
            out["popularity"] = int(self._album_pop[album])
        return out

    def track_ref(self, track: int) -> dict[str, Any]:
        """A simplified track object (as inside an album's track list)."""
        c = self.catalog
        out: dict[str, Any] = {
            "artists": [self.artist_ref(a) for a in c.track_artists[track]],
            "disc_number": 1,
            "explicit": bool(c.track_explicit[track]),
            "is_local": False,
            "name": c.track_names[track],
            "preview_url": None,
            "track_number": int(c.track_number[track]),
            **self._links("track", c.track_ids[track]),
        }
        if c.track_has_duration[track]:
            out["duration_ms"] = int(c.track_duration[track])
        if self.extended:
            out["available_markets"] = MARKETS
        return out

    def track(self, track: int) -> dict[str, Any]:
        """A full track object (popularity only in Extended Quota Mode)."""
        c = self.catalog
        out = self.track_ref(track)
        out["album"] = self.album_ref(int(c.track_album[track]))
        out["external_ids"] = {"isrc": c.track_isrc[track]} if c.track_has_isrc[track] else {}
        if self.extended:
            assert self._track_pop is not None
            out["popularity"] = int(self._track_pop[track])
        return out

    def local_track(self, number: int) -> dict[str, Any]:
        """A track a user added from their own files: `id` null, `is_local` true."""
        artist, album, title, seconds = LOCAL_TRACKS[number % len(LOCAL_TRACKS)]
        return {
            "album": {"album_type": None, "artists": [], "id": None, "images": [], "name": album,
                      "release_date": None, "release_date_precision": None, "type": "album", "uri": None},
            "artists": [{"id": None, "name": artist, "type": "artist", "uri": None, "href": None}],
            "disc_number": 0, "duration_ms": seconds * 1000, "explicit": False, "external_ids": {},
            "external_urls": {}, "href": None, "id": None, "is_local": True, "name": title,
            "popularity": 0, "preview_url": None, "track_number": 0, "type": "track",
            "uri": f"spotify:local:{artist}:{album}:{title}:{seconds}",
        }  # fmt: skip
