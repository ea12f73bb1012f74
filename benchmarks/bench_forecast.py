"""Serving one song's forecast: the scoped load (its rows, its artists' songs' rows, chart floors grouped by
MariaDB) against the full load of every chart entry it replaced, on the same database and models.

One run fills a throwaway MariaDB database with weekly charts (the real chart files of `--charts`, read
only, or `synthetic_charts` of `--weeks` x `--size` in 9 regions), trains quick streams models
(`train_and_register`, 26 and 52 weeks), then times `forecast_tracks` for one song, ten songs and the week's
trending list both ways (median of `--repeat` runs), checks the answers are identical, and prints seconds.
Run: `make bench-forecast` (or `python -m benchmarks.bench_forecast --charts DIR`).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import shutil
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import text

from shared.config import Settings
from shared.db import make_engine, make_sessionmaker, migrate, upsert
from shared.forecasting import scoring, training
from shared.forecasting.models import BoostParams
from shared.forecasting.panel import chart_panel_from_files, week_date
from shared.forecasting.synthetic import chart_entry_rows, synthetic_charts
from shared.models import ChartEntry, Track
from tests.forecast_reference import forecast_full_load

MYSQL_SERVER = os.environ.get("SONGPOP_TEST_MYSQL_URL", "mysql+asyncmy://root@127.0.0.1:3306")


def chart_rows(args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Chart entries and tracks, from the chart files or synthetic."""
    if args.charts:
        entries = chart_panel_from_files([args.charts]).entries
        entries = entries.assign(week=[week_date(w) for w in entries["week"]])
    else:
        entries = synthetic_charts(regions=9, weeks=args.weeks, size=args.size, seed=0)
    tracks = entries.drop_duplicates("track")
    return (
        chart_entry_rows(entries),
        [
            {"id": t, "name": n[:500], "artist_names": a}
            for t, n, a in tracks[["track", "name", "artist"]].values
        ],
    )


async def fill(url: str, args: argparse.Namespace) -> int:
    entries, tracks = chart_rows(args)
    engine = make_engine(url)
    try:
        async with make_sessionmaker(engine)() as session:
            await upsert(session=session, model=Track, rows=tracks, keys=["id"])
            for start in range(0, len(entries), 20_000):
                part = entries[start : start + 20_000]
                await upsert(
                    session=session, model=ChartEntry, rows=part, keys=["track_id", "week", "region"]
                )
            await session.commit()
    finally:
        await engine.dispose()
    return len(entries)


def quick(signal: str, original: Any = training.default_config) -> dict[str, Any]:
    """Fewer boosting rounds: the model's quality does not change what serving loads."""
    config = original(signal)
    config["params"] = BoostParams(max_iter=30, min_samples_leaf=40).as_dict()
    return config


async def timed(
    session: Any, settings: Settings, week: dt.date, ids: list[str], scoped: bool
) -> tuple[float, Any]:
    start = time.perf_counter()
    if scoped:
        anchors = dict.fromkeys(ids, week)
        out = await scoring.forecast_tracks(session=session, settings=settings, anchors=anchors)
    else:
        out = await forecast_full_load(session=session, settings=settings, week=week, track_ids=ids)
    return time.perf_counter() - start, [p.model_dump() for p in out]


async def measure(url: str, repeat: int) -> dict[str, dict[str, float]]:
    scratch = Path(f"/tmp/bench-forecast-{uuid.uuid4().hex[:8]}")
    settings = Settings(database_url=url, var_dir=scratch, _env_file=None)  # type: ignore[call-arg]
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    results: dict[str, dict[str, float]] = {}
    try:
        training.default_config = quick  # type: ignore[assignment]
        activated = await training.train_and_register(
            sessions=sessions, settings=settings, signals=("streams",)
        )
        print(f"active models: {[v.version for v in activated]}")
        async with sessions() as session:
            week = (await session.execute(text("select max(week) from chart_entry"))).scalar()
            charted = (
                (
                    await session.execute(
                        text("select track_id from chart_entry where week = :w order by region, `rank`"),
                        {"w": week},
                    )
                )
                .scalars()
                .all()
            )
            ids = list(dict.fromkeys(charted))
            for label, chosen in (("one song", ids[:1]), ("ten songs", ids[:10]), ("trending", ids)):
                times: dict[bool, list[float]] = {True: [], False: []}
                answers: dict[bool, Any] = {}
                for _ in range(repeat):
                    for scoped in (False, True):
                        seconds, answers[scoped] = await timed(session, settings, week, chosen, scoped)
                        times[scoped].append(seconds)
                assert answers[True], f"{label}: nothing forecast, the figures would mean nothing"
                assert answers[True] == answers[False], f"{label}: scoped and full forecasts differ"
                full, scoped_s = statistics.median(times[False]), statistics.median(times[True])
                results[label] = {"full_s": full, "scoped_s": scoped_s, "predictions": len(answers[True])}
                print(
                    f"{label:>10}: full load (baseline) {full:.3f} s, scoped {scoped_s:.3f} s "
                    f"({full / scoped_s:.1f}x faster), {len(answers[True])} predictions, identical"
                )
    finally:
        await engine.dispose()
        shutil.rmtree(scratch, ignore_errors=True)  # the models trained for this run
    return results


async def main(args: argparse.Namespace) -> None:
    if args.database_url:  # an already filled database: measure only
        await measure(args.database_url, args.repeat)
        return
    name = f"songpop_bench_forecast_{uuid.uuid4().hex[:8]}"
    admin = make_engine(MYSQL_SERVER)
    async with admin.begin() as conn:
        await conn.execute(text(f"CREATE DATABASE {name}"))
    url = f"{MYSQL_SERVER}/{name}"
    try:
        await asyncio.to_thread(migrate, url)
        rows = await fill(url, args)
        print(f"chart entries: {rows}")
        await measure(url, args.repeat)
    finally:
        async with admin.begin() as conn:
            await conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        await admin.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--charts", type=Path, help="folder of real chart CSVs (read only)")
    parser.add_argument("--weeks", type=int, default=170)
    parser.add_argument("--size", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--database-url", help="measure on this filled database instead of a throwaway one")
    asyncio.run(main(parser.parse_args()))
