"""What the catalog shows at the simulated week: released tracks and albums, an artist's albums and top
tracks, new releases, and the two playlists (Spotify's trending one is readable in Extended Quota only)."""

from __future__ import annotations

import numpy as np

from services.emulator.catalog import week_index
from services.emulator.objects import LOCAL_TRACKS
from services.emulator.state import EmulatorState

TRENDING_PLAYLIST_ID = "0SongpopTrendingTop50x"  # Spotify-owned: 404 in Development Mode
DEMO_PLAYLIST_ID = "1SongpopUsersOwnMixtap"  # owned by the app's user: readable in both modes
DEMO_PLAYLIST_SIZE = 240
NEW_RELEASE_WEEKS = 2
TOP_TRACKS = 10

PlaylistEntry = (
    int | str | None
)  # a track number, "local:<n>" for a local file, None for an unavailable track


def released_track(state: EmulatorState, track_id: str) -> int | None:
    """The track's number, if it exists and is released by the simulated week."""
    number = state.catalog.track_index.get(track_id)
    if number is None or not state.catalog.released(number, state.week):
        return None
    return number


def released_album(state: EmulatorState, album_id: str) -> int | None:
    """The album's number, if it exists and is released by the simulated week."""
    number = state.catalog.album_index.get(album_id)
    if number is None or state.catalog.album_release_week[number] > week_index(state.week):
        return None
    return number


def released_artist_albums(state: EmulatorState, artist: int) -> list[int]:
    """The artist's albums released by the simulated week."""
    now = week_index(state.week)
    return [a for a in state.catalog.artist_albums(artist) if state.catalog.album_release_week[a] <= now]


def top_tracks(state: EmulatorState, artist: int) -> list[int]:
    """The artist's most popular released tracks this week, most popular first."""
    catalog = state.catalog
    pop = catalog.track_popularity(state.week)
    mine = [t for a in catalog.artist_albums(artist) for t in catalog.album_tracks(a) if pop[t] > 0]
    return sorted(mine, key=lambda t: -pop[t])[:TOP_TRACKS]


def new_releases(state: EmulatorState) -> list[int]:
    """Albums released within the last `NEW_RELEASE_WEEKS` weeks, newest first."""
    now = week_index(state.week)
    weeks = state.catalog.album_release_week
    recent = [int(a) for a in np.flatnonzero((weeks <= now) & (weeks > now - NEW_RELEASE_WEEKS))]
    recent.sort(key=lambda a: (-int(weeks[a]), a))
    return recent


def playlist_entries(state: EmulatorState, playlist_id: str) -> list[PlaylistEntry] | None:
    """A playlist's entries in order, or None when it does not exist (or is not readable in this mode)."""
    if playlist_id == TRENDING_PLAYLIST_ID and state.extended:
        return [state.catalog.track_index[t] for t in state.catalog.trending_track_ids(state.week)]
    if playlist_id != DEMO_PLAYLIST_ID:
        return None
    catalog = state.catalog
    order = np.random.default_rng([catalog.seed, 99]).permutation(catalog.n_tracks)
    released = order[catalog.release_week[order] <= week_index(state.week)][:DEMO_PLAYLIST_SIZE]
    entries: list[PlaylistEntry] = [int(t) for t in released]
    for n in range(len(LOCAL_TRACKS)):
        entries.insert(min(len(entries), 17 + 37 * n), f"local:{n}")
    entries.insert(min(len(entries), 150), None)
    return entries
