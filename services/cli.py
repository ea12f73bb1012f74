"""The `songpop` command: one entry point for every job and service (names fixed in docs/interfaces)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import sys
from collections.abc import Callable, Coroutine
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from typer.core import TyperCommand

from shared import logs
from shared.config import ConfigError, Settings, load_settings
from shared.spotify.models import AccessMode

app = typer.Typer(
    help="songpop: which of this week's trending Spotify songs will still matter in 6 and 12 months.\n\n"
    "Configuration comes from SONGPOP_* environment variables or a .env file (see README).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
ingest_app = typer.Typer(
    help="Fill the database from chart files and the Spotify Web API.", no_args_is_help=True
)
eval_app = typer.Typer(help="Backtest the forecasting models on files (train on some, score on others).")
app.add_typer(ingest_app, name="ingest")
app.add_typer(eval_app, name="eval")
console = Console(stderr=True)
S = TypeVar("S", bound=Settings)
R = TypeVar("R")

EXIT_CONFIG, EXIT_UNREACHABLE, EXIT_FAILED = 2, 3, 1
EXIT_PAUSED = 75  # sysexits' EX_TEMPFAIL: the run paused (Spotify); run it again after the time it printed


DEFAULT_EMULATOR_MODE = AccessMode.extended.value  # `up` and `emulator` alike: every signal to look at
MODES = [m.value for m in AccessMode]


def check_mode(value: str) -> str:
    if value not in MODES:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(MODES)}")
    return value


ModeOption = Annotated[
    str,
    typer.Option(metavar="|".join(MODES), callback=check_mode, help="the Spotify emulator's access mode"),
]


class Service(StrEnum):
    ingestor = "ingestor"
    predictor = "predictor"
    trainer = "trainer"
    dashboard = "dashboard"


def show_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"songpop {version('songpop')}")
        raise typer.Exit()


@app.callback()
def root(
    _version: Annotated[
        bool,
        typer.Option("--version", callback=show_version, is_eager=True, help="print the version and exit"),
    ] = False,
) -> None:
    """The command's own options (subcommands do the work)."""


def fail(message: str, code: int) -> NoReturn:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def settings_of(cls: type[S]) -> S:
    try:
        settings = load_settings(cls)
    except ConfigError as exc:
        fail(str(exc), EXIT_CONFIG)
    logs.setup(settings.log_level, secrets=logs.secret_values(settings))
    return settings


def run_job(
    coro_factory: Callable[[], Coroutine[Any, Any, R]],
    settings: Settings,
    summarise: Callable[[R], int] = lambda _: 0,
) -> R:
    """Run an async job, print its summary (`summarise` returns the exit code it calls for), and turn
    unreachable infrastructure into a clear message and exit code.

    Events a finished run could not publish wait in the outbox: on the embedded defaults (no broker
    configured, the embedded one lives inside `songpop up`) that is normal and said in one line; with a
    configured broker it is exit 3, after the summary.
    """
    from shared.db import DatabaseUnavailable
    from shared.outbox import BrokerUnavailable
    from shared.spotify.errors import SpotifyError

    unpublished: BrokerUnavailable | None = None
    try:
        result = asyncio.run(coro_factory())
    except BrokerUnavailable as exc:
        if exc.result is None:
            fail(str(exc), EXIT_UNREACHABLE)
        result, unpublished = exc.result, exc  # type: ignore[assignment]
    except DatabaseUnavailable as exc:
        fail(str(exc), EXIT_UNREACHABLE)
    except SpotifyError as exc:  # e.g. refused credentials: the message says which setting to check
        fail(str(exc), EXIT_FAILED)
    except KeyboardInterrupt:
        fail("interrupted", 130)
    code = summarise(result)
    if unpublished is not None:
        if settings.mqtt_url:
            fail(str(unpublished), EXIT_UNREACHABLE)
        console.print(
            f"{unpublished.pending} event(s) wait in the outbox: the next `songpop up`, or any run that "
            "reaches a broker, publishes them",
            soft_wrap=True,
        )
    if code:
        raise typer.Exit(code)
    return result


