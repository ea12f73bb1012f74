"""Reader for Spotify chart CSV files in both formats, daily or weekly, any region.

Old spotifycharts.com files: a disclaimer line, then `Position,"Track Name",Artist,Streams,URL`.
New charts.spotify.com files: UTF-8 with a byte-order mark, CRLF, header
`rank,uri,artist_names,track_name,source,peak_rank,previous_rank,weeks_on_chart,streams`;
numbers may be quoted.

A bad row becomes a `ChartProblem` (file, line, reason) and the rest of the file is kept; a file that cannot
be read at all raises `ChartFormatError` naming the file, the line and the reason.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from shared.weeks import week_of

TRACK_ID_RE = re.compile(r"^[0-9A-Za-z]{22}$")
OLD_HEADER = ["position", "track name", "artist", "streams", "url"]
NEW_HEADER_REQUIRED = {"rank", "uri", "artist_names", "track_name", "streams"}
HEADER_SEARCH_LINES = 3  # the header is on line 1 (new format) or 2 (old format, after the disclaimer)

# File names: it_2016-12-23--2016-12-30.csv, regional-global-weekly-2024-08-29.csv,
# regional-it-daily-2020-01-01.csv
OLD_NAME_RE = re.compile(
    r"^(?P<region>[a-z]{2,8})_(?P<start>\d{4}-\d{2}-\d{2})(?:--(?P<end>\d{4}-\d{2}-\d{2}))?$", re.IGNORECASE
)
NEW_NAME_RE = re.compile(
    r"^regional-(?P<region>[a-z]{2,8})-(?P<period>daily|weekly)-(?P<date>\d{4}-\d{2}-\d{2})$", re.IGNORECASE
)
ANY_DATE_RE = re.compile(r"(\d{4}-\d{2}-\d{2})")
REGION_DIR_RE = re.compile(r"^[a-z]{2}$|^global$", re.IGNORECASE)


class ChartFormatError(ValueError):
    """A chart file that cannot be read at all; the message names the file, the line and the reason."""

    def __init__(self, file: str | Path, line: int, reason: str) -> None:
        self.file, self.line, self.reason = str(file), line, reason
        super().__init__(f"{file}:{line}: {reason}")


@dataclass(frozen=True)
class ChartProblem:
    """One bad row of a chart file, skipped while the rest of the file is kept."""

    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


@dataclass(frozen=True)
class ChartRow:
    rank: int
    track_id: str | None  # 22-character Spotify id; None when the row carries no link
    track_name: str
    artists: list[str]
    streams: int | None


DAYS_IN_WEEK = 7


@dataclass
class Chart:
    """One chart file: its identity, period, rows and the rows that could not be read."""

    path: Path
    name: str
    sha256: str
    region: str
    date: dt.date  # the last day the chart covers
    week: dt.date  # Monday of the ISO week of `date`
    period: str  # "weekly" or "daily"
    format: str  # "spotifycharts" (old) or "charts.spotify.com" (new)
    rows: list[ChartRow] = field(default_factory=list)
    problems: list[ChartProblem] = field(default_factory=list)

    @property
    def series(self) -> str:
        """The chart this file is an issue of: its region's weekly chart ("it"), or that region's daily chart
        ("it-daily"), a chart of its own: a day's Top 200 is another list than the week's, so a daily file
        neither overwrites nor mixes with the week's entries."""
        return self.region if self.period == "weekly" else f"{self.region}-{self.period}"

    def weekly_streams(self, row: ChartRow) -> int | None:
        """The row's streams on the weekly charts' scale (a day's times 7), so that levels and floors mean
        the same to the models whatever the chart; exact, so the day's figure is kept (divide by 7)."""
        if row.streams is None or self.period == "weekly":
            return row.streams
        return row.streams * DAYS_IN_WEEK

    @property
    def floor_streams(self) -> int | None:
        """Streams of the last charted position: the level below which a song is censored."""
        streams = [row.streams for row in self.rows if row.streams is not None]
        return min(streams) if streams else None


@dataclass(frozen=True)
class ChartName:
    """What a chart's file name (and folder) say about it."""

    region: str | None
    date: dt.date | None
    period: str | None


