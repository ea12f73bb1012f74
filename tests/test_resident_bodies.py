"""The resident answers built straight from the rows (`fastpath.bodies`) are, byte for byte, the bodies the
plain build makes by validating and serialising `TrackForecast` (`tracks.load_songs`, `tracks._answer`):
awkward values included (floats of every size, NULLs, escapes and non-ASCII text, two chart regions in
one week, a chart week without a snapshot, stale and up-to-date batch forecasts), whether a chunk is read by
its ids or by the range of ids it spans, on the test session's database and on SQLite."""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import random
import struct
import uuid
import zlib
from typing import Any

import pytest
from pydantic_core import to_json

from services.predictor.fastpath import bodies
from services.predictor.fastpath.bodies import as_json
from services.predictor.tracks import _gzipped_json, build_answers, load_songs
from shared.db import make_engine, make_sessionmaker, migrate, upsert
from shared.events import Forecast
from shared.models import PREDICTION_KEY, ChartEntry, ModelVersion, Prediction, Snapshot, Track
from shared.weeks import add_weeks
from tests.predictor_support import WEEK

FLOATS = [0.1, 1e-7, 123456.5, -0.5, 3e12, 71.0, 99.99, 1 / 3, 61.234567890123456]  # DOUBLE: kept whole


def song_id(n: int) -> str:
    return f"{n:020d}aB"  # 22 base-62 characters: the fast path's ids


def prediction(track_id: str, week: dt.date, signal: str, region: str, horizon: int, **values: Any) -> dict:
    return {
        "track_id": track_id, "week": week, "signal": signal, "region": region, "horizon_weeks": horizon,
        "current": values.get("current", 60.0), "value": values.get("value", 55.5),
        "lower": values.get("lower"), "upper": values.get("upper"), "p_chart": values.get("p_chart"),
        "model_version": values["version"], "cold_start": values.get("cold_start", False),
    }  # fmt: skip


async def seed(sessions) -> tuple[list[str], dict[str, str]]:
    """Songs of every shape an answer can take; returns their ids and model versions by name."""
    tag = uuid.uuid4().hex[:6]  # the serving info of a version is remembered per process
    versions = {
        "shrunk": f"pop-26w-{tag}", "model": f"pop-52w-{tag}", "unread": f"streams-26w-{tag}",
        "persistence": "persistence",
    }  # fmt: skip
    ids = [song_id(n) for n in range(8)] + [f"imported-{tag}-with-a-longer-synthetic-id"]
    names = ['Song "0" <b> \\ ü 🎵', "Ça va", "Plain", "Zero", "Old", "Stale", "No history", "Tab\there", "X"]
    tracks = [
        {"id": track_id, "name": name, "artist_names": f"Artist {n} & Ø", "is_demo": n == 2,
         "album_id": f"album{n}" if n % 2 else None,
         "release_date": add_weeks(WEEK, -40 - n) if n % 3 else None}
        for n, (track_id, name) in enumerate(zip(ids, names, strict=True))
    ]  # fmt: skip
    snapshots, charts, predictions = [], [], []
    stamp = dt.datetime(2026, 11, 30, 6, 0, 0, 123456, tzinfo=dt.UTC)
    for n, track_id in enumerate(ids):
        if n == 6:
            continue  # no history at all
        for back in range(2 if n == 4 else 0, 5):  # 4: no data since its forecast's week
            popularity = None if (n == 1 and back == 1) else 40 + n + back
            snapshots.append(
                {"track_id": track_id, "week": add_weeks(WEEK, -back), "popularity": popularity,
                 "popularity_source": "api", "trending": back == 0,
                 "updated_at": stamp - dt.timedelta(days=back, seconds=n)}
            )  # fmt: skip
    charts += [
        {"track_id": ids[0], "week": WEEK, "region": "us", "rank": 3, "streams": 1_234_567},
        {"track_id": ids[0], "week": WEEK, "region": "global", "rank": 17, "streams": 9_876_543},
        {"track_id": ids[0], "week": add_weeks(WEEK, -1), "region": "global", "rank": 20, "streams": 5},
        {"track_id": ids[1], "week": add_weeks(WEEK, 1), "region": "de", "rank": 1, "streams": None},
    ]  # a chart week without a snapshot, after the batch's week: a trending week of unknown popularity
    for n, track_id in enumerate(ids):
        week = add_weeks(WEEK, -2) if n in (4, 5) else WEEK  # 5: stale (data of later weeks came in)
        for i, horizon in enumerate((26, 52)):
            x = FLOATS[(n + i) % len(FLOATS)]
            predictions.append(prediction(
                track_id, week, "popularity", "", horizon, current=None if n == 3 else 40.0 + n,
                value=x, lower=None if n == 2 else x - 1, upper=x * 2, cold_start=n == 7 and i == 1,
                version=versions["shrunk" if i == 0 else "model"],
            ))  # fmt: skip
        if n in (0, 2):
            for region in ("us", "global"):
                predictions.append(prediction(
                    track_id, week, "streams", region, 26, current=4e6 + n, value=1.5e6, lower=0.0,
                    upper=2e6, p_chart=1e-7 if region == "us" else 0.75,
                    version=versions["unread" if region == "us" else "persistence"],
                ))  # fmt: skip
    older = prediction(ids[5], add_weeks(WEEK, -3), "popularity", "", 26, version=versions["model"])
    models = [
        {"version": versions["shrunk"], "signal": "popularity", "horizon_weeks": 26, "kind": "gbm",
         "metrics": {"serving": {"method": "shrunk", "weight": 0.5, "toward": "drift", "skill": 0.123}},
         "baselines": {}},
        {"version": versions["model"], "signal": "popularity", "horizon_weeks": 52, "kind": "gbm",
         "metrics": {"serving": {"method": "model", "skill": -0.25}}, "baselines": {}},
    ]  # fmt: skip
    async with sessions() as session:
        await upsert(session=session, model=Track, rows=tracks, keys=["id"])
        await upsert(session=session, model=Snapshot, rows=snapshots, keys=["track_id", "week"])
        await upsert(session=session, model=ChartEntry, rows=charts, keys=["track_id", "week", "region"])
        await upsert(session=session, model=Prediction, rows=[*predictions, older], keys=PREDICTION_KEY)
        await upsert(session=session, model=ModelVersion, rows=models, keys=["version"])
        await session.commit()
    return ids, versions


