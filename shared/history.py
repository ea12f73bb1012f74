"""Reader for popularity-history CSV files: `(date, track id or song + artist, popularity, ...)`.

Files such as `spotify-streaming-top-50-<country>.csv` carry
`date,position,song,artist,popularity,duration_ms,album_type,total_tracks,release_date,is_explicit,...`
and no track id: a song is identified by a synthetic id derived from its normalised name and artists.
A popularity of 0 on a song's first days (a new release not yet indexed) is unknown, not zero.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from shared.charts import TRACK_ID_RE, ChartProblem

SYNTHETIC_PREFIX = "h_"  # never a Spotify id: those are 22 alphanumeric characters
TRACK_ID_COLUMNS = ("track_id", "track id", "trackid", "id", "spotify_id", "uri", "track_uri")
SONG_COLUMNS = ("song", "track_name", "track name", "name", "title")
ARTIST_COLUMNS = ("artist", "artists", "artist_names", "artist_name")
ARTIST_SEPARATORS = re.compile(r"\s*(?:&|,|;| feat\. | ft\. | x )\s*", re.IGNORECASE)


class HistoryFormatError(ValueError):
    """A history file that cannot be read at all; the message names the file, the line and the reason."""

    def __init__(self, file: str | Path, line: int, reason: str) -> None:
        self.file, self.line, self.reason = str(file), line, reason
        super().__init__(f"{file}:{line}: {reason}")


@dataclass(frozen=True)
class HistoryRow:
    """One song's popularity on one day, as read from a history file."""

    date: dt.date
    song_key: str  # the track id, or a synthetic id (<= 64 characters) from song + artists
    track_id: str | None  # the real Spotify id when the file has one
    song: str
    artists: list[str]
    popularity: int | None  # None: unknown (a new release's leading zeros)
    position: int | None = None
    release_date: dt.date | None = None
    duration_ms: int | None = None
    explicit: bool | None = None
    album_type: str | None = None
    total_tracks: int | None = None
    playlist: str = ""  # the file's stem: which playlist or source the row came from


@dataclass
class HistoryFile:
    path: Path
    sha256: str
    rows: list[HistoryRow] = field(default_factory=list)
    problems: list[ChartProblem] = field(default_factory=list)


def normalise(text: str) -> str:
    """Lower-case, accents removed, punctuation and repeated spaces collapsed."""
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(re.sub(r"[^\w]+", " ", stripped.casefold()).split())


def split_artists(text: str) -> list[str]:
    """Artists of a history row (`A & B`, `A, B`)."""
    return [name for name in ARTIST_SEPARATORS.split(text.strip()) if name]


def song_key(song: str, artists: Sequence[str]) -> str:
    """A stable synthetic id for a song known only by name and artists (order-insensitive)."""
    artist_part = "|".join(sorted(normalise(a) for a in artists))
    digest = hashlib.sha256(f"{normalise(song)}\x1f{artist_part}".encode()).hexdigest()
    return SYNTHETIC_PREFIX + digest[:32]


def _column(names: list[str], choices: Sequence[str]) -> int | None:
    for choice in choices:
        if choice in names:
            return names.index(choice)
    return None


def _optional_int(text: str) -> int | None:
    text = text.strip()
    if not text:
        return None
    try:
        return int(float(text))
    except ValueError:
        raise ValueError(f"not a number: {text!r}") from None


def _optional_date(text: str) -> dt.date | None:
    text = text.strip()
    if not text:
        return None
    if len(text) == 4:  # year precision
        return dt.date(int(text), 1, 1)
    if len(text) == 7:  # month precision
        return dt.date.fromisoformat(text + "-01")
    return dt.date.fromisoformat(text[:10])


def _optional_bool(text: str) -> bool | None:
    text = text.strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    return None


def _track_id(text: str) -> str | None:
    text = text.strip()
    if not text:
        return None
    candidate = text.rsplit(":", 1)[-1].rsplit("/", 1)[-1].split("?")[0]
    if not TRACK_ID_RE.match(candidate):
        raise ValueError(f"not a Spotify track id: {text!r}")
    return candidate


