"""`songpop ingest init|update|history`: what they print, and clear failures with distinct exit codes when
the database or broker is unreachable or the configuration is wrong (Typer's CliRunner, real MariaDB)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from services.cli import app
from services.cli.jobs import EXIT_CONFIG, EXIT_FAILED, EXIT_PAUSED, EXIT_UNREACHABLE
from services.ingestor import main as ingestor_main
from shared.charts import iter_chart_paths, read_chart
from shared.models import ChartEntry, ChartFile, IngestRun, Snapshot
from tests.cli_support import environment
from tests.ingest_support import (
    all_rows,
    chart_entries,
    count,
    emulator,
    emulator_chart,
    new_format,
    rows,
    write,
)
from tests.servers import free_port

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
REGIONS = ("br", "de", "es", "fr", "gb", "global", "in", "it", "us")
CHART_FOLDERS = [f"charts-weekly-2017-2020/{r}" for r in REGIONS] + ["charts-it-daily-monthly-2020-2021"]
LIMIT = 2


async def songpop(args: list[str], env: dict[str, str]) -> Result:
    """Run the command in a worker thread (it runs its own event loop) while the emulator serves here."""
    return await asyncio.to_thread(CliRunner().invoke, app, args, env=env)


def said(result: Result) -> str:
    """What the command printed, with the terminal's line wrapping undone."""
    return " ".join(result.output.split())


@pytest.mark.real_data
@pytest.mark.parametrize("folder", CHART_FOLDERS)
async def test_every_real_chart_folder_loads_with_init(settings, sessions, folder) -> None:
    path = DATA / folder
    if not path.exists():
        pytest.skip(f"{path} is absent")
    expected = [read_chart(p) for p in iter_chart_paths([path])[:LIMIT]]
    async with emulator() as spotify:
        result = await songpop(["ingest", "init", "--charts", str(path), "--limit", str(LIMIT)],
                               environment(settings, spotify))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "(init, week" in said(result) and ": ok" in said(result) and "chart_entries" in said(result)
    wanted = sorted(
        (r.track_id, c.week, c.series, r.rank, c.weekly_streams(r))
        for c in expected
        for r in c.rows
        if r.track_id
    )
    assert len(wanted) > 0.95 * LIMIT * 200
    assert await rows(sessions, ChartEntry, "track_id", "week", "region", "rank", "streams") == wanted
    assert await count(sessions, ChartFile) == LIMIT
    assert await count(sessions, Snapshot) == len({(w[0], w[1]) for w in wanted})


async def test_update_prints_its_summary_and_history_command_imports(settings, sessions, tmp_path) -> None:
    history = write(tmp_path / "h.csv", "date,song,artist,popularity\n2024-05-06,A song,Someone,40\n"
                    "2024-05-09,A song,Someone,43\n")  # fmt: skip
    async with emulator() as spotify:
        emulator_chart(settings.charts_dir, spotify, spotify.state.week)
        update = await songpop(["ingest", "update", "--limit", "20"], environment(settings, spotify))
        imported = await songpop(["ingest", "history", str(history)], environment(settings, spotify))
    assert update.exit_code == 0, update.output
    assert "(update, week" in said(update) and "Spotify access mode: development" in said(update)
    assert "chart_entries: 200" in said(update) and "tracks_requested: 20" in said(update)
    assert imported.exit_code == 0, imported.output
    assert "(history, week 2024-05-06): ok" in said(imported) and "history_songs: 1" in said(imported)
    assert [r.kind for r in await all_rows(sessions, IngestRun)] == ["update", "history"]