async def test_bodies_built_from_the_rows_are_the_plain_builds_bytes(engine, sessions) -> None:
    ids, _ = await seed(sessions)
    assert len(set(ids)) == len(ids)
    fast = await build_answers(reader=engine, track_ids=ids, fast=True)
    plain = await build_answers(reader=engine, track_ids=ids, fast=False)
    assert set(fast) == set(plain) == set(ids[:5] + [ids[6], ids[7]])  # 5 stale, 8 not a plain id
    for track_id in fast:
        assert gzip.decompress(fast[track_id]) == gzip.decompress(plain[track_id]), track_id
        assert fast[track_id] == plain[track_id]


@pytest.fixture(params=["session", "sqlite"])
async def backend(request, engine, sessions, tmp_path):
    """The test session's database (MariaDB with real services), and an SQLite file."""
    if request.param == "session":
        yield engine, sessions
        return
    url = f"sqlite+aiosqlite:///{tmp_path / 'bodies.db'}"
    await asyncio.to_thread(migrate, url)  # migrations run their own event loop
    sqlite = make_engine(url)
    yield sqlite, make_sessionmaker(sqlite)
    await sqlite.dispose()


async def test_a_chunk_read_by_its_range_gives_the_same_bytes(backend, monkeypatch) -> None:
    """A dense chunk is read by the range of ids it spans; its songs of another latest week than the
    range's usual one (4 and 5), and a sparse chunk, are read by their ids: the same bytes either way."""
    reader, sessions = backend
    ids, _ = await seed(sessions)
    listed: list[str] = []
    read_listed = bodies._listed_rows

    async def spy(connection, track_ids):
        listed.extend(track_ids)
        return await read_listed(connection, track_ids)

    monkeypatch.setattr(bodies, "_listed_rows", spy)
    monkeypatch.setattr(bodies, "RANGE_MIN_SONGS", 1)
    plain = await build_answers(reader=reader, track_ids=ids, fast=False)
    by_range = await build_answers(reader=reader, track_ids=ids, fast=True)
    assert sorted(listed) == sorted([ids[4], ids[5]])
    assert by_range == plain and set(plain) == set(ids[:5] + [ids[6], ids[7]])

    listed.clear()
    sparse = [ids[0], ids[7]]  # 2 of the 8 songs their range holds: read by their ids
    assert await build_answers(reader=reader, track_ids=sparse, fast=True) == {i: plain[i] for i in sparse}
    assert sorted(listed) == sorted(sparse)