class _Columns:
    """Where each known column is in a history file's header."""

    def __init__(self, path: Path, header: list[str]) -> None:
        names = [name.strip().lower() for name in header]
        self.date = _column(names, ("date", "day", "snapshot_date"))
        self.popularity = _column(names, ("popularity",))
        self.track_id = _column(names, TRACK_ID_COLUMNS)
        self.song = _column(names, SONG_COLUMNS)
        self.artist = _column(names, ARTIST_COLUMNS)
        if self.date is None or self.popularity is None:
            raise HistoryFormatError(path, 1, "header needs a date and a popularity column")
        if self.track_id is None and (self.song is None or self.artist is None):
            raise HistoryFormatError(path, 1, "header needs a track id column, or song and artist columns")
        self.position = _column(names, ("position", "rank"))
        self.release_date = _column(names, ("release_date",))
        self.duration_ms = _column(names, ("duration_ms",))
        self.explicit = _column(names, ("is_explicit", "explicit"))
        self.album_type = _column(names, ("album_type",))
        self.total_tracks = _column(names, ("total_tracks",))
        self.width = len(names)


def _get(fields: list[str], index: int | None) -> str:
    return fields[index] if index is not None and index < len(fields) else ""


def _row(fields: list[str], cols: _Columns, playlist: str) -> HistoryRow:
    if len(fields) < cols.width:
        raise ValueError(f"truncated row: {len(fields)} of {cols.width} fields")
    track_id = _track_id(_get(fields, cols.track_id))
    song = _get(fields, cols.song).strip()
    artists = split_artists(_get(fields, cols.artist))
    if track_id is None and not (song and artists):
        raise ValueError("no track id and no song + artist")
    popularity = _optional_int(_get(fields, cols.popularity))
    if popularity is not None and not 0 <= popularity <= 100:
        raise ValueError(f"popularity out of 0-100: {popularity}")
    return HistoryRow(
        date=dt.date.fromisoformat(_get(fields, cols.date).strip()[:10]),
        song_key=track_id or song_key(song, artists),
        track_id=track_id,
        song=song,
        artists=artists,
        popularity=popularity,
        position=_optional_int(_get(fields, cols.position)),
        release_date=_optional_date(_get(fields, cols.release_date)),
        duration_ms=_optional_int(_get(fields, cols.duration_ms)),
        explicit=_optional_bool(_get(fields, cols.explicit)),
        album_type=_get(fields, cols.album_type).strip() or None,
        total_tracks=_optional_int(_get(fields, cols.total_tracks)),
        playlist=playlist,
    )


def read_history(path: str | Path) -> HistoryFile:
    """Read one popularity-history CSV; bad rows become problems, an unreadable file raises."""
    path = Path(path)
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise HistoryFormatError(path, 0, f"cannot open: {exc.strerror or exc}") from None
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise HistoryFormatError(path, content[: exc.start].count(b"\n") + 1, "not UTF-8 text") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if not header:
        raise HistoryFormatError(path, 1, "empty file")
    cols = _Columns(path, header)
    result = HistoryFile(path=path, sha256=hashlib.sha256(content).hexdigest())
    line = reader.line_num + 1
    for fields in reader:
        if any(value.strip() for value in fields):
            try:
                result.rows.append(_row(fields, cols, path.stem))
            except ValueError as exc:
                result.problems.append(ChartProblem(path.name, line, str(exc)))
        line = reader.line_num + 1
    result.rows = unknown_leading_zeros(result.rows)
    if not result.rows:
        raise HistoryFormatError(path, line, "no readable rows")
    return result


def unknown_leading_zeros(rows: Iterable[HistoryRow]) -> list[HistoryRow]:
    """Rows with each song's popularity 0 before its first non-zero value turned into None (unknown)."""
    ordered = sorted(rows, key=lambda r: (r.song_key, r.date))
    seen_positive: set[str] = set()
    out: list[HistoryRow] = []
    for row in ordered:
        if row.popularity and row.popularity > 0:
            seen_positive.add(row.song_key)
        elif row.popularity == 0 and row.song_key not in seen_positive:
            row = replace(row, popularity=None)
        out.append(row)
    out.sort(key=lambda r: (r.date, r.position if r.position is not None else 0, r.song_key))
    return out


def iter_history_paths(paths_or_dirs: Iterable[str | Path]) -> list[Path]:
    """Every CSV under the given files and folders, sorted by name."""
    found: set[Path] = set()
    for item in paths_or_dirs:
        path = Path(item)
        if path.is_dir():
            found.update(p for p in path.rglob("*.csv") if p.is_file())
        elif path.is_file():
            found.add(path)
        else:
            raise FileNotFoundError(f"no such history file or folder: {path}")
    return sorted(found)