async def test_unreachable_database_exits_3_with_a_clear_message(settings, monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(ingestor_main, "DATABASE_WAIT_SECONDS", 0.5)
    write(tmp_path / "regional-global-weekly-2024-01-04.csv", "rank,uri,artist_names,track_name,streams\n")
    nowhere = f"mysql+asyncmy://songpop:s3cret@127.0.0.1:{free_port()}/songpop"
    env = environment(settings, database_url=nowhere)
    result = await songpop(["ingest", "update"], env)
    assert result.exit_code == EXIT_UNREACHABLE
    assert "database" in said(result) and "is unreachable" in said(result)
    assert "s3cret" not in said(result)  # the password is never shown
    history = await songpop(["ingest", "history", str(tmp_path)], env)
    assert history.exit_code == EXIT_UNREACHABLE and "is unreachable" in said(history)


async def test_unreachable_broker_exits_3_after_committing(settings, sessions) -> None:
    async with emulator() as spotify:
        emulator_chart(settings.charts_dir, spotify, spotify.state.week)
        env = environment(settings, spotify, mqtt_url=f"mqtt://127.0.0.1:{free_port()}")
        result = await songpop(["ingest", "update"], env)
    assert result.exit_code == EXIT_UNREACHABLE
    assert "MQTT broker" in said(result) and "wait in the outbox" in said(result)
    assert said(result).index("(update, week") < said(result).index("MQTT broker")  # summary first
    assert await count(sessions, ChartEntry) == 200  # the data is committed all the same


async def test_a_paused_run_has_its_own_exit_code_after_its_summary(settings, sessions) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    env = environment(settings, spotify_api_url=f"{closed}/v1", spotify_accounts_url=closed)
    async with emulator() as spotify:
        emulator_chart(settings.charts_dir, spotify, spotify.state.week)
    result = await songpop(["ingest", "update"], env)
    assert result.exit_code == EXIT_PAUSED, result.output
    assert ": paused" in said(result) and "resumes after" in said(result)
    assert await count(sessions, ChartEntry) == 200  # the charts need no Spotify


@pytest.mark.parametrize(
    ("args", "overrides", "message"),
    [
        (["ingest", "update"], {"database_url": "postgresql://x/y"}, "SONGPOP_DATABASE_URL must start with"),
        (["ingest", "update"], {"mqtt_url": "http://broker"}, "SONGPOP_MQTT_URL must look like"),
        (["ingest", "update"], {"track_ids": '["not-an-id"]'}, "is not a Spotify track id"),
        (["ingest", "update", "--track-id", "nope"], {}, "--track-id: 'nope' is not a Spotify track id"),
        (["ingest", "init", "--charts", "/no/such/dir"], {}, "charts folder /no/such/dir does not exist"),
        (["ingest", "init", "--charts", "{empty}"], {}, "no chart CSV files"),
        (["ingest", "history", "/no/such.csv"], {}, "not found: /no/such.csv"),
        (["ingest", "history", "{empty}", "--aggregate", "median"], {}, "median"),
    ],
    ids=["database-url", "mqtt-url", "track-ids-setting", "track-id-option", "charts-folder", "empty-folder",
         "history-file", "aggregate"],
)  # fmt: skip
async def test_wrong_configuration_exits_2_before_touching_anything(
    settings, sessions, tmp_path, args, overrides, message
) -> None:
    args = [a.replace("{empty}", str(tmp_path)) for a in args]
    result = await songpop(args, environment(settings, **overrides))
    assert result.exit_code == EXIT_CONFIG, result.output
    assert message in said(result)
    assert await count(sessions, IngestRun) == 0


async def test_train_shows_its_progress_per_model(settings, sessions) -> None:
    result = await songpop(["train"], environment(settings))  # an empty database: nothing to learn
    assert result.exit_code == 0, result.output
    assert "models" in said(result) and "4/4" in said(result)
    assert "no model became active" in said(result)


async def test_a_wrong_spotify_secret_says_which_settings_to_check(settings, sessions) -> None:
    async with emulator() as spotify:
        env = environment(settings, spotify, spotify_client_id="my-app", spotify_client_secret="wrong")
        result = await songpop(["ingest", "update"], env)
    assert result.exit_code == EXIT_FAILED, result.output
    assert "Spotify refused the client credentials of client id 'my-app'" in said(result)
    assert "check SONGPOP_SPOTIFY_CLIENT_ID and SONGPOP_SPOTIFY_CLIENT_SECRET" in said(result)
    assert "Traceback" not in result.output and "wrong" not in said(result)


async def test_region_option_names_charts_whose_file_name_has_none(settings, sessions, tmp_path) -> None:
    folder = tmp_path / "downloads"
    write(folder / "weekly-chart-2024-01-11.csv", new_format(chart_entries(20, seed=3)))
    args = ["ingest", "init", "--charts", str(folder), "--limit", "1"]
    async with emulator() as spotify:
        without = await songpop(args, environment(settings, spotify))
        assert "give --region" in said(without) and await count(sessions, ChartEntry) == 0
        result = await songpop([*args, "--region", "US"], environment(settings, spotify))
    assert result.exit_code == 0, result.output
    assert await rows(sessions, ChartEntry, "region") == [("us",)] * 20