def rich_progress() -> tuple[Progress, Callable[[str, int, int], None]]:
    """A progress bar per phase, fed by the ingestor's (phase, done, total) callback."""
    bar = Progress(
        TextColumn("{task.description:>12}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    tasks: dict[str, Any] = {}

    def update(phase: str, done: int, total: int) -> None:
        if phase not in tasks:
            tasks[phase] = bar.add_task(phase, total=total)
        bar.update(tasks[phase], completed=done, total=total)

    return bar, update


def run_exit_code(report: Any, settings: Settings) -> int:
    """Print a run's summary (with a hint when the missing piece is the emulator); the exit code it
    calls for: 1 failed, EXIT_PAUSED paused, 0 done."""
    print_run(report)
    if report.status == "paused" and settings.uses_emulator:
        console.print(
            "  no Spotify credentials are set, so the local Spotify emulator stands in: is it running? "
            "(`songpop emulator` in another terminal, or set SONGPOP_SPOTIFY_CLIENT_ID/SECRET)"
        )
    return {"failed": EXIT_FAILED, "paused": EXIT_PAUSED}.get(report.status, 0)


def print_run(report: Any) -> None:
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
    from services.embedded import emulator_when_absent

    bar, update = rich_progress()

    async def job() -> Any:
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


RegionOption = Annotated[
    str | None,
    typer.Option(
        help="region of chart files whose file or folder name gives none (e.g. us, global)",
        callback=lambda value: check_region(value),
    ),
]


def check_region(value: str | None) -> str | None:
    if value is not None and not re.fullmatch(r"[A-Za-z]{2,8}", value):
        raise typer.BadParameter("a region is a country code like 'us' or 'global'")
    return value.lower() if value else None


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

    async def job() -> Any:
        with bar:
            return await import_history_once(
                settings, paths, aggregate=aggregate.value, migrate_schema=True, progress=update
            )

    run_job(job, settings, lambda report: run_exit_code(report, settings))


@app.command()
def train(
    horizon: Annotated[list[int] | None, typer.Option(help="26 or 52 (repeatable; default both)")] = None,
) -> None:
    """Train, backtest and register the models; announce the ones that became active."""
    from services.trainer.main import train_once
    from services.trainer.settings import TrainerSettings

    horizons = horizon or [26, 52]
    if any(h not in (26, 52) for h in horizons):
        fail("--horizon must be 26 or 52", EXIT_CONFIG)
    settings = settings_of(TrainerSettings)
    bar, update = rich_progress()

    async def job() -> list[Any]:
        with bar:
            return await train_once(settings, horizons=horizons, progress=update)

    run_job(job, settings, print_activated)


def print_activated(activated: list[Any]) -> int:
    if not activated:
        console.print("no model became active (not enough new data, or no improvement over the active ones)")
    for version in activated:
        console.print(
            f"active: {version.version} ({version.signal}, {version.horizon_weeks} weeks) {version.metrics}"
        )
    return 0


@app.command()
def predict() -> None:
    """Score the current trending songs with the active models, store and publish the forecasts."""
    from services.predictor.main import predict_once
    from services.predictor.settings import PredictorSettings

    settings = settings_of(PredictorSettings)
    run_job(lambda: predict_once(settings), settings, print_predictions)


def print_predictions(predictions: list[Any]) -> int:
    songs = len({p.track_id for p in predictions})
    console.print(f"{len(predictions)} prediction(s) of {songs} song(s) stored")
    return 0


@app.command()
def serve(service: Annotated[Service, typer.Argument(help="which long-lived service to run")]) -> None:
    """Run one long-lived service (what each docker compose service runs)."""
    runners = {
        Service.ingestor: ("services.ingestor.main", "services.ingestor.settings", "IngestorSettings"),
        Service.predictor: ("services.predictor.main", "services.predictor.settings", "PredictorSettings"),
        Service.trainer: ("services.trainer.main", "services.trainer.settings", "TrainerSettings"),
        Service.dashboard: ("services.dashboard.main", "services.dashboard.settings", "DashboardSettings"),
    }
    import importlib

    main_module, settings_module, settings_class = runners[service]
    settings = settings_of(getattr(importlib.import_module(settings_module), settings_class))
    serve_fn = importlib.import_module(main_module).serve
    run_job(lambda: serve_fn(settings), settings)


class Beating(StrEnum):
    ingestor = "ingestor"
    trainer = "trainer"


@app.command()
def health(service: Annotated[Beating, typer.Argument(help="the service to check")]) -> None:
    """Liveness of a running ingestor or trainer (its compose healthcheck): exit 0 if its heartbeat is
    fresh, 1 if it is stale or missing (a hung or stopped service)."""
    from shared.heartbeat import heartbeat_age, stale_after

    settings = settings_of(Settings)
    age, limit = heartbeat_age(settings, service.value), stale_after(settings)
    if age is None:
        fail(f"{service.value}: no heartbeat under {settings.var_dir} (not running here?)", EXIT_FAILED)
    if age > limit:
        fail(f"{service.value}: last heartbeat {age:.0f} s ago (more than {limit:.0f} s): hung", EXIT_FAILED)
    console.print(f"{service.value}: alive (heartbeat {age:.0f} s ago)")


@app.command()
def migrate(
    wait: Annotated[float, typer.Option(help="seconds to wait for the database and broker")] = 60.0,
) -> None:
    """Pre-start step: wait for the database and the broker, then bring the schema up to date."""
    from services.prestart import prestart

    settings = settings_of(Settings)
    run_job(lambda: prestart(settings, within=wait), settings)
    console.print("database and broker reachable; schema up to date")


@app.command()
def up(
    weeks: Annotated[
        int, typer.Option(min=0, help="weeks of simulated demo history on an empty database (0: none)")
    ] = 120,
    mode: ModeOption = DEFAULT_EMULATOR_MODE,
) -> None:
    """The whole stack in one process: SQLite, an in-process MQTT broker and the Spotify emulator
    unless SONGPOP_* settings point elsewhere. Prints the dashboard URL."""
    from services.stack import SERVICE_SETTINGS, run_stack

    settings = settings_of(Settings)
    for service_settings in SERVICE_SETTINGS:  # every service's own settings, before any work
        settings_of(service_settings)
    emulator_mode: Literal["extended", "development"] = (
        "extended" if mode == AccessMode.extended else "development"
    )
    run_job(
        lambda: run_stack(settings, demo_weeks=weeks, emulator_mode=emulator_mode, console=console), settings
    )


@app.command()
def emulator(
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="port to listen on")] = 8002,
    mode: ModeOption = DEFAULT_EMULATOR_MODE,
    latency_ms: Annotated[float, typer.Option(min=0, help="added latency per request")] = 0.0,
    seed: Annotated[int, typer.Option(help="seed of the generated catalog")] = 42,
    tracks: Annotated[int, typer.Option(min=1, help="catalog size")] = 20_000,
) -> None:
    """Run the Spotify Web API emulator (same paths, JSON shapes and errors as Spotify)."""
    from services.emulator import run

    logs.setup()
    run(host=host, port=port, mode=mode, latency_ms=latency_ms, seed=seed, n_tracks=tracks)


