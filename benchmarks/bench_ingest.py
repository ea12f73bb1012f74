"""A weekly Spotify update of 10,000 songs against the emulator (50 ms latency), in both access modes.

For each mode the emulator runs as its own process behind uvicorn (a real socket, like Spotify), and:
  - songpop's client fetches the 10,000 tracks (Extended Quota: batches of 50; Development Mode: one request
    per track, `concurrency` at a time, one shared limiter);
  - the original system's way, one request per item, sequentially, is timed on a sample of the same songs
    (`--baseline-songs`, all of them with `--baseline-songs 10000`) and its rate extrapolated to 10,000.
Printed per mode:
  - requests made / the minimum for the mode (minimum: one token + ceil(songs / batch)), target <= 1.05;
  - songs/s / (concurrency / latency), target >= 0.9 (for Extended Quota, where one request carries 50
    songs, also the request rate against the same ceiling);
  - the speed-up over the sequential baseline.
Run: `make bench-ingest` (or `python -m benchmarks.bench_ingest --songs 10000`).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from services.emulator.catalog import Catalog
from shared.config import Settings
from shared.spotify.auth import EMULATOR_CLIENT_ID, EMULATOR_CLIENT_SECRET
from shared.spotify.client import BATCH_SIZES, SpotifyClient
from shared.weeks import current_week

TARGET_REQUEST_RATIO = 1.05
TARGET_THROUGHPUT_RATIO = 0.9
N_TRACKS = 20_000
SEED = 7


@dataclass
class ModeResult:
    mode: str
    songs: int
    fetched: int
    seconds: float
    requests: int
    minimum: int
    baseline_songs: int
    baseline_seconds: float
    client_cpu: float  # seconds of CPU the client used
    emulator_cpu: float


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (Linux /proc; 0 elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def emulator_process(mode: str, latency_ms: float, week: Any) -> Any:
    """The emulator in its own process; yields (base URL, pid) once it answers."""
    port = free_port()
    command = [
        sys.executable, "-m", "services.emulator", "--port", str(port), "--mode", mode,
        "--latency-ms", str(latency_ms), "--seed", str(SEED), "--n-tracks", str(N_TRACKS),
        "--start-week", week.isoformat(),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(
                    f"the emulator exited: {process.stderr.read().decode() if process.stderr else ''}"
                )
            try:
                httpx.get(f"{base}/_emulator/stats", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise RuntimeError("the emulator did not start within 60 s")
        yield base, process.pid
    finally:
        process.terminate()
        process.wait(timeout=10)


def emulator_requests(base: str) -> int:
    stats = httpx.get(f"{base}/_emulator/stats", timeout=5).json()
    return int(stats["api_requests"]) + int(stats["token_requests"])


async def songpop_update(base: str, ids: list[str], concurrency: int) -> tuple[int, float]:
    """songpop's client: returns (tracks fetched, seconds)."""
    settings = Settings(
        spotify_api_url=f"{base}/v1",
        spotify_accounts_url=base,
        spotify_concurrency=concurrency,
        _env_file=None,  # type: ignore[call-arg]
    )
    started = time.perf_counter()
    async with SpotifyClient(settings) as spotify:
        tracks = await spotify.get_tracks(ids)
    return len(tracks), time.perf_counter() - started


def sequential_update(base: str, ids: list[str]) -> float:
    """The original system's way: one token, then one blocking request per song, one after another."""
    started = time.perf_counter()
    with httpx.Client(timeout=10) as http:
        token = http.post(
            f"{base}/api/token",
            data={"grant_type": "client_credentials"},
            auth=(EMULATOR_CLIENT_ID, EMULATOR_CLIENT_SECRET),
        ).json()["access_token"]
        for track_id in ids:
            http.get(
                f"{base}/v1/tracks/{track_id}", headers={"Authorization": f"Bearer {token}"}
            ).raise_for_status()
    return time.perf_counter() - started


