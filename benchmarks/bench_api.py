"""The predictor's REST hot path and batch scoring on a database of 100,000 songs.

One run:
  1. fills a throwaway MariaDB database (SQLite when MariaDB is unreachable) with 100,000 songs and
     `--weeks` weekly snapshots each, plus a weekly top-200 chart, straight through `shared.db.upsert`;
  2. batch-scores all 100,000 songs with `shared.forecasting.score_from_store` (target < 1 s) and stores the
     predictions as the predictor does after `db-updated`;
  3. starts the predictor (uvicorn, one process) and, beside it, a bare FastAPI app (same uvicorn settings,
     one endpoint returning a constant) as the baseline, and waits until the predictor has built the
     resident answers of every batch-scored song (it answers from the database until then): how long that
     took, their memory and the predictor's RSS are reported;
  4. loads each from a separate process, `wrk` when installed (else a Python asyncio load generator), at
     64 concurrent connections, accepting gzip as HTTP clients do, in interleaved rounds (the machine's
     other load hits all alike; medians are reported): the bare endpoint, then
     `GET /v1/tracks/{id}/forecast` with ids drawn uniformly from the 100,000 songs, then with
     Zipf-distributed ids (a few songs get most requests, as trending songs do); prints requests/s,
     p50/p99 latency and the share answered from memory (resident answers or response cache) of each.
Targets: forecast throughput >= 60% of the bare endpoint's, p99 < 50 ms.
Run: `make bench-api` (or `python -m benchmarks.bench_api --songs 100000`).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import re
import socket
import string
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from benchmarks.http_load import CONNECTIONS, load, zipf_draws
from shared.db import make_engine, make_sessionmaker, migrate, upsert
from shared.models import ChartEntry, Prediction, Snapshot, Track, utcnow
from shared.weeks import add_weeks, current_week

TARGET_RATIO = 0.60
TARGET_P99_MS = 50.0
TARGET_SCORING_S = 1.0
ZIPF_EXPONENT = 1.0
CHART_SIZE = 200
TRENDING = 2_000  # songs trending this week
MYSQL_SERVER = os.environ.get("SONGPOP_TEST_MYSQL_URL", "mysql+asyncmy://root@127.0.0.1:3306")
BASE62 = string.digits + string.ascii_letters
MQTT_URL = os.environ.get("SONGPOP_TEST_MQTT_URL", "mqtt://127.0.0.1:1883")
RESULTS = Path(__file__).parent / "results" / "bench_api.json"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------- data


def song_ids(n: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choices(BASE62, k=22)) for _ in range(n)]


async def fill(url: str, ids: list[str], weeks: int) -> float:
    """Songs, their weekly snapshots and a weekly top-200 chart; this week the first `TRENDING` songs
    trend (the chart is drawn from them), as a few thousand of a catalogue do. Seconds taken."""
    start = time.perf_counter()
    rng = random.Random(11)
    week, now = current_week(), utcnow()
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    try:
        tracks = [
            {"id": i, "name": f"Song {n}", "artist_names": f"Artist {n % 5000}",
             "release_date": add_weeks(week, -weeks - n % 300), "updated_at": now}
            for n, i in enumerate(ids)
        ]  # fmt: skip
        async with sessions() as session:
            await upsert(session=session, model=Track, rows=tracks, keys=["id"])
            await session.commit()
        for back in range(weeks):
            day = add_weeks(week, -back)
            rows = [
                {"track_id": i, "week": day, "popularity": rng.randint(0, 100), "popularity_source": "api",
                 "trending": back == 0 and n < TRENDING, "updated_at": now}
                for n, i in enumerate(ids)
            ]  # fmt: skip
            charts = [
                {
                    "track_id": i,
                    "week": day,
                    "region": "global",
                    "rank": r + 1,
                    "streams": 9_000_000 // (r + 1),
                }
                for r, i in enumerate(rng.sample(ids[:TRENDING], CHART_SIZE))
            ]
            async with sessions() as session:
                await upsert(session=session, model=Snapshot, rows=rows, keys=["track_id", "week"])
                await upsert(
                    session=session, model=ChartEntry, rows=charts, keys=["track_id", "week", "region"]
                )
                await session.commit()
    finally:
        await engine.dispose()
    return time.perf_counter() - start


async def score_and_store(url: str, ids: list[str]) -> dict[str, Any]:
    """Batch scoring with real models as the predictor does it after `db-updated` (`bench_scoring`: the
    resident store's cold load, its refresh after one new week, scoring on the warm store - the figure the
    < 1 s target applies to - next to the full load, and storing the predictions)."""
    from benchmarks.bench_scoring import score_for_api

    return await score_for_api(url, ids)


async def store_stand_in_predictions(url: str, ids: list[str]) -> None:
    """When the forecasting code cannot run: rows of the same shape, so the REST path is still measured."""
    week, now = current_week(), utcnow()
    rows = [
        {"track_id": i, "week": week, "signal": "popularity", "region": "", "horizon_weeks": h,
         "current": 50.0, "value": 48.0, "lower": 38.0, "upper": 58.0, "model_version": "stand-in",
         "cold_start": True, "created_at": now}
        for i in ids
        for h in (26, 52)
    ]  # fmt: skip
    engine = make_engine(url)
    try:
        async with make_sessionmaker(engine)() as session:
            await upsert(session=session, model=Prediction, rows=rows, keys=["track_id", "week", "signal",
                         "region", "horizon_weeks"])  # fmt: skip
            await session.commit()
    finally:
        await engine.dispose()


# ---------------------------------------------------------------- servers


def bare_app() -> Any:
    """The baseline: FastAPI with one endpoint and nothing behind it."""
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/bare/{track_id}")
    async def bare(track_id: str) -> dict[str, str]:
        return {"track_id": track_id, "status": "ok"}

    return app


def serve(kind: str, port: int, url: str) -> None:
    """Child process: run one app under uvicorn (uvloop, httptools, no access log)."""
    import logging

    import uvicorn

    logging.basicConfig(level=logging.WARNING)
    if kind == "bare":
        app = bare_app()
    else:
        from services.predictor.app import create_app
        from services.predictor.settings import PredictorSettings

        settings = PredictorSettings(
            database_url=url,
            mqtt_url=MQTT_URL if reachable(1883) else "",
            mqtt_topic_root=f"bench/{uuid.uuid4().hex[:8]}/songpop/v1",
            mqtt_client_prefix=f"bench-{uuid.uuid4().hex[:8]}",  # never the id of a running predictor
            log_level="WARNING",
            _env_file=None,
        )
        app = create_app(settings)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, loop="uvloop",
                http="httptools")  # fmt: skip


class Server:
    def __init__(self, kind: str, url: str) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.bench_api", "--serve", kind, "--port", str(self.port),
             "--database-url", url],
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        self.base = f"http://127.0.0.1:{self.port}"
        self.started = time.monotonic()

    def rss_bytes(self) -> int:
        """The server process's resident set size."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1)) * 1024  # type: ignore[union-attr]

    def wait_ready(self, path: str, within: float = 60) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}")
            try:
                if httpx.get(self.base + path, timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{self.base}{path} did not answer")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def cache_counts(base: str) -> dict[str, float]:
    text_body = httpx.get(base + "/metrics", timeout=10).text
    found = dict(re.findall(r'^songpop_rest_cache_total\{result="(\w+)"\} ([\d.e+]+)$', text_body, re.M))
    return {k: float(v) for k, v in found.items()}


def hit_rate(before: dict[str, float], after: dict[str, float]) -> float | None:
    """Share of answers from memory: the resident answers or the response cache."""
    hits = sum(after.get(k, 0) - before.get(k, 0) for k in ("resident", "hit"))
    total = hits + after.get("miss", 0) - before.get("miss", 0)
    return hits / total if total else None


def resident_gauges(base: str) -> dict[str, float]:
    text_body = httpx.get(base + "/metrics", timeout=10).text
    found = dict(re.findall(r"^songpop_rest_resident_(\w+) ([\d.e+-]+)$", text_body, re.M))
    return {k: float(v) for k, v in found.items()}


def wait_resident(server: Server, within: float = 600) -> dict[str, Any]:
    """Wait until the predictor has built the resident answers of every batch-scored song (it starts
    answering before, from the database); their count, memory and the time since the server started."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        gauges = resident_gauges(server.base)
        if gauges.get("version", -1) >= 0 and gauges.get("pending", 1) == 0:
            return {
                "answers": int(gauges["answers"]),
                "bytes": int(gauges["bytes"]),
                "ready_seconds": time.monotonic() - server.started,
                "server_rss_bytes": server.rss_bytes(),
            }
        time.sleep(0.5)
    raise TimeoutError("the resident answers were not built in time")


def measure(
    servers: dict[str, Server], ids: list[str], seconds: int, rounds: int, warm_seconds: int
) -> dict[str, Any]:
    """Rounds of bare / uniform / skewed, interleaved so that the machine's other load hits all alike;
    the median of each is reported."""
    patterns = {
        "uniform": ids,  # every song equally likely: an LRU cache would help least
        "skewed": zipf_draws(ids, 200_000, ZIPF_EXPONENT),
    }
    runs: dict[str, list[dict[str, Any]]] = {"bare": [], "uniform": [], "skewed": []}
    load(servers["bare"].base, "/bare/{id}", ids, 2)  # warm-up
    # a running predictor has answered the popular songs before: measure it in that steady state
    print(f"warming the predictor's cache with the skewed load for {warm_seconds} s ...", flush=True)
    load(servers["predictor"].base, "/v1/tracks/{id}/forecast", patterns["skewed"], warm_seconds)
    for round_number in range(1, rounds + 1):
        print(f"round {round_number}/{rounds} ...", flush=True)
        runs["bare"].append(load(servers["bare"].base, "/bare/{id}", ids, seconds))
        for pattern, drawn in patterns.items():
            before = cache_counts(servers["predictor"].base)
            outcome = load(servers["predictor"].base, "/v1/tracks/{id}/forecast", drawn, seconds)
            outcome["cache_hit_rate"] = hit_rate(before, cache_counts(servers["predictor"].base))
            runs[pattern].append(outcome)
    return {name: median_run(found) for name, found in runs.items()} | {"rounds": runs}


def median_run(found: list[dict[str, Any]]) -> dict[str, Any]:
    ordered = sorted(found, key=lambda r: r["rps"])
    middle = ordered[len(ordered) // 2]
    return {**middle, "non_2xx": sum(r["non_2xx"] for r in found),
            "socket_errors": sum(r["socket_errors"] for r in found)}  # fmt: skip


# ---------------------------------------------------------------- main


async def create_database() -> tuple[str, str | None]:
    if not reachable(3306):
        path = Path(tempfile.mkdtemp()) / "bench.db"
        return f"sqlite+aiosqlite:///{path}", None
    name = f"songpop_bench_api_{uuid.uuid4().hex[:8]}"
    engine = make_engine(MYSQL_SERVER + "/")
    async with engine.begin() as conn:
        await conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    await engine.dispose()
    return f"{MYSQL_SERVER}/{name}", name


async def drop_database(name: str) -> None:
    engine = make_engine(MYSQL_SERVER + "/")
    async with engine.begin() as conn:
        await conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
    await engine.dispose()


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def report(result: dict[str, Any]) -> None:
    bare, scoring = result["bare"], result["scoring"]
    lines = [
        f"database: {result['songs']:,} songs x {result['weeks']} weeks ({result['backend']}), "
        f"filled in {result['fill_seconds']:.1f} s",
    ]
    if scoring.get("error"):
        lines.append(f"batch scoring: not measured ({scoring['error']})")
    else:
        lines.append(
            f"batch scoring of {scoring['songs']:,} songs: {scoring['seconds']:.2f} s "
            f"({scoring['predictions']:,} predictions of {scoring['scored_songs']:,} songs, cold start: "
            f"{scoring['cold_start']}; storing them: {scoring['store_seconds']:.2f} s)  target < "
            f"{TARGET_SCORING_S:.0f} s: {verdict(scoring['seconds'] < TARGET_SCORING_S)}"
        )
    resident = result["resident"]
    lines.append(
        f"resident answers: {resident['answers']:,} songs in {resident['bytes'] / 2**20:.1f} MiB "
        f"({resident['bytes'] / max(resident['answers'], 1):.0f} B a song: gzipped body, id, dict slot), "
        f"ready {resident['ready_seconds']:.1f} s after the predictor started; predictor RSS "
        f"{resident['server_rss_bytes'] / 2**20:.0f} MiB (after the load: "
        f"{resident['server_rss_after_bytes'] / 2**20:.0f} MiB)"
    )
    lines += [
        f"load: {bare['tool']}, {CONNECTIONS} connections, median of {result['rounds']} interleaved "
        f"rounds of {result['seconds']} s after {result['warm_seconds']} s of skewed warm-up,",
        f"{os.cpu_count()} CPUs shared by load generator, servers and MariaDB",
        f"{'endpoint':<52} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'memory':>6} {'vs bare':>8}",
        f"{'GET /bare/{id} (bare FastAPI)':<52} {bare['rps']:>8.0f} {bare['p50_ms']:>8.2f} "
        f"{bare['p99_ms']:>8.2f} {'':>6} {'100%':>8}",
    ]
    for pattern, label in (("uniform", "uniform over all songs"), ("skewed", f"Zipf {ZIPF_EXPONENT}")):
        run = result[pattern]
        hits = f"{run['cache_hit_rate']:.0%}" if run.get("cache_hit_rate") is not None else "-"
        lines.append(
            f"{'GET /v1/tracks/{id}/forecast, ' + label:<52} {run['rps']:>8.0f} {run['p50_ms']:>8.2f} "
            f"{run['p99_ms']:>8.2f} {hits:>6} {run['rps'] / bare['rps']:>8.0%}"
        )
    for pattern in ("uniform", "skewed"):
        run = result[pattern]
        ratio = run["rps"] / bare["rps"]
        lines.append(
            f"{pattern}: throughput {ratio:.0%} of bare (target >= {TARGET_RATIO:.0%}): "
            f"{verdict(ratio >= TARGET_RATIO)}; p99 {run['p99_ms']:.1f} ms "
            f"(target < {TARGET_P99_MS:.0f} ms): {verdict(run['p99_ms'] < TARGET_P99_MS)}; "
            f"non-2xx: {run['non_2xx']}"
        )
    print("\n".join(lines))


async def prepare(songs: int, weeks: int) -> tuple[str, str | None, list[str], dict[str, Any]]:
    url, name = await create_database()
    await asyncio.to_thread(migrate, url)
    ids = song_ids(songs)
    print(f"filling {songs:,} songs x {weeks} weeks ...", flush=True)
    seconds = await fill(url, ids, weeks)
    print(f"filled in {seconds:.1f} s; batch scoring ...", flush=True)
    try:
        scoring = await score_and_store(url, ids)
    except (AttributeError, ImportError, TypeError) as exc:
        scoring = {"error": f"{type(exc).__name__}: {exc}; stand-in predictions stored for the REST load"}
        await store_stand_in_predictions(url, ids)
    return url, name, ids, {"fill_seconds": seconds, "scoring": scoring}


def run(songs: int, weeks: int, seconds: int, rounds: int, warm_seconds: int, keep: bool) -> int:
    url, name, ids, prepared = asyncio.run(prepare(songs, weeks))
    servers = {"predictor": Server("predictor", url), "bare": Server("bare", url)}
    try:
        servers["predictor"].wait_ready(f"/v1/tracks/{ids[0]}/forecast")
        servers["bare"].wait_ready(f"/bare/{ids[0]}")
        print("waiting for the predictor's resident answers ...", flush=True)
        resident = wait_resident(servers["predictor"])
        measured = measure(servers, ids, seconds, rounds, warm_seconds)
        resident["server_rss_after_bytes"] = servers["predictor"].rss_bytes()
    finally:
        for server in servers.values():
            server.stop()
        if name and not keep:
            asyncio.run(drop_database(name))
    result = {
        "songs": songs, "weeks": weeks, "seconds": seconds, "at": dt.datetime.now(dt.UTC).isoformat(),
        "backend": "mariadb" if name else "sqlite", "resident": resident, **prepared, **measured,
    }  # fmt: skip
    result["rounds"], result["warm_seconds"] = rounds, warm_seconds
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({**result, "runs": measured["rounds"]}, indent=2))
    report(result)
    failed = sum(result[p]["non_2xx"] + result[p]["socket_errors"] for p in ("uniform", "skewed"))
    return 0 if failed == 0 else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--songs", type=int, default=100_000)
    parser.add_argument("--weeks", type=int, default=8, help="weekly snapshots per song")
    parser.add_argument("--seconds", type=int, default=10, help="load duration per endpoint and round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (the median is reported)")
    parser.add_argument("--warm-seconds", type=int, default=30, help="skewed load before measuring")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    parser.add_argument("--serve", choices=["predictor", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.database_url)
    else:
        sys.exit(run(args.songs, args.weeks, args.seconds, args.rounds, args.warm_seconds, args.keep))


if __name__ == "__main__":
    main()