def spread_paths(args: list[str], flags: tuple[str, ...] = ("--train", "--test")) -> list[str]:
    """`--train A B --test C` -> `--train A --train B --test C`: a shell glob gives one flag many paths,
    while click's options take one value each (and repeat)."""
    spread: list[str] = []
    current: str | None = None
    for arg in args:
        if arg in flags:
            current = arg
        elif arg.startswith("-"):
            current = None
            spread.append(arg)
        elif current is not None:
            spread += [current, arg]
        else:
            spread.append(arg)
    return spread


class SpreadPathsCommand(TyperCommand):
    """A command whose --train/--test take one or more paths each (see spread_paths)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # typer vendors click's Context
        return super().parse_args(ctx, spread_paths(args))


def eval_paths(help_text: str) -> Any:
    return typer.Option(
        help=f"{help_text}: one or more files or folders", exists=True, metavar="PATH...", show_default=False
    )


TrainPaths = Annotated[list[Path], eval_paths("training data (the model learns from these)")]
TestPaths = Annotated[list[Path], eval_paths("test data (the forecasts are scored on these)")]
JsonFlag = Annotated[bool, typer.Option("--json", help="print one JSON object instead of a table")]


class Spacing(StrEnum):
    """How often the chart files of one side were downloaded (`monthly`: the first file of each month)."""

    weekly = "weekly"
    monthly = "monthly"


def spacing_option(side: str) -> Any:
    return typer.Option(
        help=f"keep every {side} chart file (weekly) or only the first of each month (monthly), as someone "
        "who downloads a file a month has them"
    )


def _eval(kind: str, train: list[Path], test: list[Path], as_json: bool, **spacings: Spacing) -> None:
    from shared.charts import ChartFormatError
    from shared.forecasting import NotEnoughData, format_eval_table, run_eval
    from shared.history import HistoryFormatError

    logs.setup("WARNING")
    try:
        options = {name: str(value) for name, value in spacings.items()}
        result = run_eval(kind, train, test, **options)  # type: ignore[arg-type]
    except (NotEnoughData, ChartFormatError, HistoryFormatError) as exc:
        fail(str(exc), EXIT_FAILED)
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
    else:
        sys.stdout.write(format_eval_table(result) + "\n")


@eval_app.command("charts", cls=SpreadPathsCommand)
def eval_charts(
    train: TrainPaths,
    test: TestPaths,
    as_json: JsonFlag = False,
    train_spacing: Annotated[Spacing, spacing_option("training")] = Spacing.weekly,
    test_spacing: Annotated[Spacing, spacing_option("test")] = Spacing.weekly,
) -> None:
    """Chart streams: censored MAE, AUC, 80% coverage and the top-20 survivors at 26 and 52 weeks of what
    would serve (the method the training files' rolling-origin folds choose), of the learned model and of
    every baseline; skill is 1 - error / the best naive answer's. Example: `--train charts/*_2019-*.csv
    --test charts/*_2020-*.csv --test-spacing monthly`."""
    _eval("charts", train, test, as_json, train_spacing=train_spacing, test_spacing=test_spacing)


@eval_app.command("popularity", cls=SpreadPathsCommand)
def eval_popularity(train: TrainPaths, test: TestPaths, as_json: JsonFlag = False) -> None:
    """Popularity index: MAE and 80% coverage at 182 and 365 days of what would serve, of the learned model,
    persistence and the naive drift; skill against the best naive answer. Example: `--train a.csv b.csv
    --test c.csv`."""
    _eval("popularity", train, test, as_json)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
