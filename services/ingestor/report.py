"""What a run did: its counts by name (typed), its status, problems and resume time."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from shared.catalog import StoredRows

Progress = Callable[[str, int, int], None]  # (phase, done, total), e.g. for a progress bar
SPOTIFY_PREFIX = "spotify_"  # the client's counters appear in the summary as spotify_<counter>


@dataclass
class RunCounts:
    """How many of each thing a run read, wrote, skipped or asked Spotify for."""

    # chart files
    chart_files: int = 0
    chart_weeks: int = 0
    chart_entries: int = 0
    chart_files_failed: int = 0
    chart_rows_rejected: int = 0
    chart_files_skipped_known: int = 0
    # rows written
    tracks: int = 0
    albums: int = 0
    artists: int = 0
    snapshots: int = 0  # staged
    snapshots_published: int = 0
    # Spotify enrichment
    tracks_requested: int = 0
    tracks_unknown_to_spotify: int = 0
    tracks_skipped_unknown: int = 0
    # popularity-history import
    history_files: int = 0
    history_files_failed: int = 0
    history_rows: int = 0
    history_rows_rejected: int = 0
    history_songs: int = 0
    weeks: int = 0
    # what the Spotify client did during the run (its own counter names: requests, retries, ...)
    spotify: dict[str, int] = field(default_factory=dict)

    def add_stored(self, stored: StoredRows) -> None:
        """Count rows a catalog write stored."""
        self.tracks += stored.tracks
        self.albums += stored.albums
        self.artists += stored.artists
        self.snapshots += stored.snapshots

    def add_spotify(self, grown: dict[str, int]) -> None:
        """Count what the Spotify client's counters grew by."""
        for name, n in grown.items():
            self.spotify[name] = self.spotify.get(name, 0) + n

    def as_dict(self) -> dict[str, int]:
        """The non-zero counts by name, the client's as `spotify_<counter>` (the summary, logs and the
        `ingest_run.counts` column)."""
        own = asdict(self)
        spotify = {SPOTIFY_PREFIX + name: n for name, n in own.pop("spotify").items()}
        return {name: n for name, n in {**own, **spotify}.items() if n}


@dataclass
class RunReport:
    """What a run did, for the CLI summary, logs and the `db-updated` event."""

    run_id: int
    kind: str
    week: dt.date
    status: str = "running"
    access_mode: str | None = None
    counts: RunCounts = field(default_factory=RunCounts)
    errors: list[str] = field(default_factory=list)
    resume_after: dt.datetime | None = None