def run_mode(mode: str, ids: list[str], args: argparse.Namespace, week: Any) -> ModeResult:
    per_request = BATCH_SIZES["tracks"] if mode == "extended" else 1
    with emulator_process(mode, args.latency_ms, week) as (base, pid):
        before = emulator_requests(base)
        cpu_before, emulator_cpu_before = time.process_time(), process_cpu_seconds(pid)
        fetched, seconds = asyncio.run(songpop_update(base, ids, args.concurrency))
        client_cpu = time.process_time() - cpu_before
        emulator_cpu = process_cpu_seconds(pid) - emulator_cpu_before
        requests = emulator_requests(base) - before
        sample = ids[: args.baseline_songs]
        baseline_seconds = sequential_update(base, sample)
    return ModeResult(
        mode=mode,
        songs=len(ids),
        fetched=fetched,
        seconds=seconds,
        requests=requests,
        minimum=1 + math.ceil(len(ids) / per_request),
        baseline_songs=len(sample),
        baseline_seconds=baseline_seconds,
        client_cpu=client_cpu,
        emulator_cpu=emulator_cpu,
    )


def report(result: ModeResult, concurrency: int, latency_ms: float) -> bool:
    ceiling = concurrency / (latency_ms / 1000)  # requests per second the limiter allows at this latency
    songs_per_second = result.songs / result.seconds
    per_request = BATCH_SIZES["tracks"] if result.mode == "extended" else 1
    request_rate = math.ceil(result.songs / per_request) / result.seconds
    request_ratio = result.requests / result.minimum
    baseline_rate = result.baseline_songs / result.baseline_seconds
    baseline_full = result.songs / baseline_rate
    label = "Extended Quota Mode" if result.mode == "extended" else "Development Mode"
    print(f"\n{label}: weekly update of {result.songs:,} songs", end="")
    print(f" (concurrency {concurrency}, latency {latency_ms:g} ms)")
    print(f"  fetched                         {result.fetched:,} tracks in {result.seconds:.2f} s")
    print(
        f"  requests made / minimum         {result.requests:,} / {result.minimum:,} = {request_ratio:.3f}"
        f"   (target <= {TARGET_REQUEST_RATIO}; the extra one is the access-mode probe)"
    )
    print(
        f"  songs/s / (concurrency/latency) {songs_per_second:,.0f} / {ceiling:,.0f} = "
        f"{songs_per_second / ceiling:.2f}   (target >= {TARGET_THROUGHPUT_RATIO})"
    )
    if per_request > 1:
        print(
            f"  requests/s / (concurrency/latency) {request_rate:,.0f} / {ceiling:,.0f} = "
            f"{request_rate / ceiling:.2f}   (the same ceiling, per request of {per_request} songs)"
        )
    print(
        f"  original way (sequential, 1 request/song): {baseline_rate:,.1f} songs/s measured on "
        f"{result.baseline_songs:,} songs -> {baseline_full:,.0f} s for {result.songs:,}"
    )
    print(f"  speed-up over the original way  {baseline_full / result.seconds:,.1f}x")
    print(
        f"  CPU per request: client {1000 * result.client_cpu / result.requests:.2f} ms, "
        f"emulator {1000 * result.emulator_cpu / result.requests:.2f} ms "
        f"(load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)"
    )
    ok = request_ratio <= TARGET_REQUEST_RATIO and songs_per_second / ceiling >= TARGET_THROUGHPUT_RATIO
    return ok and result.fetched == result.songs


def main() -> None:
    """Run both modes and print the figures."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--songs", type=int, default=10_000)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--concurrency", type=int, default=Settings(_env_file=None).spotify_concurrency)  # type: ignore[call-arg]
    parser.add_argument("--baseline-songs", type=int, default=200)
    parser.add_argument("--modes", nargs="+", default=["development", "extended"])
    args = parser.parse_args()
    week = current_week()
    catalog = Catalog(N_TRACKS, SEED)  # the emulator builds the same catalog from the same seed
    ids = [t for i, t in enumerate(catalog.track_ids) if catalog.released(i, week)][: args.songs]
    if len(ids) < args.songs:
        sys.exit(f"the emulator catalog has only {len(ids)} released songs")
    print(
        f"bench-ingest: {len(ids):,} songs, emulator latency {args.latency_ms:g} ms, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} before the run"
    )
    results = [run_mode(mode, ids, args, week) for mode in args.modes]
    verdicts = [report(r, args.concurrency, args.latency_ms) for r in results]
    print("\nall targets met" if all(verdicts) else "\nsome targets missed (see above)")


if __name__ == "__main__":
    main()
