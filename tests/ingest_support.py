"""Helpers for the ingestion tests: the Spotify emulator on a real socket, ingestor settings pointing at it,
chart files of both formats written the way users download them, and database read-backs."""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import random
import string
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from services.emulator import EmulatorConfig
from services.emulator import create_app as create_emulator
from services.ingestor.settings import IngestorSettings
from shared.config import Settings
from shared.weeks import current_week
from tests.servers import serving

WEEK = current_week()
OLD_DISCLAIMER = (
    "Note that these figures are generated using a formula that protects against any artificial inflation"
    " of chart positions.,,,,"
)
NEW_HEADER = "rank,uri,artist_names,track_name,source,peak_rank,previous_rank,weeks_on_chart,streams"


@dataclass
class Emulator:
    url: str
    app: Any

    @property
    def state(self) -> Any:
        return self.app.state.emulator


@contextlib.asynccontextmanager
async def emulator(mode: str = "development", *, week: dt.date = WEEK) -> AsyncIterator[Emulator]:
    """The Spotify emulator (2,000 songs) served on a free port."""
    app = create_emulator(EmulatorConfig(mode=mode, n_tracks=2000, start_week=week))
    async with serving(app) as url:
        yield Emulator(url, app)


def ingestor_settings(settings: Settings, spotify: Emulator | None = None, **extra: Any) -> IngestorSettings:
    """The test's settings as IngestorSettings, talking to `spotify` (the emulator) if given."""
    values = settings.model_dump()
    if spotify is not None:
        values.update(spotify_api_url=f"{spotify.url}/v1", spotify_accounts_url=spotify.url)
    values.update(extra)
    return IngestorSettings(**values, _env_file=None)


def track_id(rng: random.Random) -> str:
    return "".join(rng.choices(string.ascii_letters + string.digits, k=22))


@dataclass(frozen=True)
class Entry:
    rank: int
    track_id: str
    name: str
    artists: tuple[str, ...]
    streams: int


def chart_entries(n: int, *, seed: int, top_streams: int = 2_000_000) -> list[Entry]:
    """`n` chart rows with random ids, names with commas and quotes, decreasing streams."""
    rng = random.Random(seed)
    return [
        Entry(
            rank=i + 1,
            track_id=track_id(rng),
            name=f'Song {seed}-{i}, "live"' if i % 7 == 0 else f"Song {seed}-{i}",
            artists=(f"Artist {rng.randint(1, 40)}",) + ((f"Guest {i}",) if i % 5 == 0 else ()),
            streams=top_streams - i * 1000,
        )
        for i in range(n)
    ]


def old_format(entries: Sequence[Entry]) -> str:
    """A spotifycharts.com file: disclaimer line, `Position,"Track Name",Artist,Streams,URL`, LF."""
    buffer = io.StringIO()
    buffer.write(OLD_DISCLAIMER + "\n")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["Position", "Track Name", "Artist", "Streams", "URL"])
    for e in entries:
        writer.writerow(
            [e.rank, e.name, e.artists[0], e.streams, f"https://open.spotify.com/track/{e.track_id}"]
        )
    return buffer.getvalue()


def new_format(entries: Sequence[Entry]) -> str:
    """A charts.spotify.com file: BOM, CRLF, the new header, quoted numbers."""
    buffer = io.StringIO()
    buffer.write("\ufeff" + NEW_HEADER + "\r\n")
    writer = csv.writer(buffer, lineterminator="\r\n", quoting=csv.QUOTE_ALL)
    for e in entries:
        writer.writerow(
            [e.rank, f"spotify:track:{e.track_id}", ", ".join(e.artists), e.name, "Label", e.rank, -1, 1,
             e.streams]
        )  # fmt: skip
    return buffer.getvalue()


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))
    return path


def emulator_chart(folder: Path, spotify: Emulator, week: dt.date, region: str = "global") -> Path:
    """The emulator's weekly chart of `week`, saved as charts.spotify.com names it."""
    name = f"regional-{region}-weekly-{(week + dt.timedelta(days=3)).isoformat()}.csv"
    return write(folder / name, spotify.state.catalog.chart_csv(week, region))


async def count(sessions: async_sessionmaker[AsyncSession], model: Any, *where: Any) -> int:
    async with sessions() as session:
        query = select(func.count()).select_from(model)
        for clause in where:
            query = query.where(clause)
        return int((await session.exec(query)).one()[0])  # type: ignore[call-overload]


async def rows(
    sessions: async_sessionmaker[AsyncSession], model: Any, *columns: str
) -> list[tuple[Any, ...]]:
    """Every row of `model` as tuples of `columns`, sorted: a table's content to compare between runs."""
    async with sessions() as session:
        found = (await session.exec(select(model))).scalars().all()  # type: ignore[call-overload]
    return sorted(tuple(getattr(row, c) for c in columns) for row in found)


async def all_rows(sessions: async_sessionmaker[AsyncSession], model: Any) -> list[Any]:
    async with sessions() as session:
        return list((await session.exec(select(model))).scalars().all())  # type: ignore[call-overload]