def parse_chart_name(path: str | Path) -> ChartName:
    """Region, date (the chart's last day) and period from a chart file's name and folder."""
    path = Path(path)
    stem = path.stem
    folder_region = path.parent.name.lower() if REGION_DIR_RE.match(path.parent.name) else None
    if match := NEW_NAME_RE.match(stem):
        return ChartName(
            match["region"].lower(), dt.date.fromisoformat(match["date"]), match["period"].lower()
        )
    if match := OLD_NAME_RE.match(stem):
        start = dt.date.fromisoformat(match["start"])
        if match["end"]:
            end = dt.date.fromisoformat(match["end"])
            # The end date is the next chart's start: the chart's last day is the day before.
            last = max(start, end - dt.timedelta(days=1))
            period = "daily" if (end - start).days <= 1 else "weekly"
            return ChartName(match["region"].lower(), last, period)
        return ChartName(match["region"].lower(), start, None)
    dates = ANY_DATE_RE.findall(stem)
    date = dt.date.fromisoformat(dates[-1]) if dates else None
    kind: str | None = "daily" if "daily" in stem.lower() else "weekly" if "weekly" in stem.lower() else None
    return ChartName(folder_region, date, kind)


def _parse_int(text: str) -> int:
    cleaned = text.strip().replace(",", "").replace("_", "")
    if not cleaned.lstrip("-").isdigit():
        raise ValueError(f"not a number: {text!r}")
    return int(cleaned)


def _track_id_from(link: str) -> str | None:
    """The 22-character id of `https://open.spotify.com/track/<id>` or `spotify:track:<id>`; None if empty."""
    link = link.strip()
    if not link:
        return None
    candidate = link.rsplit(":", 1)[-1] if link.startswith("spotify:") else link.split("?")[0].rstrip("/")
    candidate = candidate.rsplit("/", 1)[-1]
    if not TRACK_ID_RE.match(candidate):
        raise ValueError(f"not a Spotify track link: {link!r}")
    return candidate


