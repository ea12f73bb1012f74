"""`songpop ingest init|update|history`: fill the database from chart files, the Spotify Web API and
popularity-history files, and print the run's summary."""

from __future__ import annotations

import datetime as dt
import re
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from shared.config import Settings

from .jobs import EXIT_CONFIG, EXIT_FAILED, EXIT_PAUSED, console, fail, rich_progress, run_job, settings_of

if TYPE_CHECKING:
    from services.ingestor.report import RunReport

ingest_app = typer.Typer(
    help="Fill the database from chart files and the Spotify Web API.", no_args_is_help=True
)


def run_exit_code(report: RunReport, settings: Settings) -> int:
    """Print a run's summary (with a hint when the missing piece is the emulator); the exit code it
    calls for: 1 failed, EXIT_PAUSED paused, 0 done."""
    print_run(report)
    if report.status == "paused" and settings.uses_emulator:
        console.print(
            "  no Spotify credentials are set, so the local Spotify emulator stands in: is it running? "
            "(`songpop emulator` in another terminal, or set SONGPOP_SPOTIFY_CLIENT_ID/SECRET)"
        )
    return {"failed": EXIT_FAILED, "paused": EXIT_PAUSED}.get(report.status, 0)


def print_run(report: RunReport) -> None:
    """The run's status, access mode, non-zero counts, first problems and resume time."""
    colour = {"ok": "green", "paused": "yellow"}.get(report.status, "red")
    console.print(f"run {report.run_id} ({report.kind}, week {report.week}): [{colour}]{report.status}[/]")
    if report.access_mode:
        console.print(f"  Spotify access mode: {report.access_mode}")
    for key, value in sorted(report.counts.as_dict().items()):
        console.print(f"  {key:>28}: {value}")
    if report.errors:
        console.print(f"  {len(report.errors)} problem(s), first ones:")
        for error in report.errors[:10]:
            console.print(f"    - {error}", highlight=False, markup=False)
    if report.resume_after:
        console.print(
            f"  resumes after {report.resume_after.isoformat()} (run `songpop ingest update` again then)"
        )


def _ingest(
    kind: str,
    *,
    charts: Path | None,
    limit: int | None,
    week: dt.date | None,
    track_ids: list[str],
    region: str | None,
) -> None:
    from services.embedded import emulator_when_absent
    from services.ingestor.main import ingest_once
    from services.ingestor.settings import IngestorSettings
    from shared.charts import iter_chart_paths
    from shared.ids import InvalidTrackId, normalise_track_id

    settings = settings_of(IngestorSettings)
    if charts is not None and not charts.exists():
        fail(f"charts folder {charts} does not exist", EXIT_CONFIG)
    try:
        track_ids = [normalise_track_id(raw) for raw in track_ids]
    except InvalidTrackId as exc:
        fail(f"--track-id: {exc}", EXIT_CONFIG)
    paths = iter_chart_paths([charts]) if charts is not None else None
    if kind == "init" and paths is not None and limit is not None:
        paths = paths[:limit]  # --limit on init: the first N chart files
    if kind == "init" and not paths:
        fail(f"no chart CSV files (a CSV with a date in its name) under {charts}", EXIT_CONFIG)
    bar, update = rich_progress()

    async def job() -> RunReport:
        async with emulator_when_absent(settings) as effective:
            with bar:
                return await ingest_once(
                    effective,
                    kind=kind,
                    chart_paths=paths,
                    limit=None if kind == "init" else limit,
                    week=week,
                    track_ids=track_ids,
                    migrate_schema=True,
                    progress=update,
                    chart_region=region,
                )

    run_job(job, settings, lambda report: run_exit_code(report, settings))


def check_region(value: str | None) -> str | None:
    if value is not None and not re.fullmatch(r"[A-Za-z]{2,8}", value):
        raise typer.BadParameter("a region is a country code like 'us' or 'global'")
    return value.lower() if value else None


RegionOption = Annotated[
    str | None,
    typer.Option(
        help="region of chart files whose file or folder name gives none (e.g. us, global)",
        callback=check_region,
    ),
]


@ingest_app.command("init")
def ingest_init(
    charts: Annotated[
        Path | None, typer.Option(help="folder of chart CSVs (old or new format); default SONGPOP_CHARTS_DIR")
    ] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="read only the first N chart files (by date)")
    ] = None,
    region: RegionOption = None,
) -> None:
    """Create or migrate the schema and bootstrap the database from past chart files."""
    folder = charts or settings_of(Settings).charts_dir
    _ingest("init", charts=folder, limit=limit, week=None, track_ids=[], region=region)


@ingest_app.command("update")
def ingest_update(
    limit: Annotated[int | None, typer.Option(min=1, help="fetch at most N songs from Spotify")] = None,
    week: Annotated[
        dt.datetime | None, typer.Option(formats=["%Y-%m-%d"], help="week to snapshot (default: this week)")
    ] = None,
    track_id: Annotated[list[str] | None, typer.Option(help="also follow this track id (repeatable)")] = None,
    region: RegionOption = None,
) -> None:
    """This week's run: new chart files in SONGPOP_CHARTS_DIR, the trending playlist (Extended Quota),
    and a popularity snapshot of every followed song; then publishes db-updated."""
    _ingest(
        "update",
        charts=None,
        limit=limit,
        week=week.date() if week else None,
        track_ids=track_id or [],
        region=region,
    )


class Aggregate(StrEnum):
    last = "last"
    mean = "mean"


@ingest_app.command("history")
def ingest_history(
    paths: Annotated[
        list[Path], typer.Argument(help="popularity-history CSV files or folders of them", show_default=False)
    ],
    aggregate: Annotated[
        Aggregate, typer.Option(help="a week's value: the last known day's, or the mean of its days")
    ] = Aggregate.last,
) -> None:
    """Import popularity-history CSVs (date, track id or song + artist, popularity) as weekly snapshots,
    so a new installation starts with years of history; then publishes db-updated."""
    from services.ingestor.main import import_history_once
    from services.ingestor.settings import IngestorSettings

    settings = settings_of(IngestorSettings)
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        fail(f"not found: {', '.join(missing)}", EXIT_CONFIG)
    bar, update = rich_progress()

    async def job() -> RunReport:
        with bar:
            return await import_history_once(
                settings, paths, aggregate=aggregate.value, migrate_schema=True, progress=update
            )

    run_job(job, settings, lambda report: run_exit_code(report, settings))