async def test_the_awkward_values_reach_the_answers(engine, sessions) -> None:
    """The comparison above covers what it claims: the plain build's answers carry those values."""
    ids, versions = await seed(sessions)
    songs = await load_songs(reader=engine, track_ids=ids)
    first = songs[ids[0]]
    assert [(p.week, p.region) for p in first.history][-2:] == [(WEEK, "global"), (WEEK, "us")]
    assert first.history[-2].popularity == 40 and first.history[-1].popularity is None
    assert songs[ids[1]].history[-1].popularity is None and songs[ids[1]].history[-1].trending
    assert {f.method for p in first.stored for f in p.forecasts} == {
        "shrunk 0.5 toward drift", "model", "persistence",
    }  # fmt: skip
    assert any(f.p_chart == 1e-7 for p in first.stored for f in p.forecasts)
    assert songs[ids[3]].stored[0].current is None and songs[ids[6]].history == []
    assert songs[ids[4]].stored_is_current and not songs[ids[5]].stored_is_current
    assert songs[ids[1]].stored_is_current and songs[ids[1]].latest_week == add_weeks(WEEK, 1)
    assert first.refreshed_at == dt.datetime(2026, 11, 30, 6, 0, tzinfo=dt.UTC)  # stored to the second
    assert versions["unread"] in {f.model_version for p in first.stored for f in p.forecasts}


def test_non_finite_floats_are_written_as_the_models_write_them() -> None:
    """A database may hand back infinities (SQLite's REAL): null, as pydantic writes them, not `Infinity`."""
    values = {
        "horizon_weeks": 26, "value": float("inf"), "lower": float("-inf"), "upper": float("nan"),
        "p_chart": 0.5, "model_version": "v", "cold_start": False, "method": "model", "skill": None,
    }  # fmt: skip
    assert as_json(values) == Forecast(**values).model_dump_json().encode()


def test_answers_are_gzip_any_client_reads_the_same_for_the_same_json() -> None:
    """ISA-L writes the answers' gzip: a standard member (Python's and zlib's readers take it), no time
    stamp (a rebuild of the same JSON gives the same bytes), and smaller than the JSON."""
    body = as_json({"history": [{"week": "2026-11-30", "popularity": n % 97} for n in range(40)]})
    packed = _gzipped_json(body)
    assert gzip.decompress(packed) == body
    assert zlib.decompressobj(wbits=31).decompress(packed) == body
    assert packed[:3] == b"\x1f\x8b\x08" and packed[4:8] == bytes(4)  # deflate, mtime 0
    assert packed == _gzipped_json(body) and len(packed) < len(body) / 3


def test_the_answers_encoder_writes_what_pydantic_core_writes() -> None:
    """`as_json` (orjson) against pydantic-core's encoder, the one `model_dump_json` runs: doubles of every
    magnitude and bit pattern, text that needs escapes, dates and UTC stamps, nulls and booleans."""
    rng = random.Random(14)
    doubles = [struct.unpack("d", rng.getrandbits(64).to_bytes(8, "little"))[0] for _ in range(20_000)]
    doubles += [rng.random() * 10 ** rng.randint(-12, 22) for _ in range(20_000)]
    doubles += [*FLOATS, 1e16, 1e21, 1e22, 5e-324, -0.0, 1.7976931348623157e308]
    texts = ['Song "0" <b> \\ ü 🎵', "Tab\there", "\x00\x1f\x7f\u2028\u2029 é"]
    stamps = [dt.datetime(2026, 11, 30, 6, tzinfo=dt.UTC), dt.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=dt.UTC)]
    value = {"doubles": doubles, "texts": texts, "week": WEEK, "stamps": stamps, "none": None, "flag": True}
    assert as_json(value) == to_json(value, inf_nan_mode="null")
