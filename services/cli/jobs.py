"""How every command runs its job: its settings, the async run, a progress bar, its summary, and the
exit code and one-line message when something is unreachable or misconfigured."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from shared import logs
from shared.config import ConfigError, Settings, load_settings

console = Console(stderr=True)
S = TypeVar("S", bound=Settings)
R = TypeVar("R")

EXIT_CONFIG, EXIT_UNREACHABLE, EXIT_FAILED = 2, 3, 1
EXIT_PAUSED = 75  # sysexits' EX_TEMPFAIL: the run paused (Spotify); run it again after the time it printed


def fail(message: str, code: int) -> NoReturn:
    """Print `message` as an error and exit with `code`."""
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def settings_of(cls: type[S]) -> S:
    """The settings of `cls` from the environment (exit 2 with the reason when they are wrong); sets up
    logging with the secrets redacted."""
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
    """A progress bar per phase, fed by a job's (phase, done, total) callback."""
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