def _split_new_artists(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _decode(path: Path, content: bytes) -> str:
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = content[: exc.start].count(b"\n") + 1
        raise ChartFormatError(path, line, "not UTF-8 text") from None


def _find_header(path: Path, records: list[tuple[int, list[str]]]) -> tuple[int, str, dict[str, int]]:
    """Index of the header record, the format, and the column positions."""
    for index, (_line, fields) in enumerate(records[:HEADER_SEARCH_LINES]):
        names = [name.strip().lower() for name in fields]
        if names[:5] == OLD_HEADER:
            return index, "spotifycharts", {name: pos for pos, name in enumerate(names)}
        if set(names) >= NEW_HEADER_REQUIRED:
            return index, "charts.spotify.com", {name: pos for pos, name in enumerate(names)}
    if not records:
        raise ChartFormatError(path, 1, "empty file")
    line, fields = records[min(1, len(records) - 1)]
    raise ChartFormatError(
        path,
        line,
        'no chart header: expected Position,"Track Name",Artist,Streams,URL or '
        f"rank,uri,artist_names,track_name,...,streams; found {','.join(fields)[:120]!r}",
    )


def _records(text: str) -> list[tuple[int, list[str]]]:
    """CSV records with the line number each starts on (quoted fields may span lines)."""
    reader = csv.reader(io.StringIO(text, newline=""))
    records: list[tuple[int, list[str]]] = []
    line = 1
    try:
        for fields in reader:
            records.append((line, fields))
            line = reader.line_num + 1
    except csv.Error as exc:
        # A truncated file may end inside an open quote: keep what came before it.
        records.append((line, [f"\x00{exc}"]))
    if len(records) > 2 and not text.endswith(("\n", "\r")):
        # Chart files end with a line break; without one the last row was cut short (a number in it may
        # have lost digits), so it is reported rather than read.
        records[-1] = (records[-1][0], ["\x00the file ends inside this row (no final line break): truncated"])
    return records


def _row_from(fields: list[str], fmt: str, columns: dict[str, int]) -> ChartRow:
    """One chart row; raises ValueError with the reason when the row is bad."""
    if fields and fields[0].startswith("\x00"):
        raise ValueError(f"unreadable CSV: {fields[0][1:]}")
    if len(fields) < len(columns):
        raise ValueError(f"truncated row: {len(fields)} of {len(columns)} fields")
    if fmt == "spotifycharts":
        rank = _parse_int(fields[columns["position"]])
        name = fields[columns["track name"]].strip()
        artists = [fields[columns["artist"]].strip()] if fields[columns["artist"]].strip() else []
        streams_text = fields[columns["streams"]]
        track_id = _track_id_from(fields[columns["url"]])
    else:
        rank = _parse_int(fields[columns["rank"]])
        name = fields[columns["track_name"]].strip()
        artists = _split_new_artists(fields[columns["artist_names"]])
        streams_text = fields[columns["streams"]]
        track_id = _track_id_from(fields[columns["uri"]])
    if rank < 1:
        raise ValueError(f"rank must be positive, got {rank}")
    streams = _parse_int(streams_text) if streams_text.strip() else None
    if streams is not None and streams < 0:
        raise ValueError(f"negative streams: {streams}")
    return ChartRow(rank=rank, track_id=track_id, track_name=name, artists=artists, streams=streams)


def read_chart(
    path: str | Path,
    *,
    region: str | None = None,
    week: dt.date | None = None,
    period: str | None = None,
) -> Chart:
    """Read one chart file of either format; bad rows become problems, an unreadable file raises."""
    path = Path(path)
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise ChartFormatError(path, 0, f"cannot open: {exc.strerror or exc}") from None
    text = _decode(path, content)
    named = parse_chart_name(path)
    chart_region = (region or named.region or "").lower()
    if not chart_region:
        raise ChartFormatError(
            path, 0, "no region in the file or folder name (as in regional-us-weekly-…): give --region"
        )
    chart_date = week or named.date
    if chart_date is None:
        raise ChartFormatError(path, 0, "no date in the file name; give the week explicitly")
    records = _records(text)
    header_index, fmt, columns = _find_header(path, records)
    chart = Chart(
        path=path,
        name=path.name,
        sha256=hashlib.sha256(content).hexdigest(),
        region=chart_region,
        date=chart_date,
        week=week_of(chart_date),
        period=period or named.period or "weekly",
        format=fmt,
    )
    _fill_rows(chart, records[header_index + 1 :], fmt, columns)
    if not chart.rows:
        line = records[-1][0] if records else 1
        detail = ""
        if chart.problems:
            detail = f" ({len(chart.problems)} bad rows, first: {chart.problems[0].reason})"
        raise ChartFormatError(path, line, f"no readable chart rows{detail}")
    return chart


def _fill_rows(
    chart: Chart, records: Iterable[tuple[int, list[str]]], fmt: str, columns: dict[str, int]
) -> None:
    seen_ranks: set[int] = set()
    seen_tracks: set[str] = set()
    for line, fields in records:
        if not any(value.strip() for value in fields):
            continue  # blank line
        try:
            row = _row_from(fields, fmt, columns)
        except ValueError as exc:
            chart.problems.append(ChartProblem(chart.name, line, str(exc)))
            continue
        if row.rank in seen_ranks or (row.track_id is not None and row.track_id in seen_tracks):
            what = f"track {row.track_id}" if row.track_id in seen_tracks else f"rank {row.rank}"
            chart.problems.append(ChartProblem(chart.name, line, f"duplicate row: {what} already seen"))
            continue
        seen_ranks.add(row.rank)
        if row.track_id is not None:
            seen_tracks.add(row.track_id)
        chart.rows.append(row)


def week_charts(charts: Iterable[Chart]) -> list[Chart]:
    """The files that make their series' chart of a week: the latest file of the series in that week (of two
    files of the same day, the one read last). A week's daily files are different lists, and their union would
    mix days: more songs than the chart holds, each at its best rank, under the lowest day's floor."""
    latest: dict[tuple[str, dt.date], Chart] = {}
    for chart in charts:
        earlier = latest.get((chart.series, chart.week))
        if earlier is None or chart.date >= earlier.date:
            latest[(chart.series, chart.week)] = chart
    return list(latest.values())


def is_chart_file(path: Path) -> bool:
    """True for a CSV whose name carries a date (the chart files this reader understands)."""
    return path.suffix.lower() == ".csv" and bool(ANY_DATE_RE.search(path.stem))


def iter_chart_paths(paths_or_dirs: Iterable[str | Path]) -> list[Path]:
    """Every chart CSV under the given files and folders, sorted by chart date (then region, name)."""
    found: set[Path] = set()
    for item in paths_or_dirs:
        path = Path(item)
        if path.is_dir():
            found.update(p for p in path.rglob("*") if p.is_file() and is_chart_file(p))
        elif path.is_file():
            found.add(path)
        else:
            raise FileNotFoundError(f"no such chart file or folder: {path}")

    def order(path: Path) -> tuple[dt.date, str, str]:
        named = parse_chart_name(path)
        return (named.date or dt.date.min, named.region or "", path.name)

    return sorted(found, key=order)
