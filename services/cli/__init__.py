"""The `songpop` command: a small root that gathers one module per command group (names fixed in
docs/interfaces): `ingest.py` (ingest init|update|history), `forecasts.py` (train, predict),
`deploy.py` (serve, health, migrate), `local.py` (up, emulator), `evaluate.py` (eval charts|popularity);
`jobs.py` is how every command runs its job (settings, exit codes, progress)."""

from __future__ import annotations

from typing import Annotated

import typer

from . import deploy, forecasts, local
from .evaluate import eval_app
from .ingest import ingest_app

app = typer.Typer(
    help="songpop: which of this week's trending Spotify songs will still matter in 6 and 12 months.\n\n"
    "Configuration comes from SONGPOP_* environment variables or a .env file (see README).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(ingest_app, name="ingest")
app.add_typer(eval_app, name="eval")
for command in (
    forecasts.train,
    forecasts.predict,
    deploy.serve,
    deploy.health,
    deploy.migrate,
    local.up,
    local.emulator,
):
    app.command()(command)


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


def main() -> None:
    """The `songpop` console script."""
    app()
