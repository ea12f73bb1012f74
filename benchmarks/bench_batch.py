"""`POST /v1/forecasts` of 100 songs that are in the database but have no up-to-date batch forecast (so
each is forecast on demand), as a client sees it over HTTP, next to the plain way in the same run.

One run fills a throwaway MariaDB database (`bench_api.fill`: `--songs` songs x `--weeks` weekly
snapshots, a weekly chart), makes the data of the songs asked for end at `--anchor-weeks` different weeks
(songs that stopped being followed at different times: each is forecast at its own latest week), fits and
activates real models (`bench_scoring.register_models`), then serves the predictor twice (response cache
and resident answers off, so every request computes): with `rest_shared_scoring` (one load of all the
songs' rows and derived indexes, shared by every anchor week) and without (one `forecast_tracks` per
anchor week, the plain way). Each posts `--rounds` batches of 100 different songs; medians are printed,
and the answers of both must be identical. Run: `make bench-batch`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import delete

from benchmarks.bench_api import create_database, drop_database, fill, reachable, song_ids
from benchmarks.bench_scoring import register_models
from services.predictor.app import create_app
from services.predictor.settings import PredictorSettings
from shared.db import make_engine, make_sessionmaker, migrate_async
from shared.models import Snapshot
from shared.weeks import add_weeks, current_week
from tests.servers import serving

TARGET_SECONDS = 1.0
BATCH = 100


async def spread_anchor_weeks(url: str, ids: list[str], weeks: int) -> None:
    """Song n's data ends `n % weeks` weeks ago (its later snapshots removed)."""
    engine = make_engine(url)
    try:
        async with make_sessionmaker(engine)() as session:
            for back in range(1, weeks):
                songs = ids[back::weeks]
                since = add_weeks(current_week(), -back)
                await session.exec(
                    delete(Snapshot).where(Snapshot.track_id.in_(songs), Snapshot.week > since)
                )  # type: ignore[attr-defined, call-overload]
            await session.commit()
    finally:
        await engine.dispose()


async def post_batches(
    settings: PredictorSettings, batches: list[list[str]]
) -> tuple[list[float], list[Any]]:
    """Seconds per batch and the answers, from a predictor serving with `settings`."""
    seconds, answers = [], []
    async with serving(create_app(settings)) as url, httpx.AsyncClient(base_url=url, timeout=120) as http:
        await http.post("/v1/forecasts", json={"track_ids": batches[0][:5]})  # models loaded once per process
        for batch in batches:
            start = time.perf_counter()
            response = await http.post("/v1/forecasts", json={"track_ids": batch})
            seconds.append(time.perf_counter() - start)
            response.raise_for_status()
            answers.append(response.json())
    return seconds, answers


async def run(args: argparse.Namespace) -> dict[str, Any]:
    url, name = await create_database()
    try:
        await migrate_async(url)
        ids = song_ids(args.songs)
        await fill(url, ids, args.weeks)
        asked = ids[-BATCH * args.rounds :]  # not trending: no batch forecast, each forecast on demand
        await spread_anchor_weeks(url, asked, args.anchor_weeks)
        models = Path(tempfile.mkdtemp())
        await register_models(url, models)
        batches = [asked[i : i + BATCH] for i in range(0, len(asked), BATCH)]
        broker = {"mqtt_url": "mqtt://127.0.0.1:1883"} if reachable(1883) else {}  # else: embedded, absent
        base = PredictorSettings(
            database_url=url, var_dir=models.parent, rest_cache_entries=0, rest_cache_warm=False,
            mqtt_topic_root=f"bench/{uuid.uuid4().hex[:8]}/songpop/v1",
            **broker, _env_file=None,  # type: ignore[call-arg]
        )  # fmt: skip
        shared, shared_answers = await post_batches(base, batches)
        plain, plain_answers = await post_batches(
            base.model_copy(update={"rest_shared_scoring": False}), batches
        )
    finally:
        if name:
            await drop_database(name)
    empty = sum(1 for a in shared_answers for f in a["forecasts"] if not f["predictions"])
    return {
        "shared_s": statistics.median(shared), "plain_s": statistics.median(plain),
        "shared_all": shared, "plain_all": plain, "identical": shared_answers == plain_answers,
        "empty_answers": empty, "anchor_weeks": args.anchor_weeks,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--songs", type=int, default=5000)
    parser.add_argument("--weeks", type=int, default=12)
    parser.add_argument("--anchor-weeks", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    result = asyncio.run(run(parser.parse_args()))
    ok = result["shared_s"] < TARGET_SECONDS
    print(f"POST /v1/forecasts, {BATCH} songs forecast on demand at {result['anchor_weeks']} anchor weeks:")
    print(f"  one shared load and index (rest_shared_scoring): median {result['shared_s']:.3f} s "
          f"(target < {TARGET_SECONDS:.0f} s: {'ok' if ok else 'MISSED'})")  # fmt: skip
    print(f"  plain, one forecast_tracks per anchor week:        median {result['plain_s']:.3f} s")
    speed_up = result["plain_s"] / result["shared_s"]
    print(f"  speed-up {speed_up:.2f}x; identical answers: {result['identical']}; "
          f"empty answers: {result['empty_answers']}")  # fmt: skip
    print(f"  all rounds: shared {[round(s, 3) for s in result['shared_all']]}, "
          f"plain {[round(s, 3) for s in result['plain_all']]}")  # fmt: skip


if __name__ == "__main__":
    main()
